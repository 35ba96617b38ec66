package dev.metering.udfs;

import dev.metering.rules.Aggregation;
import dev.metering.rules.Partial;
import dev.metering.rules.PeriodLedger;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;

/**
 * {@code metering_finalize(input => TABLE partials PARTITION BY (customer_id, meter, group_key), uid => …)}:
 * the billing periods of one (customer, meter, group) key, in the JVM.
 *
 * <p>It is what the Python finalization operator was (until 0.1.0), rule for rule (the rules are
 * {@link PeriodLedger}, held to {@code udfs/ledger.py} by {@code tests/unit/test_rules_agreement.py}):
 * input rows are partials (jobs/sql.py, PARTIAL_COLUMNS): one step of a minute's on-time events
 * ({@code window_end_ms > 0}) or one late event ({@code window_end_ms = -1}, with the watermark of
 * its Kafka partition). Output rows are {@code (kind, record)}: {@code aggregate} (one minute
 * segment), {@code final} (once per period, when the watermark passes end + grace),
 * {@code correction} (a change for a final period), {@code processing_error} (a dead letter for a
 * row or a timer it failed on; the key's state stays as it was). Records are the JSON the loader
 * reads.
 *
 * <p>Called without {@code on_time}: with it Flink 2.2 drops rows behind the watermark before the
 * function sees them (late events must reach it). Timers still fire on the operator's watermark.
 *
 * <p>Settings (meters' aggregations, customers' billing cycles and grace) come from the job
 * parameter {@link #SETTINGS_PARAMETER} ({@link FinalizeSettings}), read once in {@link #open}.
 *
 * <p>State per key: {@code ledger} (open periods and open minutes, one binary value, cleared when
 * nothing is open) and {@code finalThrough}, the newest finalization timer that fired (kept: it
 * decides finality right after a restore, when the operator's watermark starts from nothing).
 */
@DataTypeHint("ROW<kind STRING NOT NULL, record STRING NOT NULL>")
public final class Finalize extends ProcessTableFunction<Row> {

    /** Job parameter holding the settings (base64 of their JSON: job parameters are a comma-separated map). */
    public static final String SETTINGS_PARAMETER = "metering.finalize.settings";

    /** {@code kafka_partition} of a processing-error dead letter: it comes from no single Kafka record. */
    static final long NO_PARTITION = 4294967295L;

    static final int STATE_FORMAT = 1;
    static final long MINUTE_MS = 60_000L;
    static final char SEP = '\u0001';

    /** The key's state, as Flink stores it. */
    public static final class Memory {
        /** Open periods and open minutes ({@link KeyState#write}); null when nothing is open. */
        public byte[] ledger;
        /** The newest finalization timer that fired for this key; null before the first. */
        public Long finalThrough;
    }

    private transient FinalizeSettings settings;
    private transient Counter finals;
    private transient Counter corrections;
    private transient Counter lateEvents;
    private transient Counter aggregateUpdates;
    private transient Counter processingErrors;
    private transient Counter replayedCorrections;

    @Override
    public void open(FunctionContext context) throws Exception {
        JsonNode parameter = Json.jobParameter(context, SETTINGS_PARAMETER);
        if (parameter == null) {
            throw new IllegalStateException("job parameter " + SETTINGS_PARAMETER + " is not set (jobs/metering_job.py sets it)");
        }
        settings = FinalizeSettings.parse(parameter);
        MetricGroup metrics = context.getMetricGroup();
        finals = metrics.counter("meteringFinalsEmitted");
        corrections = metrics.counter("meteringCorrectionsEmitted");
        lateEvents = metrics.counter("meteringLateEvents");
        aggregateUpdates = metrics.counter("meteringAggregateUpdates");
        processingErrors = metrics.counter("meteringProcessingErrors");
        replayedCorrections = metrics.counter("meteringReplayedCorrections");
    }

    public void eval(Context ctx, @StateHint Memory memory, @ArgumentHint({ArgumentTrait.SET_SEMANTIC_TABLE}) Row input) {
        List<Row> out = new ArrayList<>(2);
        try {
            process(ctx, memory, input, out);
        } catch (Exception e) {
            processingErrors.inc();
            collect(Row.of("processing_error", processingError(rowFields(input), e)));
            return;
        }
        for (Row row : out) {
            collect(row);
        }
    }

