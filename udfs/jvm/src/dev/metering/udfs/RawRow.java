package dev.metering.udfs;

import java.time.Instant;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code metering_raw_row(payload, topic, partition, offset, received)}: a valid event's row of
 * ClickHouse's {@code raw_events} as one JSON line, or NULL for any other record ({@link
 * EventRules#rawRow}). The job writes it to the raw topic and the loader inserts those lines as they
 * are ({@code JSONEachRow}): the event is decoded once, here, by the one definition of a valid event.
 */
public final class RawRow extends ScalarFunction {
    public String eval(
            byte[] payload,
            String topic,
            Integer partition,
            Long offset,
            @DataTypeHint("TIMESTAMP_LTZ(3)") Instant received) {
        if (payload == null || topic == null || partition == null || offset == null || received == null) {
            return null;
        }
        return EventRules.rawRow(payload, topic, partition, offset, received.toEpochMilli());
    }

    /** {@code metering_millis_text(ts)}: a timestamp's epoch milliseconds as text (the raw topic's record key). */
    public static final class MillisText extends ScalarFunction {
        public String eval(@DataTypeHint("TIMESTAMP_LTZ(3)") Instant ts) {
            return ts == null ? null : Long.toString(ts.toEpochMilli());
        }
    }
}
