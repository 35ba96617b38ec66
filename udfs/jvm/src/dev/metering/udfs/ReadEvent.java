package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code metering_read_event(payload, property_name, ...)}: a Kafka record read as a usage event,
 * in one pass ({@link EventRules}).
 *
 * <p>Returns an array: the verdict (NULL for a valid event, {@code heartbeat}, or the reason code),
 * then the text of {@code event_id}, {@code customer_id}, {@code event_type}, {@code timestamp} and
 * {@code quantity} (as written), the {@code properties} object as JSON (keys sorted), and the value
 * of each named property. A NULL payload (a Kafka tombstone) is {@code malformed_json}.
 */
public final class ReadEvent extends ScalarFunction {
    public @DataTypeHint("ARRAY<STRING>") String[] eval(byte[] payload, String... propertyNames) {
        String[] values = new String[EventRules.FIRST_PROPERTY + propertyNames.length];
        if (payload == null) {
            values[EventRules.VERDICT] = EventRules.MALFORMED_JSON;
            return values;
        }
        EventRules.read(payload, propertyNames, values);
        return values;
    }
}
