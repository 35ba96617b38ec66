package dev.metering.rules;

import java.io.DataInput;
import java.io.DataOutput;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.Collection;
import java.util.Collections;
import java.util.Comparator;
import java.util.Objects;
import java.util.SortedSet;
import java.util.TreeSet;

/**
 * An exact, mergeable partial aggregate: the JVM twin of {@code udfs/aggregators.py} {@code Partial}.
 *
 * <p>Immutable. {@code count} is the number of events for every aggregation; the other fields are
 * used by one aggregation each (sum: {@link #total}; max/min: {@link #extreme}; unique_count:
 * {@link #distinct}; latest: {@link #latestMs}, {@link #latestId}, {@link #latestValue}).
 *
 * <p>Decimals keep their scale as Python's {@code Decimal} keeps its exponent, because the wire text
 * ({@link #appendJson}) must be the one the Python operator wrote: sums add exactly (Python's
 * 76-digit context never rounds a sum of Decimal(38, 9) values), and max/min/latest keep the
 * <em>first</em> of numerically equal values, as Python's {@code max(a, b)} and tuple comparison do.
 * Python's negative zero has no {@link BigDecimal} form; the job's Decimal(38, 9) inputs never carry one.
 *
 * <p>Strings order by Unicode code point (Python's order), not by UTF-16 unit: {@link #distinct}
 * and the latest tie-break on {@link #latestId} use {@link #CODE_POINT_ORDER}.
 */
public final class Partial {
    /** Python's string order: by code point (differs from {@link String#compareTo} above U+FFFF). */
    public static final Comparator<String> CODE_POINT_ORDER = Partial::compareCodePoints;

    private static final SortedSet<String> NO_VALUES = Collections.unmodifiableSortedSet(new TreeSet<>(CODE_POINT_ORDER));
    /** Tag of the binary form ({@link #write}); a new layout gets a new tag and {@link #read} keeps reading the old. */
    private static final byte FORMAT = 1;

    private static final int HAS_TOTAL = 1;
    private static final int HAS_EXTREME = 2;
    private static final int HAS_DISTINCT = 4;
    private static final int HAS_LATEST = 8;

    public final Aggregation aggregation;
    public final long count;
    /** sum ({@link BigDecimal#ZERO} otherwise). */
    public final BigDecimal total;
    /** max/min, null when none. */
    public final BigDecimal extreme;
    /** unique_count (unmodifiable, code point order; empty otherwise). */
    public final SortedSet<String> distinct;
    /** latest: event time of the latest event; meaningful only when {@link #latestValue} is not null. */
    public final long latestMs;
    /** latest: event id of the latest event (the first tie-break after the time). */
    public final String latestId;
    /** latest: the value; null = no latest event. */
    public final BigDecimal latestValue;

    private Partial(
            Aggregation aggregation,
            long count,
            BigDecimal total,
            BigDecimal extreme,
            SortedSet<String> distinct,
            long latestMs,
            String latestId,
            BigDecimal latestValue) {
        this.aggregation = Objects.requireNonNull(aggregation, "aggregation");
        this.count = count;
        this.total = total;
        this.extreme = extreme;
        this.distinct = distinct;
        this.latestMs = latestValue == null ? 0L : latestMs;
        this.latestId = latestValue == null ? "" : Objects.requireNonNull(latestId, "latestId");
        this.latestValue = latestValue;
    }

    public static Partial empty(Aggregation a) {
        return new Partial(a, 0, BigDecimal.ZERO, null, NO_VALUES, 0L, "", null);
    }

    public static Partial sum(long count, BigDecimal total) {
        return new Partial(Aggregation.SUM, count, Objects.requireNonNull(total, "total"), null, NO_VALUES, 0L, "", null);
    }

    public static Partial count(long count) {
        return new Partial(Aggregation.COUNT, count, BigDecimal.ZERO, null, NO_VALUES, 0L, "", null);
    }

    /** A max or min partial; {@code extreme} null when it holds no value. */
    public static Partial extreme(Aggregation maxOrMin, long count, BigDecimal extreme) {
        if (maxOrMin != Aggregation.MAX && maxOrMin != Aggregation.MIN) {
            throw new IllegalArgumentException(maxOrMin.wire() + " partials have no extreme");
        }
        return new Partial(maxOrMin, count, BigDecimal.ZERO, extreme, NO_VALUES, 0L, "", null);
    }

