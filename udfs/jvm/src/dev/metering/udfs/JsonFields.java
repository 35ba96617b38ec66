package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.runtime.functions.SqlJsonUtils;

import org.apache.flink.shaded.com.jayway.jsonpath.Configuration;
import org.apache.flink.shaded.com.jayway.jsonpath.DocumentContext;
import org.apache.flink.shaded.com.jayway.jsonpath.JsonPath;
import org.apache.flink.shaded.com.jayway.jsonpath.spi.json.JacksonJsonProvider;
import org.apache.flink.shaded.com.jayway.jsonpath.spi.mapper.JacksonMappingProvider;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.SerializationFeature;

import java.util.Collection;
import java.util.Map;

/**
 * {@code metering_json_fields(doc, path, ...)}: parse a JSON text once and read several paths.
 *
 * <p>Returns NULL when {@code doc} is not JSON (what {@code doc IS JSON} rejects); otherwise an
 * array whose first element is {@code 'object'} when the document is a JSON object ({@code IS JSON
 * OBJECT}) and {@code 'other'} otherwise, followed by one element per path with exactly what
 * {@code JSON_VALUE(doc, path)} returns: the scalar's text, or NULL for a missing path, a JSON null,
 * an object or an array. It uses Flink's own JSON and JSON-path configuration for that
 * ({@code org.apache.flink.table.runtime.functions.SqlJsonUtils}, Flink 2.2), which parses the
 * document again for every call; the job reads six to ten fields per event.
 */
public final class JsonFields extends ScalarFunction {
    static {
        // Flink's JSON functions install their JSON-path cache when SqlJsonUtils initialises, and
        // JsonPath refuses that once any path was read: initialise it first, whatever runs first.
        SqlJsonUtils.getNodeFactory();
    }

    private static final ObjectMapper MAPPER =
            new ObjectMapper(new JsonFactory())
                    .configure(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true)
                    .configure(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS, true);
    private static final JacksonJsonProvider PROVIDER = new JacksonJsonProvider(MAPPER);
    /** JSON_VALUE's default (strict) path mode: a missing path raises, which NULL ON ERROR turns into NULL. */
    private static final Configuration STRICT =
            Configuration.builder()
                    .jsonProvider(PROVIDER)
                    .mappingProvider(new JacksonMappingProvider(MAPPER))
                    .build();

    public @DataTypeHint("ARRAY<STRING>") String[] eval(String doc, String... paths) {
        if (doc == null) {
            return null;
        }
        final Object root;
        try {
            root = PROVIDER.parse(doc);
        } catch (Exception notJson) {
            return null;
        }
        String[] values = new String[paths.length + 1];
        values[0] = root instanceof Map ? "object" : "other";
        if (root == null) {
            return values;
        }
        final DocumentContext document;
        try {
            document = JsonPath.parse(root, STRICT); // once per document, not once per path
        } catch (Exception unreadable) {
            return values;
        }
        for (int i = 0; i < paths.length; i++) {
            Object value;
            try {
                value = document.read(paths[i]);
            } catch (Exception missingOrInvalid) {
                value = null;
            }
            values[i + 1] = value == null || value instanceof Map || value instanceof Collection ? null : String.valueOf(value);
        }
        return values;
    }
}
