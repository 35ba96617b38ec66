package dev.metering.rules;

import java.time.DayOfWeek;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.time.zone.ZoneOffsetTransition;
import java.time.zone.ZoneRules;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Billing periods and local days in event time: the JVM twin of {@code udfs/periods.py}.
 *
 * <p>Day and period boundaries follow the customer's IANA zone. A boundary is the local midnight of
 * its date resolved as Python's {@code datetime.combine(day, time(0), tzinfo=zone)} (fold=0) does:
 * a midnight in a DST gap maps to the instant the gap starts (the offset before the transition), an
 * ambiguous one to its first occurrence. Monthly periods start on an anchor day 1–31 clamped to the
 * month's last day; weekly ones on an ISO weekday 1–7; daily ones are local days (anchor 1).
 * Periods are half-open {@code [start, end)} in epoch milliseconds.
 *
 * <p>Called per row, so zone rules are looked up once per zone id and results are kept in a small
 * lock-free cache keyed by (instant, kind, zone, anchor): rows of one key repeat their minute.
 * {@code tests/unit/test_rules_agreement.py} holds this class to the Python reference.
 */
public final class Periods {
    private static final int MONTH = 0;
    private static final int WEEK = 1;
    private static final int DAY = 2;

    private static final ConcurrentHashMap<String, ZoneRules> RULES = new ConcurrentHashMap<>();

    /** Direct-mapped: a colliding entry replaces the old one. Entries are immutable, so racy publication is safe. */
    private static final int CACHE_SLOTS = 4096;
    private static final Bounds[] CACHE = new Bounds[CACHE_SLOTS];

    private Periods() {}

    /** {startMs, endMs} of the billing period containing instantMs. kind: "month"|"week"|"day". */
    public static long[] billingPeriod(long instantMs, String kind, String zoneId, int anchor) {
        Bounds bounds = bounds(instantMs, kindCode(kind, anchor), zoneId, anchor);
        return new long[] {bounds.startMs, bounds.endMs};
    }

    /** Start (epoch ms) of the local day (zoneId) containing instantMs. */
    public static long localDayStart(long instantMs, String zoneId) {
        return bounds(instantMs, DAY, zoneId, 1).startMs;
    }

    /**
     * The kind as a small code, validating the anchor as Python's {@code BillingCycle} does (a
     * configuration error must fail here, not produce periods Python would refuse).
     */
    static int kindCode(String kind, int anchor) {
        int code;
        int limit;
        switch (kind) {
            case "month" -> {
                code = MONTH;
                limit = 31;
            }
            case "week" -> {
                code = WEEK;
                limit = 7;
            }
            case "day" -> {
                code = DAY;
                limit = 1;
            }
            default -> throw new IllegalArgumentException("unknown period kind " + kind);
        }
        if (anchor < 1 || anchor > limit) {
            throw new IllegalArgumentException("anchor " + anchor + " out of range 1–" + limit + " for " + kind + " periods");
        }
        return code;
    }

    /** The cached or computed bounds; {@code kindCode} from {@link #kindCode}. */
    static Bounds bounds(long instantMs, int kindCode, String zoneId, int anchor) {
        int slot = slot(instantMs, kindCode, zoneId, anchor);
        Bounds cached = CACHE[slot];
        if (cached != null && cached.matches(instantMs, kindCode, zoneId, anchor)) {
            return cached;
        }
        Bounds computed = compute(instantMs, kindCode, zoneId, anchor);
        CACHE[slot] = computed;
        return computed;
    }

    private static int slot(long instantMs, int kindCode, String zoneId, int anchor) {
        long minute = Math.floorDiv(instantMs, 60_000L);
        long h = minute * 0x9E3779B97F4A7C15L + zoneId.hashCode() * 31L + kindCode * 64L + anchor;
        h ^= h >>> 29;
        return (int) (h & (CACHE_SLOTS - 1));
    }

