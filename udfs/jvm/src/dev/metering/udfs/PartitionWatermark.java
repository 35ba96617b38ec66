package dev.metering.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;
import java.util.HashMap;
import java.util.Map;

/**
 * {@code metering_partition_watermark(partition, offset, rowtime, lag_millis)}: the watermark (epoch
 * milliseconds) of the Kafka partition a record was read from, as it stood before the record: the
 * newest {@code rowtime} of the partition's earlier records minus {@code lag_millis}, or NULL
 * before the partition's first record with a real event time.
 *
 * <p>It decides whether an event is late by its own partition's progress, which depends only on
 * the order of that partition's records, never on how the source interleaves partitions
 * (docs/semantics.md, "Backfills"). Evaluated in the operator chained to the source, which reads
 * each partition's records in offset order; an instance keeps the newest event time per
 * partition it has seen. A second call for the same record (same partition and offset) returns
 * the same value. Not checkpointed: after a restore a partition's watermark starts again from
 * the first record read, like Flink's own watermarks.
 */
public final class PartitionWatermark extends ScalarFunction {
    /** Per partition: the newest rowtime so far, the last offset seen and the value returned for it. */
    private static final class Progress {
        long newest = Long.MIN_VALUE;
        long lastOffset = Long.MIN_VALUE;
        Long lastResult;
    }

    private final Map<Integer, Progress> partitions = new HashMap<>();

    public @DataTypeHint("BIGINT") Long eval(
            Integer partition, Long offset, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant rowtime, Long lagMillis) {
        if (partition == null || offset == null) {
            return null;
        }
        Long rowtimeMillis = rowtime == null ? null : rowtime.toEpochMilli();
        Progress progress = partitions.computeIfAbsent(partition, p -> new Progress());
        if (offset == progress.lastOffset) {
            return progress.lastResult;
        }
        if (offset < progress.lastOffset) { // read again from an earlier offset: start over
            progress.newest = Long.MIN_VALUE;
        }
        Long result = progress.newest == Long.MIN_VALUE ? null : progress.newest - (lagMillis == null ? 0L : lagMillis);
        // The epoch is the rowtime of a record without a usable event time: it moves nothing.
        if (rowtimeMillis != null && rowtimeMillis > 0L && rowtimeMillis > progress.newest) {
            progress.newest = rowtimeMillis;
        }
        progress.lastOffset = offset;
        progress.lastResult = result;
        return result;
    }

    @Override
    public boolean isDeterministic() {
        return false;
    }
}
