package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;

/**
 * {@code metering_rowtime_millis(payload, received, skew_millis, property_name, ...)}: the event time that drives the
 * watermark. The epoch milliseconds of a valid event's or a heartbeat's timestamp ({@link
 * EventRules}, {@link EventMillis}) when it is no later than {@code received + skew_millis};
 * otherwise 0 (the epoch), so a record the job refuses never advances the watermark.
 *
 * <p>Flink evaluates a source's rowtime column twice per record (the column and the watermark
 * generator) on the same payload: the last payload's result is kept for the second call. It reads
 * the record with the same {@code property_name}s as {@code metering_read_event} after it, which
 * then copies this read instead of parsing the record again (EventRules, LastRead).
 */
public final class RowtimeMillis extends ScalarFunction {
    private String[] values = new String[EventRules.FIRST_PROPERTY];
    private byte[] lastPayload;
    private Long lastMillis;

    public @DataTypeHint("BIGINT NOT NULL") long eval(
            byte[] payload, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant received, Long skewMillis, String... propertyNames) {
        if (payload == null || received == null || skewMillis == null) {
            return 0L;
        }
        Long millis;
        if (payload == lastPayload) {
            millis = lastMillis;
        } else {
            if (values.length != EventRules.FIRST_PROPERTY + propertyNames.length) {
                values = new String[EventRules.FIRST_PROPERTY + propertyNames.length];
            }
            EventRules.read(payload, propertyNames, values);
            String verdict = values[EventRules.VERDICT];
            millis = verdict == null || verdict.equals(EventRules.HEARTBEAT) ? EventMillis.millis(values[EventRules.TIMESTAMP]) : null;
            lastPayload = payload;
            lastMillis = millis;
        }
        return millis != null && millis <= received.toEpochMilli() + skewMillis ? millis : 0L;
    }
}
