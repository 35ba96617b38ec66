package dev.metering.rules;

import java.io.DataInput;
import java.io.DataOutput;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Finalization rules for one (customer, meter, group-by) key: the JVM twin of
 * {@code udfs/ledger.py} {@code PeriodLedger}, a plain state machine with no Flink in it.
 *
 * <p>Input is minute partials (each one merged into its period: a step of a minute's on-time
 * events or one late event) and the event-time watermark. A period is final exactly when
 * {@code period_end + grace <= watermark}; a final is emitted once ({@link #finalize}) and its state
 * dropped; a partial for a final period comes back as a {@link Correction}; every partial counts
 * in exactly one of (final, correction). Mutable, one instance per key.
 */
public final class PeriodLedger {
    /** Tag of the binary form ({@link #write}). */
    private static final byte FORMAT = 2;
    /**
     * The form before {@link #FORMAT}: each period also carried a version (var-long) and a dirty flag
     * (boolean) for provisional output nothing read. Savepoints hold it: {@link #read} still accepts it.
     */
    private static final byte FORMAT_WITH_VERSION = 1;

    private final Aggregation aggregation;
    private final int kindCode;
    private final String zoneId;
    private final int anchor;
    private final long graceMs;
    /** Open periods by start: few (usually one or two), iterated in start order as Python sorts them. */
    private final TreeMap<Long, OpenPeriod> open = new TreeMap<>();

    /** The last {@link #periodOf} answer: rows of one key mostly repeat their minute. */
    private long cachedMinuteMs;
    private Periods.Bounds cachedBounds;

    public PeriodLedger(Aggregation a, String kind, String zoneId, int anchor, long graceMs) {
        this.aggregation = a;
        this.kindCode = Periods.kindCode(kind, anchor);
        Periods.rules(zoneId); // an unknown zone fails here, as Python's BillingCycle does
        this.zoneId = zoneId;
        this.anchor = anchor;
        this.graceMs = graceMs;
    }

    public record Correction(long periodStartMs, long periodEndMs, long minuteMs, Partial partial) {}

    public record Final(long periodStartMs, long periodEndMs, Partial partial, long finalizedAtWatermarkMs) {}

    private static final class OpenPeriod {
        final long endMs;
        Partial partial;

        OpenPeriod(long endMs, Partial partial) {
            this.endMs = endMs;
            this.partial = partial;
        }
    }

    /** {startMs, endMs} of the billing period containing a minute. */
    public long[] periodOf(long minuteMs) {
        Periods.Bounds bounds = boundsOf(minuteMs);
        return new long[] {bounds.startMs, bounds.endMs};
    }

    private Periods.Bounds boundsOf(long minuteMs) {
        Periods.Bounds bounds = cachedBounds;
        if (bounds == null || cachedMinuteMs != minuteMs) {
            bounds = Periods.bounds(minuteMs, kindCode, zoneId, anchor);
            cachedBounds = bounds;
            cachedMinuteMs = minuteMs;
        }
        return bounds;
    }

    public boolean isFinal(long periodEndMs, long watermarkMs) {
        return finalAt(periodEndMs) <= watermarkMs;
    }

    /** {@code periodEndMs + grace}, saturated: Python's integers do not overflow, so neither may this sum. */
    private long finalAt(long periodEndMs) {
        long sum = periodEndMs + graceMs;
        if (((periodEndMs ^ sum) & (graceMs ^ sum)) < 0) {
            return graceMs > 0 ? Long.MAX_VALUE : Long.MIN_VALUE;
        }
        return sum;
    }

    /** Merge a minute partial into its period; a correction (not merged) when that period is already final. */
    public Correction apply(long minuteMs, Partial partial, long watermarkMs) {
        Periods.Bounds bounds = boundsOf(minuteMs);
        if (isFinal(bounds.endMs, watermarkMs)) {
            return new Correction(bounds.startMs, bounds.endMs, minuteMs, partial);
        }
        OpenPeriod period = open.get(bounds.startMs);
        if (period == null) {
            open.put(bounds.startMs, new OpenPeriod(bounds.endMs, Partial.empty(aggregation).merge(partial)));
        } else {
            period.partial = period.partial.merge(partial);
        }
        return null;
    }

    /** Emit (once, in start order) and drop every open period whose end + grace the watermark has reached. */
    public List<Final> finalize(long watermarkMs) {
        List<Final> finals = null;
        Iterator<Map.Entry<Long, OpenPeriod>> periods = open.entrySet().iterator();
        while (periods.hasNext()) {
            Map.Entry<Long, OpenPeriod> entry = periods.next();
            OpenPeriod period = entry.getValue();
            if (isFinal(period.endMs, watermarkMs)) {
                if (finals == null) {
                    finals = new ArrayList<>(2);
                }
                finals.add(new Final(entry.getKey(), period.endMs, period.partial, watermarkMs));
                periods.remove();
            }
        }
        return finals == null ? List.of() : finals;
    }

    public boolean hasOpenPeriods() {
        return !open.isEmpty();
    }

    public boolean isOpen(long periodStartMs) {
        return open.containsKey(periodStartMs);
    }

    /**
     * The open periods, compactly, for keyed state. The configuration (aggregation, cycle, grace)
     * is not written: it comes from the job's configuration when the state is read.
     */
    public void write(DataOutput out) throws IOException {
        out.writeByte(FORMAT);
        Partial.writeVarLong(out, open.size());
        for (Map.Entry<Long, OpenPeriod> entry : open.entrySet()) {
            OpenPeriod period = entry.getValue();
            out.writeLong(entry.getKey());
            out.writeLong(period.endMs);
            period.partial.write(out);
        }
    }

    /** The inverse of {@link #write}, with the key's configuration. */
    public static PeriodLedger read(Aggregation a, String kind, String zoneId, int anchor, long graceMs, DataInput in)
            throws IOException {
        byte format = in.readByte();
        if (format != FORMAT && format != FORMAT_WITH_VERSION) {
            throw new IOException("unknown PeriodLedger format " + format);
        }
        PeriodLedger ledger = new PeriodLedger(a, kind, zoneId, anchor, graceMs);
        long size = Partial.readVarLong(in);
        for (long i = 0; i < size; i++) {
            long start = in.readLong();
            long end = in.readLong();
            if (format == FORMAT_WITH_VERSION) {
                Partial.readVarLong(in); // version
                in.readBoolean(); // dirty
            }
            ledger.open.put(start, new OpenPeriod(end, Partial.read(a, in)));
        }
        return ledger;
    }
}
