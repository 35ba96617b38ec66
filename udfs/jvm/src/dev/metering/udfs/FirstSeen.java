package dev.metering.udfs;

import dev.metering.rules.DedupState;
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
 *
 * <p><b>Amendments</b> (schemas/amendments.py, docs/semantics.md "Voids and amendments"): a record
 * whose {@code reason} is {@code amendment} reaches the key of the event it names. The key keeps,
 * when the event's {@code amendable} column was true (every meter of its type is a sum or a count),
 * what its first occurrence counted: event type, event time, quantity and the meters' properties,
 * by name ({@code property_names}, the names of the {@code props} column's elements: a restored job
 * that reads other properties maps them by name, not by position).
 * A void then emits that content again with {@code sign = -1} (a retraction); an amend emits the
 * retraction and the content with the new quantity ({@code sign = +1}), which becomes what the
 * key counts. Both take the late path (behind the watermark), so they reach the period still open
 * or become corrections of a final one. The outcome is {@code a_outcome}: {@code applied};
 * {@code unknown_event} (the key holds nothing: never seen within the dedup retention, or only
 * after the amendment); {@code not_amendable}; {@code already_voided}; or {@code repeated} (an
 * amendment id the key has already processed: a retry, with no effect).
 *
 * <p>All of it lives in the one state text, as lines that a fingerprint (hex) never starts with:
 * {@code =}content, {@code #}amendment id, {@code !} (voided). The state's type is unchanged, so a
 * savepoint of the job before amendments restores. The rules on that text, an occurrence's and an
 * amendment's, are {@link DedupState} (no Flink type: tests/unit/test_amendment_agreement.py runs
 * them against {@code udfs/amendments.py}); this class reads the row, keeps the state and emits.
 */
@DataTypeHint(
        "ROW<seen BIGINT NOT NULL, variants BIGINT NOT NULL, behind_watermark BOOLEAN NOT NULL, sign INT NOT NULL, "
                + "a_event_type STRING, a_event_ms BIGINT, a_q_text STRING, a_props ARRAY<STRING>, a_outcome STRING>")
public final class FirstSeen extends ProcessTableFunction<Row> {

    /** What one (customer_id, event_id) has shown so far. */
    public static final class Memory {
        /** Valid events seen. */
        public long seen;
        /** The distinct fingerprints, in arrival order, each followed by {@link #SEPARATOR}. */
        public String fingerprints;
    }

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
            @ArgumentHint({ArgumentTrait.SET_SEMANTIC_TABLE, ArgumentTrait.PASS_COLUMNS_THROUGH}) Row input,
            @ArgumentHint(name = "property_names") String propertyNames) {
        String[] names = names(propertyNames);
        Object reason = input.getField("reason");
        if (EventRules.AMENDMENT.equals(reason)) {
            amend(ctx, memory, input, names);
            return;
        }
        if (reason != null) {
            collect(Row.of(0L, 0L, false, 0, null, null, null, null, null));
            return;
        }
        // Judged here, once per row, against this operator's watermark: the group window behind it
        // receives its watermarks in-band after this row, so a row found ahead of it here is never
        // late there (docs/design.md). No watermark yet (a fresh start or a restore): behind.
        Long watermark = ctx.timeContext(Long.class).currentWatermark();
        Instant rowtime = input.getFieldAs("rowtime");
        boolean behind = watermark == null || rowtime == null || rowtime.toEpochMilli() <= watermark;
        String fingerprint = input.getFieldAs("fingerprint");
        String known = DedupState.text(memory.fingerprints);
        boolean fresh = DedupState.isNew(known, fingerprint);
        memory.seen += 1;
        String content = DedupState.isFirst(memory.seen) && Boolean.TRUE.equals(input.getField("amendable"))
                ? DedupState.content(input.getFieldAs("event_type"), input.getFieldAs("event_ms"),
                        input.getFieldAs("q_text"), names, input.getFieldAs("props"))
                : null;
        known = DedupState.occurrence(known, fingerprint, fresh, content);
        memory.fingerprints = known;
        if (DedupState.isFirst(memory.seen)) {
            firstSeen.inc();
        } else {
            duplicates.inc();
            if (fresh) {
                conflicts.inc();
            }
        }
        collect(Row.of(memory.seen, DedupState.variants(known), behind, 1, null, null, null, null, null));
    }

    /** An amendment of this key's event: its retraction (and replacement), or the reason it has none. */
    private void amend(Context ctx, Memory memory, Row input, String[] names) {
        DedupState.Amendment result = DedupState.amend(memory.seen, memory.fingerprints,
                input.getFieldAs("amendment_id"), "amend".equals(input.getFieldAs("amendment")),
                input.getFieldAs("q_text"), names);
        if (result.text() == null) {
            ctx.clearAllState(); // nothing to keep for a key that never had an event
        } else {
            memory.fingerprints = result.text();
        }
        if (result.retraction() != null) {
            collect(contribution(result.retraction()));
        }
        if (result.replacement() != null) {
            collect(contribution(result.replacement()));
        }
        if (!DedupState.APPLIED.equals(result.outcome())) {
            collect(Row.of(0L, 0L, true, 0, null, null, null, null, result.outcome()));
        }
    }

    /** A contribution's row: counted {@code sign} times, late. */
    private static Row contribution(DedupState.Contribution c) {
        return Row.of(0L, 0L, true, c.sign(), c.eventType(), c.eventMs(), c.quantity(), c.props(), DedupState.APPLIED);
    }

    private transient String lastPropertyNames;
    private transient String[] lastNames = DedupState.names(null);

    /** The property names argument, split once (it is the same literal for every call). */
    private String[] names(String propertyNames) {
        if (propertyNames == null || propertyNames.isEmpty()) {
            return DedupState.names(null);
        }
        if (!propertyNames.equals(lastPropertyNames)) {
            lastNames = DedupState.names(propertyNames);
            lastPropertyNames = propertyNames;
        }
        return lastNames;
    }
}