    private static Bounds compute(long instantMs, int kindCode, String zoneId, int anchor) {
        ZoneRules rules = rules(zoneId);
        LocalDate local = localDate(instantMs, rules);
        LocalDate startDay;
        LocalDate endDay;
        switch (kindCode) {
            case DAY -> {
                startDay = local;
                endDay = local.plusDays(1);
            }
            case WEEK -> {
                DayOfWeek weekday = local.getDayOfWeek();
                startDay = local.minusDays(Math.floorMod(weekday.getValue() - anchor, 7));
                endDay = startDay.plusDays(7);
            }
            default -> {
                LocalDate thisStart = monthAnchor(local.getYear(), local.getMonthValue(), anchor);
                if (!local.isBefore(thisStart)) {
                    startDay = thisStart;
                    LocalDate next = thisStart.withDayOfMonth(1).plusMonths(1);
                    endDay = monthAnchor(next.getYear(), next.getMonthValue(), anchor);
                } else {
                    LocalDate previous = thisStart.withDayOfMonth(1).minusMonths(1);
                    startDay = monthAnchor(previous.getYear(), previous.getMonthValue(), anchor);
                    endDay = thisStart;
                }
            }
        }
        return new Bounds(instantMs, kindCode, zoneId, anchor, localMidnightMs(startDay, rules), localMidnightMs(endDay, rules));
    }

    private static LocalDate monthAnchor(int year, int month, int anchor) {
        LocalDate first = LocalDate.of(year, month, 1);
        return first.withDayOfMonth(Math.min(anchor, first.lengthOfMonth()));
    }

    /** The rules of an IANA zone id (cached); only region ids of the tz database, as Python's ZoneInfo. */
    static ZoneRules rules(String zoneId) {
        ZoneRules rules = RULES.get(zoneId);
        if (rules == null) {
            if (!ZoneId.getAvailableZoneIds().contains(zoneId)) {
                throw new IllegalArgumentException("unknown IANA time zone " + zoneId);
            }
            rules = ZoneId.of(zoneId).getRules();
            RULES.put(zoneId, rules);
        }
        return rules;
    }

    static LocalDate localDate(long instantMs, ZoneRules rules) {
        long seconds = Math.floorDiv(instantMs, 1000L);
        ZoneOffset offset = rules.isFixedOffset() ? rules.getOffset(Instant.EPOCH) : rules.getOffset(Instant.ofEpochSecond(seconds));
        return LocalDate.ofEpochDay(Math.floorDiv(seconds + offset.getTotalSeconds(), 86_400L));
    }

    /**
     * The instant (epoch ms) at which local {@code day} begins, as Python's {@code local_midnight}:
     * local 00:00 with the offset before any transition at that time (fold=0); should that instant
     * still read the previous date, the day starts at the next transition that reaches it.
     */
    static long localMidnightMs(LocalDate day, ZoneRules rules) {
        LocalDateTime midnight = day.atStartOfDay();
        List<ZoneOffset> valid = rules.getValidOffsets(midnight);
        ZoneOffset offset;
        if (valid.size() == 1) {
            offset = valid.get(0);
        } else if (valid.isEmpty()) {
            offset = rules.getTransition(midnight).getOffsetBefore();
        } else {
            offset = valid.get(0); // overlap: the offset before the transition, i.e. the first occurrence
        }
        long seconds = midnight.toEpochSecond(offset);
        if (localDate(seconds * 1000L, rules).isBefore(day)) {
            ZoneOffsetTransition transition = rules.nextTransition(Instant.ofEpochSecond(seconds));
            while (transition != null && transition.getDateTimeAfter().toLocalDate().isBefore(day)) {
                transition = rules.nextTransition(transition.getInstant());
            }
            if (transition != null) {
                seconds = transition.toEpochSecond();
            }
        }
        return seconds * 1000L;
    }

    /** One cached result: the key it was computed for and the period. */
    static final class Bounds {
        final long instantMs;
        final int kindCode;
        final String zoneId;
        final int anchor;
        final long startMs;
        final long endMs;

        Bounds(long instantMs, int kindCode, String zoneId, int anchor, long startMs, long endMs) {
            this.instantMs = instantMs;
            this.kindCode = kindCode;
            this.zoneId = zoneId;
            this.anchor = anchor;
            this.startMs = startMs;
            this.endMs = endMs;
        }

        boolean matches(long instantMs, int kindCode, String zoneId, int anchor) {
            return this.instantMs == instantMs
                    && this.kindCode == kindCode
                    && this.anchor == anchor
                    && (this.zoneId == zoneId || this.zoneId.equals(zoneId));
        }
    }
}
