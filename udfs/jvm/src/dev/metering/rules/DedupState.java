package dev.metering.rules;

import java.util.ArrayList;
import java.util.List;

/**
 * The per-key rules of the job's dedup state ({@code dev.metering.udfs.FirstSeen}), on its stored
 * text, with no Flink type: what an event's occurrence and an amendment (docs/semantics.md, "Voids
 * and amendments") do to it. {@code udfs/amendments.py} is the same rule in Python;
 * {@link DedupCases} runs these methods outside Flink so tests/unit/test_amendment_agreement.py
 * can hold the two to each other.
 *
 * <p>The text is lines, each followed by {@link #SEPARATOR}: the distinct fingerprints in arrival
 * order (hex digests, never starting with one of the markers below), then, as the key sees them,
 * {@link #COUNTED} and what the first occurrence counted, {@link #PROCESSED} and an amendment id,
 * {@link #VOIDED}. A savepoint stores exactly this text: its format must not change.
 *
 * <p>The methods an ordinary event goes through allocate nothing beyond the new text.
 */
public final class DedupState {
    private DedupState() {}

    public static final char SEPARATOR = '\n';
    public static final char COUNTED = '=';
    public static final char PROCESSED = '#';
    public static final char VOIDED = '!';
    /** Between the fields of a {@link #COUNTED} line; escaped inside them, with the separator. */
    public static final char FIELD = '\t';

    public static final String APPLIED = "applied";
    public static final String UNKNOWN_EVENT = "unknown_event";
    public static final String NOT_AMENDABLE = "not_amendable";
    public static final String ALREADY_VOIDED = "already_voided";
    public static final String REPEATED = "repeated";

    private static final String[] NO_NAMES = new String[0];

    /**
     * An event counted {@code sign} times (+1 a replacement, -1 a retraction): its type, event time,
     * quantity as written and {@code props} in the order of the names of the call (a property the
     * event did not carry, or one not kept when it was counted, is null).
     */
    public record Contribution(int sign, String eventType, long eventMs, String quantity, String[] props) {}

    /**
     * What an amendment did: its {@code outcome}, the key's new {@code text} (null: the key holds
     * nothing and is cleared), and for {@link #APPLIED} the retraction and, for an amend, the replacement.
     */
    public record Amendment(String outcome, String text, Contribution retraction, Contribution replacement) {}

    /** The property names argument, comma-separated, as an array (none for null or empty). */
    public static String[] names(String propertyNames) {
        return propertyNames == null || propertyNames.isEmpty() ? NO_NAMES : propertyNames.split(",");
    }

    /** The stored text of a key, {@code ""} for one never written. */
    public static String text(String stored) {
        return stored == null ? "" : stored;
    }

    /** Whether {@code fingerprint} is one the key's {@code text} has not shown (a null one never is). */
    public static boolean isNew(String text, String fingerprint) {
        return fingerprint != null && !contains(text, fingerprint);
    }

    /** Whether the occurrence numbered {@code seen} (from 1) is the first: only it keeps what it counted. */
    public static boolean isFirst(long seen) {
        return seen == 1L;
    }

    /**
     * The text after an event's occurrence: its fingerprint added when {@code fresh}
     * ({@link #isNew}), and {@code content} ({@link #content}) kept when not null (the first
     * occurrence of an amendable event, {@link #isFirst}).
     */
    public static String occurrence(String text, String fingerprint, boolean fresh, String content) {
        if (content == null) {
            return fresh ? text + fingerprint + SEPARATOR : text;
        }
        return fresh
                ? text + fingerprint + SEPARATOR + COUNTED + content + SEPARATOR
                : text + COUNTED + content + SEPARATOR;
    }

    /** The distinct fingerprints the key has shown (its lines that are not amendments' bookkeeping). */
    public static long variants(String text) {
        long count = 0;
        boolean lineStart = true;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (lineStart && c != COUNTED && c != PROCESSED && c != VOIDED) {
                count++;
            }
            lineStart = c == SEPARATOR;
        }
        return count;
    }

    /**
     * An amendment reaching a key that has seen {@code seen} events and holds {@code stored}: a void
     * ({@code amend} false) or an amend to {@code quantity}; {@code names} order the contributions' properties.
     */
    public static Amendment amend(long seen, String stored, String amendmentId, boolean amend, String quantity, String[] names) {
        if (seen == 0L || stored == null) {
            return new Amendment(UNKNOWN_EVENT, null, null, null);
        }
        String id = PROCESSED + amendmentId;
        if (contains(stored, id)) {
            return new Amendment(REPEATED, stored, null, null);
        }
        String known = stored + id + SEPARATOR;
        if (contains(known, String.valueOf(VOIDED))) {
            return new Amendment(ALREADY_VOIDED, known, null, null);
        }
        String counted = line(known, COUNTED);
        if (counted == null) {
            return new Amendment(NOT_AMENDABLE, known, null, null);
        }
        String[] fields = fields(counted);
        Contribution retraction = contribution(-1, fields, names);
        if (!amend) {
            return new Amendment(APPLIED, known + VOIDED + SEPARATOR, retraction, null);
        }
        String[] amended = fields.clone();
        amended[2] = quantity;
        known = known.replace(COUNTED + counted + SEPARATOR, COUNTED + join(amended) + SEPARATOR);
        return new Amendment(APPLIED, known, retraction, contribution(1, amended, names));
    }

    /** {@code fields} (type, event time, quantity, then property name and value pairs) as a contribution. */
    private static Contribution contribution(int sign, String[] fields, String[] names) {
        String[] props = new String[names.length];
        for (int i = 3; i + 1 < fields.length; i += 2) {
            for (int j = 0; j < names.length; j++) {
                if (names[j].equals(fields[i])) {
                    props[j] = fields[i + 1];
                }
            }
        }
        return new Contribution(sign, fields[0], Long.parseLong(fields[1]), fields[2], props);
    }

    /**
     * What an event counted, as one line: type, event time, quantity and its properties the meters
     * read, by name ({@code props[i]} is the value of {@code names[i]}; absent ones are left out): a
     * restored job whose configuration reads other properties still finds each one.
     */
    public static String content(String eventType, Long eventMs, String quantity, String[] names, String[] props) {
        List<String> fields = new ArrayList<>(3 + 2 * names.length);
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
        List<String> fields = new ArrayList<>();
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
}
