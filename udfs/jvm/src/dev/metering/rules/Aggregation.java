package dev.metering.rules;

/**
 * How a meter folds its events: the JVM twin of {@code udfs/meters.py} {@code Aggregation}.
 *
 * <p>The wire names are the ones meter configuration and keyed state carry, so {@link #of} is the
 * only way in from text.
 */
public enum Aggregation {
    SUM("sum"),
    COUNT("count"),
    MAX("max"),
    MIN("min"),
    UNIQUE_COUNT("unique_count"),
    LATEST("latest");

    private static final Aggregation[] ALL = values();

    private final String wire;

    Aggregation(String wire) {
        this.wire = wire;
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
}
