package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;

/**
 * {@code metering_rowtime_millis(doc, received, skew_millis)}: the event time that drives the
 * watermark. The epoch milliseconds of the document's {@code $.timestamp} (exactly what
 * {@code JSON_VALUE(doc, '$.timestamp')} returns, read as {@link EventMillis} reads it) when it is
 * a real instant no later than {@code received + skew_millis}; otherwise 0 (the epoch), so that an
 * event with a bad or future timestamp, or a document that is not JSON, never advances the
 * watermark.
 *
 * <p>It reads the document itself, in one streaming pass that keeps nothing but the timestamp
 * ({@link JsonReader}): Flink evaluates a source's rowtime column twice per record (the column
 * and the watermark generator), and {@code JSON_VALUE} builds the whole document each time.
 */
public final class RowtimeMillis extends ScalarFunction {
    private static final JsonReader.Paths TIMESTAMP = new JsonReader.Paths(0, "$.timestamp");

    private final String[] timestamp = new String[TIMESTAMP.width()];

    public @DataTypeHint("BIGINT NOT NULL") long eval(
            String doc, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant received, Long skewMillis) {
        if (doc == null || received == null || skewMillis == null) {
            return 0L;
        }
        if (JsonReader.read(doc, TIMESTAMP, timestamp) == null) {
            return 0L;
        }
        Long millis = EventMillis.millis(timestamp[0]);
        return millis != null && millis <= received.toEpochMilli() + skewMillis ? millis : 0L;
    }
}
