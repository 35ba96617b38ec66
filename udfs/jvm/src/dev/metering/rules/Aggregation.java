package dev.metering.rules;

/**
 * How a meter folds its events: the JVM twin of {@code udfs/meters.py} {@code Aggregation}.
 *
 * <p>The wire names are the ones meter configuration and keyed state carry, so {@link #of} is the
 * only way in from text. {@link #retractable()} decides whether an earlier minute partial is taken
 * back by subtraction (exact for sum and count) or superseded by merging the newer one.
 */
public enum Aggregation {
    SUM("sum", true),
    COUNT("count", true),
    MAX("max", false),
    MIN("min", false),
    UNIQUE_COUNT("unique_count", false),
    LATEST("latest", false);

    private static final Aggregation[] ALL = values();

    private final String wire;
    private final boolean retractable;

    Aggregation(String wire, boolean retractable) {
        this.wire = wire;
        this.retractable = retractable;
    }

    /** The aggregation named {@code wire} ("sum", "unique_count", ...); exact, case-sensitive, as Python's enum lookup. */
    public static Aggregation of(String wire) {
        for (Aggregation aggregation : ALL) {
            if (aggregation.wire.equals(wire)) {
                return aggregation;
            }
        }
        throw new IllegalArgumentException("unknown aggregation " + wire);
    }

    /** The configuration / state name of this aggregation. */
    public String wire() {
        return wire;
    }

    /** Whether an earlier partial can be subtracted (sum, count) rather than only superseded. */
    public boolean retractable() {
        return retractable;
    }
}
