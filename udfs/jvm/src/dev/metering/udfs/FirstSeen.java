package dev.metering.udfs;

import java.time.Instant;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;

/**
 * {@code metering_first_seen(input => TABLE t PARTITION BY (customer_id, event_id), uid => …)}:
 * dedup and the duplicate count of an event id in one keyed state.
 *
 * <p>For every input row it emits the row (all its columns, passed through) with {@code seen}, how
 * many valid events of this key it has seen including this one, and {@code variants}, how many
 * distinct {@code fingerprint} values among them. So {@code seen = 1} is the first occurrence (the
 * one that is billed) and {@code seen > 1} a duplicate, whose row carries the key's counts so far.
 * A row whose {@code reason} is set (a dead letter, a heartbeat) is not an event: it passes with
 * {@code seen = 0} and {@code variants = 0} and leaves the state alone.
 *
 * <p>It replaces two keyed operators that read the same key: a keep-first {@code ROW_NUMBER}
 * dedup and a {@code GROUP BY} counting rows and distinct fingerprints, each with its own state
 * and its own network shuffle (docs/benchmarks.md, "Stage by stage"). State per key: the count
 * and the distinct fingerprints in arrival order (nearly always one), as one text: a BIGINT and
 * a STRING convert to and from Flink's state format every call more cheaply than an array.
 * Fingerprints are hex digests ({@code jobs/sql.py}, FINGERPRINT) and never contain the
 * separator, a line feed. Its retention is the
 * job's {@code table.exec.state.ttl} (the dedup retention), counted from the key's latest event.
 *
 * <p>Counters (jobs/metrics.py, DEDUP_METRICS, read by {@code metering job status}):
 * {@code meteringFirstSeen}, {@code meteringDuplicates} and {@code meteringConflicts}, the
 * duplicates that brought a fingerprint the key had not shown before.
 *
 * <p>{@code behind_watermark}: the row's {@code rowtime} is at or behind this operator's watermark,
 * or no watermark has arrived yet; the job routes such rows down the late path (jobs/sql.py,
 * flagged_view). Computed here, once, instead of by {@code CURRENT_WATERMARK} in a view that
 * several queries read (each evaluated it again and could disagree).
 *
 * <p>Call it without {@code on_time}: with it, Flink drops the rows behind the watermark before
 * they reach the function, and late events must not be lost (jobs/sql.py, first_seen_view).
 */
@DataTypeHint("ROW<seen BIGINT NOT NULL, variants BIGINT NOT NULL, behind_watermark BOOLEAN NOT NULL>")
public final class FirstSeen extends ProcessTableFunction<Row> {

    /** What one (customer_id, event_id) has shown so far. */
    public static final class Memory {
        /** Valid events seen. */
        public long seen;
        /** The distinct fingerprints, in arrival order, each followed by {@link #SEPARATOR}. */
        public String fingerprints;
    }

    static final char SEPARATOR = '\n';

    private transient Counter firstSeen;
    private transient Counter duplicates;
    private transient Counter conflicts;

    @Override
    public void open(FunctionContext context) {
        MetricGroup metrics = context.getMetricGroup();
        firstSeen = metrics.counter("meteringFirstSeen");
        duplicates = metrics.counter("meteringDuplicates");
        conflicts = metrics.counter("meteringConflicts");
    }

    public void eval(
            Context ctx,
            @StateHint Memory memory,
            @ArgumentHint({ArgumentTrait.SET_SEMANTIC_TABLE, ArgumentTrait.PASS_COLUMNS_THROUGH}) Row input) {
        if (input.getField("reason") != null) {
            collect(Row.of(0L, 0L, false));
            return;
        }
        // Judged here, once per row, against this operator's watermark: the group window behind it
        // receives its watermarks in-band after this row, so a row found ahead of it here is never
        // late there (docs/design.md). No watermark yet (a fresh start or a restore): behind.
        Long watermark = ctx.timeContext(Long.class).currentWatermark();
        Instant rowtime = input.getFieldAs("rowtime");
        boolean behind = watermark == null || rowtime == null || rowtime.toEpochMilli() <= watermark;
        String fingerprint = input.getFieldAs("fingerprint");
        String known = memory.fingerprints == null ? "" : memory.fingerprints;
        boolean fresh = fingerprint != null && !contains(known, fingerprint);
        if (fresh) {
            known = known + fingerprint + SEPARATOR;
        }
        memory.fingerprints = known;
        memory.seen += 1;
        if (memory.seen == 1L) {
            firstSeen.inc();
        } else {
            duplicates.inc();
            if (fresh) {
                conflicts.inc();
            }
        }
        collect(Row.of(memory.seen, count(known), behind));
    }

    /** Whether {@code entries} (each followed by the separator) holds {@code entry}. */
    static boolean contains(String entries, String entry) {
        for (int start = 0; start < entries.length(); ) {
            int end = entries.indexOf(SEPARATOR, start);
            if (end < 0) {
                return false; // never written so, but never loop
            }
            if (end - start == entry.length() && entries.startsWith(entry, start)) {
                return true;
            }
            start = end + 1;
        }
        return false;
    }

    private static long count(String entries) {
        long count = 0;
        for (int i = 0; i < entries.length(); i++) {
            if (entries.charAt(i) == SEPARATOR) {
                count++;
            }
        }
        return count;
    }
}
