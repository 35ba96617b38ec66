package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;

/**
 * {@code metering_rowtime_millis(payload, received, skew_millis)}: the event time that drives the
 * watermark. The epoch milliseconds of a valid event's or a heartbeat's timestamp ({@link
 * EventRules}, {@link EventMillis}) when it is no later than {@code received + skew_millis};
 * otherwise 0 (the epoch), so a record the job refuses never advances the watermark.
 *
 * <p>Flink evaluates a source's rowtime column twice per record (the column and the watermark
 * generator) on the same payload: the last payload's result is kept for the second call.
 */
public final class RowtimeMillis extends ScalarFunction {
    private final String[] values = new String[EventRules.FIRST_PROPERTY];
    private static final String[] NO_PROPERTIES = new String[0];
    private byte[] lastPayload;
    private Long lastMillis;

    public @DataTypeHint("BIGINT NOT NULL") long eval(
            byte[] payload, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant received, Long skewMillis) {
        if (payload == null || received == null || skewMillis == null) {
            return 0L;
        }
        Long millis;
        if (payload == lastPayload) {
            millis = lastMillis;
        } else {
            EventRules.read(payload, NO_PROPERTIES, values);
            String verdict = values[EventRules.VERDICT];
            millis = verdict == null || verdict.equals(EventRules.HEARTBEAT) ? EventMillis.millis(values[EventRules.TIMESTAMP]) : null;
            lastPayload = payload;
            lastMillis = millis;
        }
        return millis != null && millis <= received.toEpochMilli() + skewMillis ? millis : 0L;
    }
}
