package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;

/**
 * {@code metering_rowtime_millis(text, received, skew_millis)}: the event time that drives the
 * watermark. The epoch milliseconds of {@code text} (see {@link EventMillis}) when it is a real
 * instant no later than {@code received + skew_millis}; otherwise 0 (the epoch), so that an event
 * with a bad or future timestamp never advances the watermark. One call instead of a SQL {@code
 * CASE}, which Flink evaluates branch by branch, parsing the JSON text again in each.
 */
public final class RowtimeMillis extends ScalarFunction {
    public @DataTypeHint("BIGINT NOT NULL") long eval(
            String text, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant received, Long skewMillis) {
        Long millis = EventMillis.millis(text);
        if (millis == null || received == null || skewMillis == null) {
            return 0L;
        }
        return millis <= received.toEpochMilli() + skewMillis ? millis : 0L;
    }
}