    public static Partial uniqueCount(long count, Collection<String> distinct) {
        return new Partial(Aggregation.UNIQUE_COUNT, count, BigDecimal.ZERO, null, sortedCopy(distinct), 0L, "", null);
    }

    /** A latest partial; {@code value} null when it holds no event. */
    public static Partial latest(long count, long latestMs, String latestId, BigDecimal value) {
        return new Partial(Aggregation.LATEST, count, BigDecimal.ZERO, null, NO_VALUES, latestMs, latestId, value);
    }

    /** Any combination of fields, as Python's {@code Partial(...)} constructor allows; {@code total} null means zero. */
    public static Partial of(
            Aggregation a,
            long count,
            BigDecimal total,
            BigDecimal extreme,
            Collection<String> distinct,
            long latestMs,
            String latestId,
            BigDecimal latestValue) {
        return new Partial(
                a, count, total == null ? BigDecimal.ZERO : total, extreme, sortedCopy(distinct), latestMs, latestId, latestValue);
    }

    /** The partial of a single event, as Python's {@code of_event} ({@code distinctValue}: what unique_count counts). */
    public static Partial ofEvent(Aggregation a, BigDecimal value, long eventMs, String eventId, String distinctValue) {
        return switch (a) {
            case SUM -> sum(1, value);
            case COUNT -> count(1);
            case MAX, MIN -> extreme(a, 1, value);
            case UNIQUE_COUNT -> uniqueCount(1, Collections.singleton(distinctValue));
            case LATEST -> latest(1, eventMs, eventId, value);
        };
    }

    private static SortedSet<String> sortedCopy(Collection<String> values) {
        if (values == null || values.isEmpty()) {
            return NO_VALUES;
        }
        TreeSet<String> sorted = new TreeSet<>(CODE_POINT_ORDER);
        sorted.addAll(values);
        return Collections.unmodifiableSortedSet(sorted);
    }

    /** Combine with a partial of the same aggregation (associative, commutative, {@link #empty} is neutral). */
    public Partial merge(Partial other) {
        requireSameAggregation(other);
        BigDecimal extreme = this.extreme;
        if (other.extreme != null) {
            if (extreme == null) {
                extreme = other.extreme;
            } else if (aggregation == Aggregation.MAX) {
                extreme = other.extreme.compareTo(extreme) > 0 ? other.extreme : extreme; // equal: keep the first
            } else {
                extreme = other.extreme.compareTo(extreme) < 0 ? other.extreme : extreme;
            }
        }
        boolean keepOwnLatest = other.latestValue == null || (latestValue != null && compareLatest(this, other) >= 0);
        Partial latest = keepOwnLatest ? this : other;
        return new Partial(
                aggregation,
                count + other.count,
                add(total, other.total),
                extreme,
                union(distinct, other.distinct),
                latest.latestMs,
                latest.latestId,
                latest.latestValue);
    }

    /** The meter's value for this bucket. */
    public BigDecimal result() {
        return switch (aggregation) {
            case SUM -> total;
            case COUNT -> BigDecimal.valueOf(count);
            case MAX, MIN -> extreme != null ? extreme : BigDecimal.ZERO;
            case UNIQUE_COUNT -> BigDecimal.valueOf(distinct.size());
            case LATEST -> latestValue != null ? latestValue : BigDecimal.ZERO;
        };
    }

    public boolean isEmpty() {
        return count == 0;
    }

    /**
     * The members of {@code udfs/aggregators.py} {@code partial_json}, without braces, byte for byte as
     * Python's {@code json.dumps(..., separators=(",", ":"))} writes them (ASCII only: other
     * characters as {@code \\uXXXX} escapes). Decimals as {@link BigDecimal#toString()}, which
     * follows the same to-scientific-string rule as Python's {@code str(Decimal)}.
     */
    public void appendJson(StringBuilder out) {
        out.append("\"value\":\"").append(result()).append("\",\"event_count\":").append(count);
        out.append(",\"sum\":\"").append(total).append('"');
        out.append(",\"max\":");
        appendDecimalOrNull(out, aggregation == Aggregation.MAX ? extreme : null);
        out.append(",\"min\":");
        appendDecimalOrNull(out, aggregation == Aggregation.MIN ? extreme : null);
        out.append(",\"distinct_values\":[");
        boolean first = true;
        for (String value : distinct) {
            if (!first) {
                out.append(',');
            }
            first = false;
            appendJsonString(out, value);
        }
        out.append("],\"latest_ms\":");
        if (latestValue == null) {
            out.append("null,\"latest_value\":null");
        } else {
            out.append(latestMs).append(",\"latest_value\":\"").append(latestValue).append('"');
        }
    }

