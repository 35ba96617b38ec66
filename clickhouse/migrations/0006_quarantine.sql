-- quarantine: records the loader could not store, with why, so that loading goes on (brief,
-- invariant 11: no single record or store error is retried forever). A record lands here when
--   * its row function raised (stage 'convert': the record does not have the shape its topic
--     promises, e.g. a segment without `meter`), or
--   * ClickHouse, or the client serializing the row for it, refused the row for what it is
--     (stage 'insert': a quantity beyond Decimal(38, 9), a negative value for a UInt column,
--     CANNOT_PARSE_*, …). The loader bisects a refused insert down to the refused rows; only
--     those come here, the rest of the batch is stored.
-- Errors about the store rather than the rows (connection refused, timeouts, memory, too many
-- parts while merges catch up, a missing table) are retried with backoff instead and never
-- quarantine anything (jobs/loader.py, classify_insert_error). docs/operations.md says how to
-- inspect the table and how to re-load its records after a fix.
--
-- One row per Kafka record: `record` is the record's value as it was read (bytes, '' for a
-- tombstone), `record_key` its key; `row` the converted row as JSON ('' when the conversion
-- failed). `error_code` is ClickHouse's error code (`Code: NNN`), 0 when the refusal came from
-- Python (then `error_name` is the exception type); `error` the full message.
-- Engine: ReplacingMergeTree keyed by the record's Kafka coordinates: the loader commits offsets
-- only after a batch (quarantine rows included) was stored, so a crash re-delivers the batch and
-- the repeat collapses. Unpartitioned: the table stays small (a record here is a bug or a bad
-- producer), and `quarantined_at` is not a key that re-delivery keeps. No TTL: a quarantined
-- record is money not yet counted; delete rows when they are re-loaded or written off.
CREATE TABLE quarantine
(
    target_table      LowCardinality(String),
    stage             LowCardinality(String),
    error_code        Int32,
    error_name        LowCardinality(String),
    error             String,
    row               String CODEC(ZSTD(3)),
    record            String CODEC(ZSTD(3)),
    record_key        String,
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    source_time       DateTime64(3, 'UTC'),
    quarantined_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset);

-- pipeline_health gains `quarantined` (records in quarantine), as its last column: the earlier
-- columns keep their names and order (the dashboard, Grafana and `metering query health` read
-- them). Otherwise unchanged from 0004.
CREATE OR REPLACE VIEW pipeline_health AS
SELECT
    (SELECT count() FROM raw_events FINAL) AS raw_events,
    (SELECT count() FROM visible_dead_letters) AS dead_letters,
    (SELECT countIf(source_time >= now64(3) - INTERVAL 1 DAY) FROM visible_dead_letters) AS dead_letters_24h,
    (SELECT count() FROM duplicates FINAL) AS duplicated_ids,
    (SELECT sum(seen - 1) FROM duplicates FINAL) AS duplicates_dropped,
    (SELECT countIf(variants > 1) FROM duplicates FINAL) AS conflicting_ids,
    (SELECT count() FROM visible_corrections) AS corrections,
    (SELECT count() FROM visible_finals) AS finals,
    (SELECT count() FROM customer_directory FINAL) AS customers,
    (SELECT maxOrNull(batch_at) FROM loader_batches) AS loader_last_batch,
    (SELECT if(count() = 0, NULL, dateDiff('millisecond', max(batch_at), now64(3)) / 1000) FROM loader_batches) AS loader_idle_seconds,
    (SELECT argMaxOrNull(consumer_lag, batch_at) FROM loader_batches) AS loader_consumer_lag,
    (SELECT maxOrNull(newest_source_time) FROM loader_batches) AS loader_newest_source_time,
    (SELECT count() FROM quarantine FINAL) AS quarantined;
