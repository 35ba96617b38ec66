package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code metering_json_fields(doc, path, ...)}: read several paths of a JSON text in one pass.
 *
 * <p>Returns NULL when {@code doc} is not JSON (what {@code doc IS JSON} rejects); otherwise an
 * array whose first element is {@code 'object'} when the document is a JSON object ({@code IS JSON
 * OBJECT}) and {@code 'other'} otherwise, followed by one element per path with exactly what
 * {@code JSON_VALUE(doc, path)} returns: the scalar's text, or NULL for a missing path, a JSON null,
 * an object or an array. A path written {@code json:$.a.b} gives what {@code JSON_QUERY(doc,
 * '$.a.b')} returns instead: the object's or array's JSON text (keys sorted), NULL for a scalar.
 * Paths are {@code $.name(.name)*}. {@link JsonReader} does the reading; Flink's own functions
 * parse the whole document on every call, and the job reads a dozen fields per event.
 */
public final class JsonFields extends ScalarFunction {
    /** The paths of the last call, compiled (a call site passes the same literals every time). */
    private transient JsonReader.Paths compiled;

    public @DataTypeHint("ARRAY<STRING>") String[] eval(String doc, String... paths) {
        if (doc == null) {
            return null;
        }
        if (compiled == null || !compiled.sameAs(paths)) {
            compiled = new JsonReader.Paths(1, paths);
        }
        String[] values = new String[compiled.width()];
        String kind = JsonReader.read(doc, compiled, values);
        if (kind == null) {
            return null;
        }
        values[0] = kind;
        return values;
    }
}
