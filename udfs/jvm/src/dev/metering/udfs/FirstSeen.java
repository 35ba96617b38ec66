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
 * savepoint of the job before amendments restores.
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

    static final char SEPARATOR = '\n';
    static final char COUNTED = '=';
    static final char PROCESSED = '#';
    static final char VOIDED = '!';
    /** Between the fields of a {@link #COUNTED} line; escaped inside them, with the separator. */
    static final char FIELD = '\t';

    static final String APPLIED = "applied";
    static final String UNKNOWN_EVENT = "unknown_event";
    static final String NOT_AMENDABLE = "not_amendable";
    static final String ALREADY_VOIDED = "already_voided";
    static final String REPEATED = "repeated";

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
        String known = memory.fingerprints == null ? "" : memory.fingerprints;
        boolean fresh = fingerprint != null && !contains(known, fingerprint);
        if (fresh) {
            known = known + fingerprint + SEPARATOR;
        }
        memory.seen += 1;
        if (memory.seen == 1L && Boolean.TRUE.equals(input.getField("amendable"))) {
            known = known + COUNTED + content(input.getFieldAs("event_type"), input.getFieldAs("event_ms"),
                    input.getFieldAs("q_text"), names, input.getFieldAs("props")) + SEPARATOR;
        }
        memory.fingerprints = known;
        if (memory.seen == 1L) {
            firstSeen.inc();
        } else {
            duplicates.inc();
            if (fresh) {
                conflicts.inc();
            }
        }
        collect(Row.of(memory.seen, count(known), behind, 1, null, null, null, null, null));
    }

    /** An amendment of this key's event: its retraction (and replacement), or the reason it has none. */
    private void amend(Context ctx, Memory memory, Row input, String[] names) {
        String known = memory.fingerprints;
        if (memory.seen == 0L || known == null) {
            ctx.clearAllState(); // nothing to keep for a key that never had an event
            collect(outcome(UNKNOWN_EVENT));
            return;
        }
        String id = PROCESSED + input.<String>getFieldAs("amendment_id");
        if (contains(known, id)) {
            collect(outcome(REPEATED));
            return;
        }
        known = known + id + SEPARATOR;
        String counted = line(known, COUNTED);
        String result;
        if (contains(known, String.valueOf(VOIDED))) {
            result = ALREADY_VOIDED;
        } else if (counted == null) {
            result = NOT_AMENDABLE;
        } else {
            String[] fields = fields(counted);
            collect(contribution(-1, fields, names));
            if ("amend".equals(input.getFieldAs("amendment"))) {
                String[] amended = fields.clone();
                amended[2] = input.getFieldAs("q_text");
                collect(contribution(1, amended, names));
                known = known.replace(COUNTED + counted + SEPARATOR, COUNTED + join(amended) + SEPARATOR);
            } else {
                known = known + VOIDED + SEPARATOR;
            }
            result = APPLIED;
        }
        memory.fingerprints = known;
        if (!APPLIED.equals(result)) {
            collect(outcome(result));
        }
    }

    private static Row outcome(String outcome) {
        return Row.of(0L, 0L, true, 0, null, null, null, null, outcome);
    }

    /**
     * A row counting {@code fields} (type, event time, quantity, then property name and value pairs)
     * {@code sign} times, late; its {@code props} in the order of {@code names} (a property the event
     * did not carry, or one not kept when it was counted, is null).
     */
    private static Row contribution(int sign, String[] fields, String[] names) {
        String[] props = new String[names.length];
        for (int i = 3; i + 1 < fields.length; i += 2) {
            for (int j = 0; j < names.length; j++) {
                if (names[j].equals(fields[i])) {
                    props[j] = fields[i + 1];
                }
            }
        }
        return Row.of(0L, 0L, true, sign, fields[0], Long.parseLong(fields[1]), fields[2], props, APPLIED);
    }

    /**
     * What an event counted, as one line: type, event time, quantity and its properties the meters
     * read, by name ({@code props[i]} is the value of {@code names[i]}; absent ones are left out): a
     * restored job whose configuration reads other properties still finds each one.
     */
    static String content(String eventType, Long eventMs, String quantity, String[] names, String[] props) {
        java.util.List<String> fields = new java.util.ArrayList<>(3 + 2 * names.length);
        fields.add(eventType);
        fields.add(String.valueOf(eventMs));
        fields.add(quantity);
        for (int i = 0; props != null && i < props.length && i < names.length; i++) {
            if (props[i] != null) {
                fields.add(names[i]);
                fields.add(props[i]);
            }
        }
        return join(fields.toArray(new String[0]));
    }

    private transient String lastPropertyNames;
    private transient String[] lastNames = new String[0];

    /** The property names argument, split once (it is the same literal for every call). */
    private String[] names(String propertyNames) {
        if (propertyNames == null || propertyNames.isEmpty()) {
            return new String[0];
        }
        if (!propertyNames.equals(lastPropertyNames)) {
            lastNames = propertyNames.split(",");
            lastPropertyNames = propertyNames;
        }
        return lastNames;
    }

    /** Fields joined by {@link #FIELD}; backslash, tab and line feed escaped, null as {@code \0}. */
    static String join(String[] fields) {
        StringBuilder out = new StringBuilder(64);
        for (int i = 0; i < fields.length; i++) {
            if (i > 0) {
                out.append(FIELD);
            }
            String field = fields[i];
            if (field == null) {
                out.append("\\0");
                continue;
            }
            for (int c = 0; c < field.length(); c++) {
                char ch = field.charAt(c);
                switch (ch) {
                    case '\\' -> out.append("\\\\");
                    case FIELD -> out.append("\\t");
                    case SEPARATOR -> out.append("\\n");
                    default -> out.append(ch);
                }
            }
        }
        return out.toString();
    }

    /** The inverse of {@link #join}. */
    static String[] fields(String joined) {
        java.util.List<String> fields = new java.util.ArrayList<>();
        StringBuilder field = new StringBuilder();
        boolean isNull = false;
        for (int i = 0; i < joined.length(); i++) {
            char ch = joined.charAt(i);
            if (ch == FIELD) {
                fields.add(isNull ? null : field.toString());
                field.setLength(0);
                isNull = false;
            } else if (ch == '\\' && i + 1 < joined.length()) {
                char next = joined.charAt(++i);
                switch (next) {
                    case '0' -> isNull = true;
                    case 't' -> field.append(FIELD);
                    case 'n' -> field.append(SEPARATOR);
                    default -> field.append(next);
                }
            } else {
                field.append(ch);
            }
        }
        fields.add(isNull ? null : field.toString());
        return fields.toArray(new String[0]);
    }

    /** The rest of the first line that starts with {@code prefix}, or null. */
    static String line(String entries, char prefix) {
        for (int start = 0; start < entries.length(); ) {
            int end = entries.indexOf(SEPARATOR, start);
            if (end < 0) {
                return null;
            }
            if (end > start && entries.charAt(start) == prefix) {
                return entries.substring(start + 1, end);
            }
            start = end + 1;
        }
        return null;
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

    /** The fingerprint lines of {@code entries} (not the amendments' lines). */
    static long count(String entries) {
        long count = 0;
        boolean lineStart = true;
        for (int i = 0; i < entries.length(); i++) {
            char c = entries.charAt(i);
            if (lineStart && c != COUNTED && c != PROCESSED && c != VOIDED) {
                count++;
            }
            lineStart = c == SEPARATOR;
        }
        return count;
    }
}