    private void process(Context ctx, Memory memory, Row input, List<Row> out) throws IOException {
        String customer = input.getFieldAs("customer_id");
        String meter = input.getFieldAs("meter");
        String groupKey = input.getFieldAs("group_key");
        long minuteMs = input.<Long>getFieldAs("minute_ms");
        long windowEndMs = input.<Long>getFieldAs("window_end_ms");
        FinalizeSettings.KeySettings key = settings.forKey(customer, meter, groupKey);
        KeyState state = KeyState.load(memory.ledger, key);
        TimeContext<Long> time = ctx.timeContext(Long.class);
        Long current = time.currentWatermark();
        long watermark = current == null ? Long.MIN_VALUE : current;
        Partial partial = partialFromRow(key.aggregation, input);
        String lateEventId = "";
        String segment;
        long version;
        Partial segmentValue;
        if (windowEndMs > 0) { // one step's events of a minute: the minute's segment is its running value
            Partial previous = state.openMinutes.get(minuteMs);
            segmentValue = previous == null ? partial : previous.merge(partial);
            // Kept until the watermark passes the minute's end (save prunes it): a step can come as
            // two rows (replayed and new records, see Replayed), both with the step's end.
            state.openMinutes.put(minuteMs, segmentValue);
            segment = "on_time";
            version = windowEndMs;
        } else {
            String eventId = input.getFieldAs("event_id");
            lateEventId = eventId == null ? "" : eventId;
            segment = "late:" + lateEventId;
            version = 1;
            segmentValue = partial;
            lateEvents.inc();
        }
        long[] period = state.ledger.periodOf(minuteMs);
        boolean wasOpen = state.ledger.isOpen(period[0]);
        long finality = Math.max(watermark, settings.finalizedThrough);
        if (memory.finalThrough != null) {
            finality = Math.max(finality, memory.finalThrough);
        }
        Long partitionWatermark = input.getFieldAs("partition_wm_ms");
        if (windowEndMs <= 0 && partitionWatermark != null) {
            // A late event is judged by its own partition's watermark too (docs/semantics.md, "Backfills").
            finality = Math.max(finality, partitionWatermark);
        }
        PeriodLedger.Correction correction = state.ledger.apply(minuteMs, partial, finality);
        boolean replayed = Boolean.TRUE.equals(input.getField("replayed"));
        if (correction != null && replayed) {
            // The job this one replaced already counted this change (jobs/upgrade.py).
            replayedCorrections.inc();
        } else if (correction != null) {
            corrections.inc();
            out.add(Row.of("correction", correctionJson(customer, meter, groupKey, key, correction, lateEventId)));
        } else {
            if (!wasOpen) {
                // One timer per open period, registered when it opens, at the end + grace of the
                // policy the key's ledger keeps (not the configuration's, which may have changed
                // since the period opened). Its time is ahead of the operator's watermark (the
                // period is not final by a finality at least as far).
                time.registerOnTime(period[1] + state.key.policy.graceMs);
            }
            aggregateUpdates.inc();
            out.add(
                    Row.of(
                            "aggregate",
                            aggregateJson(customer, meter, groupKey, key, minuteMs, period, segment, version, segmentValue)));
        }
        memory.ledger = state.save(watermark);
    }

    public void onTimer(OnTimerContext ctx, @StateHint Memory memory) {
        long timestamp = ctx.timeContext(Long.class).time();
        KeyState state = null;
        try {
            state = KeyState.load(memory.ledger, null);
            if (state == null) {
                memory.finalThrough = timestamp;
                return;
            }
            List<Row> out = new ArrayList<>(1);
            for (PeriodLedger.Final fin : state.ledger.finalize(timestamp)) {
                out.add(Row.of("final", finalJson(state.key, fin)));
            }
            memory.ledger = state.save(timestamp);
            memory.finalThrough = timestamp; // timers fire in order: the newest
            for (Row row : out) {
                finals.inc();
                collect(row);
            }
        } catch (Exception e) {
            processingErrors.inc();
            Map<String, String> what = new TreeMap<>();
            if (state != null) {
                what.put("customer_id", state.key.customer);
                what.put("meter", state.key.meter);
            }
            what.put("timer_ms", Long.toString(timestamp));
            collect(Row.of("processing_error", processingError(what, e)));
        }
    }

    // --- state ------------------------------------------------------------------------------------

    /** A key's open periods and open minutes, decoded from {@link Memory#ledger}. */
    static final class KeyState {
        final FinalizeSettings.KeySettings key;
        final PeriodLedger ledger;
        final TreeMap<Long, Partial> openMinutes;

        KeyState(FinalizeSettings.KeySettings key, PeriodLedger ledger, TreeMap<Long, Partial> openMinutes) {
            this.key = key;
            this.ledger = ledger;
            this.openMinutes = openMinutes;
        }