    private static void appendDecimalOrNull(StringBuilder out, BigDecimal value) {
        if (value == null) {
            out.append("null");
        } else {
            out.append('"').append(value).append('"');
        }
    }

    /** A JSON string as Python's {@code json.dumps} with {@code ensure_ascii=True} writes it. */
    public static void appendJsonString(StringBuilder out, String value) {
        out.append('"');
        for (int i = 0, n = value.length(); i < n; i++) {
            char c = value.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c >= 0x20 && c <= 0x7e) {
                        out.append(c);
                    } else {
                        out.append("\\u");
                        String hex = Integer.toHexString(c);
                        for (int pad = hex.length(); pad < 4; pad++) {
                            out.append('0');
                        }
                        out.append(hex);
                    }
                }
            }
        }
        out.append('"');
    }

    /** A compact binary form for keyed state (the aggregation is stored once per key, not here). */
    public void write(DataOutput out) throws IOException {
        out.writeByte(FORMAT);
        int present = (isZeroOfScaleZero(total) ? 0 : HAS_TOTAL)
                | (extreme == null ? 0 : HAS_EXTREME)
                | (distinct.isEmpty() ? 0 : HAS_DISTINCT)
                | (latestValue == null ? 0 : HAS_LATEST);
        out.writeByte(present);
        writeVarLong(out, count);
        if ((present & HAS_TOTAL) != 0) {
            writeDecimal(out, total);
        }
        if ((present & HAS_EXTREME) != 0) {
            writeDecimal(out, extreme);
        }
        if ((present & HAS_DISTINCT) != 0) {
            writeVarLong(out, distinct.size());
            for (String value : distinct) {
                writeString(out, value);
            }
        }
        if ((present & HAS_LATEST) != 0) {
            writeVarLong(out, latestMs);
            writeString(out, latestId);
            writeDecimal(out, latestValue);
        }
    }

    /** The inverse of {@link #write}. */
    public static Partial read(Aggregation a, DataInput in) throws IOException {
        byte format = in.readByte();
        if (format != FORMAT) {
            throw new IOException("unknown Partial format " + format);
        }
        int present = in.readUnsignedByte();
        long count = readVarLong(in);
        BigDecimal total = (present & HAS_TOTAL) != 0 ? readDecimal(in) : BigDecimal.ZERO;
        BigDecimal extreme = (present & HAS_EXTREME) != 0 ? readDecimal(in) : null;
        SortedSet<String> distinct = NO_VALUES;
        if ((present & HAS_DISTINCT) != 0) {
            long size = readVarLong(in);
            TreeSet<String> values = new TreeSet<>(CODE_POINT_ORDER);
            for (long i = 0; i < size; i++) {
                values.add(readString(in));
            }
            distinct = Collections.unmodifiableSortedSet(values);
        }
        long latestMs = 0L;
        String latestId = "";
        BigDecimal latestValue = null;
        if ((present & HAS_LATEST) != 0) {
            latestMs = readVarLong(in);
            latestId = readString(in);
            latestValue = readDecimal(in);
        }
        return new Partial(a, count, total, extreme, distinct, latestMs, latestId, latestValue);
    }

    /** Equal fields, decimals including their scale (the text they print): what a state round trip must keep. */
    @Override
    public boolean equals(Object o) {
        return o instanceof Partial p
                && aggregation == p.aggregation
                && count == p.count
                && total.equals(p.total)
                && Objects.equals(extreme, p.extreme)
                && distinct.equals(p.distinct)
                && latestMs == p.latestMs
                && latestId.equals(p.latestId)
                && Objects.equals(latestValue, p.latestValue);
    }

    @Override
    public int hashCode() {
        return Objects.hash(aggregation, count, total, extreme, distinct, latestMs, latestId, latestValue);
    }

    @Override
    public String toString() {
        StringBuilder out = new StringBuilder(aggregation.wire()).append('{');
        appendJson(out);
        return out.append('}').toString();
    }

    private void requireSameAggregation(Partial other) {
        if (other.aggregation != aggregation) {
            throw new IllegalArgumentException("cannot combine " + aggregation.wire() + " with " + other.aggregation.wire());
        }
    }

    /** Python's {@code (ms, event_id, value)} tuple order. */
    private static int compareLatest(Partial a, Partial b) {
        int byTime = Long.compare(a.latestMs, b.latestMs);
        if (byTime != 0) {
            return byTime;
        }
        int byId = compareCodePoints(a.latestId, b.latestId);
        return byId != 0 ? byId : a.latestValue.compareTo(b.latestValue);
    }

    /** Exact sum with Python's exponent rule (the smaller exponent, i.e. the larger scale), without work for zero. */
    private static BigDecimal add(BigDecimal a, BigDecimal b) {
        if (b.signum() == 0 && b.scale() <= a.scale()) {
            return a;
        }
        if (a.signum() == 0 && a.scale() <= b.scale()) {
            return b;
        }
        return a.add(b);
    }

    private static SortedSet<String> union(SortedSet<String> a, SortedSet<String> b) {
        if (b.isEmpty() || a.containsAll(b)) {
            return a;
        }
        if (a.isEmpty()) {
            return b;
        }
        TreeSet<String> both = new TreeSet<>(CODE_POINT_ORDER);
        both.addAll(a);
        both.addAll(b);
        return Collections.unmodifiableSortedSet(both);
    }

    private static boolean isZeroOfScaleZero(BigDecimal value) {
        return value.signum() == 0 && value.scale() == 0;
    }

    /**
     * Compare as sequences of code points. UTF-16 order differs only where one unit is a surrogate
     * and the other is U+E000..U+FFFF; shifting surrogates above that range restores code point order
     * (for well-formed strings, the only kind a valid event carries).
     */
    static int compareCodePoints(String a, String b) {
        int n = Math.min(a.length(), b.length());
        for (int i = 0; i < n; i++) {
            char x = a.charAt(i);
            char y = b.charAt(i);
            if (x != y) {
                return fixUp(x) - fixUp(y);
            }
        }
        return a.length() - b.length();
    }

    private static int fixUp(char c) {
        if (c >= 0xD800) {
            return c >= 0xE000 ? c - 0x800 : c + 0x2000;
        }
        return c;
    }

    private static void writeDecimal(DataOutput out, BigDecimal value) throws IOException {
        writeVarLong(out, value.scale());
        BigInteger unscaled = value.unscaledValue();
        if (unscaled.bitLength() < 63) {
            out.writeByte(0); // the unscaled value as a variable-length long
            writeVarLong(out, unscaled.longValue());
        } else {
            byte[] bytes = unscaled.toByteArray();
            out.writeByte(1);
            writeVarLong(out, bytes.length);
            out.write(bytes);
        }
    }

    private static BigDecimal readDecimal(DataInput in) throws IOException {
        int scale = Math.toIntExact(readVarLong(in));
        byte form = in.readByte();
        if (form == 0) {
            return BigDecimal.valueOf(readVarLong(in), scale);
        }
        byte[] bytes = new byte[Math.toIntExact(readVarLong(in))];
        in.readFully(bytes);
        return new BigDecimal(new BigInteger(bytes), scale);
    }

    /** UTF-16 units, each a variable-length int: lossless for any Java string, one byte per ASCII character. */
    private static void writeString(DataOutput out, String value) throws IOException {
        writeVarLong(out, value.length());
        for (int i = 0, n = value.length(); i < n; i++) {
            int c = value.charAt(i);
            while ((c & ~0x7F) != 0) {
                out.writeByte((c & 0x7F) | 0x80);
                c >>>= 7;
            }
            out.writeByte(c);
        }
    }

    private static String readString(DataInput in) throws IOException {
        int length = Math.toIntExact(readVarLong(in));
        char[] chars = new char[length];
        for (int i = 0; i < length; i++) {
            int c = 0;
            for (int shift = 0; ; shift += 7) {
                int b = in.readUnsignedByte();
                c |= (b & 0x7F) << shift;
                if ((b & 0x80) == 0) {
                    break;
                }
            }
            chars[i] = (char) c;
        }
        return new String(chars);
    }

    /** Zig-zag, then 7 bits per byte: small magnitudes of either sign take one or two bytes. */
    static void writeVarLong(DataOutput out, long value) throws IOException {
        long v = (value << 1) ^ (value >> 63);
        while ((v & ~0x7FL) != 0) {
            out.writeByte((int) ((v & 0x7F) | 0x80));
            v >>>= 7;
        }
        out.writeByte((int) v);
    }

    static long readVarLong(DataInput in) throws IOException {
        long v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            int b = in.readUnsignedByte();
            v |= (long) (b & 0x7F) << shift;
            if ((b & 0x80) == 0) {
                return (v >>> 1) ^ -(v & 1);
            }
        }
        throw new IOException("malformed variable-length long");
    }
}
