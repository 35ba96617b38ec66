package dev.metering.udfs;

import dev.metering.rules.Partial;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.functions.FunctionContext;

/** JSON in the job's functions: records written by hand on the hot path, job parameters read once. */
final class Json {
    private Json() {}

    /**
     * {@code "name":value} with {@code value} as a JSON string, or {@code null}; strings written as the
     * partials' own are ({@link Partial#appendJsonString}), so a record has one string form.
     */
    static StringBuilder member(StringBuilder out, String name, String value) {
        Partial.appendJsonString(out, name);
        out.append(':');
        if (value == null) {
            return out.append("null");
        }
        Partial.appendJsonString(out, value);
        return out;
    }

    /**
     * The job parameter {@code name} (jobs/metering_job.py, {@code job_parameters}: base64 of JSON,
     * since the parameters' map syntax reserves {@code ,} and {@code :}), or null when it is not set.
     */
    static JsonNode jobParameter(FunctionContext context, String name) throws IOException {
        String encoded = context.getJobParameter(name, null);
        if (encoded == null || encoded.isEmpty()) {
            return null;
        }
        return new ObjectMapper().readTree(new String(Base64.getDecoder().decode(encoded), StandardCharsets.UTF_8));
    }
}