        /**
         * The stored state, or a new one for {@code key}; null when nothing is stored and no key is
         * given (a timer of a key whose state was cleared).
         */
        static KeyState load(byte[] stored, FinalizeSettings.KeySettings key) throws IOException {
            if (stored == null) {
                return key == null ? null : new KeyState(key, key.newLedger(), new TreeMap<>());
            }
            DataInputStream in = new DataInputStream(new ByteArrayInputStream(stored));
            int format = in.readUnsignedByte();
            if (format != STATE_FORMAT) {
                throw new IOException("finalization state format " + format + " is not " + STATE_FORMAT + ": run the matching job version");
            }
            FinalizeSettings.KeySettings stateKey = FinalizeSettings.KeySettings.read(in);
            PeriodLedger ledger = stateKey.readLedger(in);
            int minutes = in.readInt();
            TreeMap<Long, Partial> openMinutes = new TreeMap<>();
            for (int i = 0; i < minutes; i++) {
                long minute = in.readLong();
                openMinutes.put(minute, Partial.read(stateKey.aggregation, in));
            }
            return new KeyState(stateKey, ledger, openMinutes);
        }

        /**
         * Prunes open minutes the watermark has passed (the group window fired all their steps before
         * forwarding it) and returns the bytes to store, or null when nothing is open.
         */
        byte[] save(long watermark) throws IOException {
            openMinutes.headMap(watermark == Long.MIN_VALUE ? Long.MIN_VALUE : watermark - MINUTE_MS, true).clear();
            if (!ledger.hasOpenPeriods() && openMinutes.isEmpty()) {
                return null;
            }
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(128);
            DataOutputStream out = new DataOutputStream(bytes);
            out.writeByte(STATE_FORMAT);
            key.write(out);
            ledger.write(out);
            out.writeInt(openMinutes.size());
            for (Map.Entry<Long, Partial> minute : openMinutes.entrySet()) {
                out.writeLong(minute.getKey());
                minute.getValue().write(out);
            }
            out.flush();
            return bytes.toByteArray();
        }
    }

    // --- input ------------------------------------------------------------------------------------

    /** A partial row as an exact {@link Partial} (the inverse of jobs/sql.py's partial columns). */
    static Partial partialFromRow(Aggregation aggregation, Row row) {
        long count = row.<Long>getFieldAs("cnt");
        String total = row.getFieldAs("total");
        if (total == null && count > 0 && aggregation == Aggregation.SUM && row.<Long>getFieldAs("window_end_ms") > 0) {
            // Flink's DECIMAL(38, 9) SUM gives NULL when it overflows: never read that as zero.
            throw new ArithmeticException("the sum of " + count + " values of one step exceeds DECIMAL(38, 9)");
        }
        switch (aggregation) {
            case SUM:
                return Partial.of(aggregation, count, total == null ? BigDecimal.ZERO : new BigDecimal(total), null, List.of(), 0L, null, null);
            case COUNT:
                return Partial.of(aggregation, count, BigDecimal.ZERO, null, List.of(), 0L, null, null);
            case MAX:
            case MIN: {
                String extreme = row.getFieldAs(aggregation == Aggregation.MAX ? "mx" : "mn");
                return Partial.of(aggregation, count, BigDecimal.ZERO, extreme == null ? null : new BigDecimal(extreme), List.of(), 0L, null, null);
            }
            case UNIQUE_COUNT: {
                String joined = row.getFieldAs("distinct_values");
                List<String> values = joined == null ? List.of() : split(joined);
                return Partial.of(aggregation, count, BigDecimal.ZERO, null, values, 0L, null, null);
            }
            case LATEST: {
                String encoded = row.getFieldAs("latest_enc");
                if (encoded == null || encoded.isEmpty()) {
                    return Partial.of(aggregation, count, BigDecimal.ZERO, null, List.of(), 0L, null, null);
                }
                int first = encoded.indexOf(SEP);
                int last = encoded.lastIndexOf(SEP);
                long millis = Long.parseLong(encoded.substring(0, first));
                String eventId = encoded.substring(first + 1, last);
                BigDecimal value = new BigDecimal(encoded.substring(last + 1));
                return Partial.of(aggregation, count, BigDecimal.ZERO, null, List.of(), millis, eventId, value);
            }
            default:
                throw new IllegalArgumentException(aggregation.toString());
        }
    }

    private static List<String> split(String joined) {
        List<String> values = new ArrayList<>();
        int start = 0;
        for (int i = joined.indexOf(SEP); i >= 0; i = joined.indexOf(SEP, start)) {
            values.add(joined.substring(start, i));
            start = i + 1;
        }
        values.add(joined.substring(start));
        return values;
    }

    private static Map<String, String> rowFields(Row input) {
        Map<String, String> fields = new TreeMap<>();
        java.util.Set<String> names = input.getFieldNames(true);
        if (names == null) {
            return fields;
        }
        for (String name : names) {
            Object value = input.getField(name);
            fields.put(name, value == null ? null : value.toString());
        }
        return fields;
    }

    // --- output -----------------------------------------------------------------------------------

    private static StringBuilder record(String customer, String meter, String groupKey, Aggregation aggregation) {
        StringBuilder out = new StringBuilder(256);
        out.append('{');
        Json.member(out, "customer_id", customer).append(',');
        Json.member(out, "meter", meter).append(',');
        Json.member(out, "group_key", groupKey).append(',');
        Json.member(out, "aggregation", aggregation.wire());
        return out;
    }

    private static String close(StringBuilder out, Partial partial) {
        out.append(',');
        partial.appendJson(out);
        return out.append('}').toString();
    }

    static String aggregateJson(
            String customer,
            String meter,
            String groupKey,
            FinalizeSettings.KeySettings key,
            long minuteMs,
            long[] period,
            String segment,
            long version,
            Partial partial) {
        StringBuilder out = record(customer, meter, groupKey, key.aggregation);
        out.append(",\"minute_ms\":").append(minuteMs);
        out.append(",\"day_start_ms\":").append(key.localDayStart(minuteMs));
        out.append(",\"period_start_ms\":").append(period[0]);
        out.append(",\"period_end_ms\":").append(period[1]);
        out.append(',');
        Json.member(out, "segment", segment);
        out.append(",\"version\":").append(version);
        return close(out, partial);
    }

    static String finalJson(FinalizeSettings.KeySettings key, PeriodLedger.Final fin) {
        StringBuilder out = record(key.customer, key.meter, key.groupKey, key.aggregation);
        out.append(",\"period_start_ms\":").append(fin.periodStartMs());
        out.append(",\"period_end_ms\":").append(fin.periodEndMs());
        out.append(",\"finalized_at_watermark_ms\":").append(fin.finalizedAtWatermarkMs());
        return close(out, fin.partial());
    }

    static String correctionJson(
            String customer,
            String meter,
            String groupKey,
            FinalizeSettings.KeySettings key,
            PeriodLedger.Correction correction,
            String eventId) {
        StringBuilder out = record(customer, meter, groupKey, key.aggregation);
        out.append(",\"period_start_ms\":").append(correction.periodStartMs());
        out.append(",\"period_end_ms\":").append(correction.periodEndMs());
        out.append(",\"minute_ms\":").append(correction.minuteMs());
        // Always false: the job only adds. The field stays in the record (the loader reads it, schemas/records.py).
        out.append(",\"retract\":false");
        out.append(',');
        Json.member(out, "event_id", eventId);
        return close(out, correction.partial());
    }

    /**
     * A dead letter (the job's dead-letter record format, reason {@code processing_error}) for a row
     * or a timer the operator failed on. Its {@code kafka_offset} is a digest of its payload, so a
     * replayed failure collapses onto the same key in ClickHouse.
     */
    static String processingError(Map<String, String> what, Exception error) {
        Map<String, String> described = new TreeMap<>(what);
        described.put("error", error.getClass().getSimpleName() + ": " + error.getMessage());
        StringBuilder payload = new StringBuilder("{");
        boolean first = true;
        for (Map.Entry<String, String> field : described.entrySet()) {
            if (!first) {
                payload.append(',');
            }
            first = false;
            Json.member(payload, field.getKey(), field.getValue());
        }
        byte[] bytes = payload.append('}').toString().getBytes(StandardCharsets.UTF_8);
        StringBuilder out = new StringBuilder(bytes.length * 2 + 256);
        out.append('{');
        Json.member(out, "reason", "processing_error").append(',');
        Json.member(out, "meter", what.get("meter")).append(',');
        Json.member(out, "customer_id", what.get("customer_id")).append(',');
        String eventId = what.get("event_id");
        Json.member(out, "event_id", eventId == null || eventId.isEmpty() ? null : eventId).append(',');
        Json.member(out, "payload_base64", Base64.getEncoder().encodeToString(bytes)).append(',');
        out.append("\"payload_size\":").append(bytes.length).append(',');
        out.append("\"kafka_partition\":").append(NO_PARTITION).append(',');
        out.append("\"kafka_offset\":").append(digest(bytes)).append(',');
        out.append("\"kafka_ts\":null}");
        return out.toString();
    }

    private static long digest(byte[] bytes) {
        try {
            byte[] sha = MessageDigest.getInstance("SHA-256").digest(bytes);
            long value = 0;
            for (int i = 0; i < 8; i++) {
                value = (value << 8) | (sha[i] & 0xff);
            }
            return value >>> 1;
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
