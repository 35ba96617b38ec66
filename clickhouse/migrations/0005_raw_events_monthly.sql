-- raw_events: monthly partitions instead of daily ones (issue #25). Same columns, engine and
-- ORDER BY as 0001; only PARTITION BY changes, so the rows are copied as they are.
--
-- Why monthly: ClickHouse refuses an INSERT block that touches more than
-- `max_partitions_per_insert_block` partitions (default 100; `Code: 252 … Too many partitions for
-- single INSERT block`). With daily partitions a backfill batch spanning more than 100 days of
-- event time could not be inserted at all; with monthly ones 100 partitions are 8 years, and the
-- loader still splits a batch into inserts of at most 50 months (jobs/loader.py,
-- MAX_PARTITIONS_PER_INSERT). Monthly parts also keep the part count low for years of history
-- (ClickHouse recommends well under 1,000–10,000 partitions per table).
-- Retention and replays act on months: `ALTER TABLE raw_events DROP PARTITION 202401` removes a
-- month; replays select by event time through the ORDER BY, which needs no partition.
-- ORDER BY, engine and the absence of a TTL are explained in 0001 and unchanged.
--
-- Views that read raw_events (visible_dead_letters, pipeline_health, raw_event_flags in 0004)
-- refer to it by name and read the new table once the names are swapped; no materialized view
-- reads raw_events. Run this migration with the loader stopped (`metering migrate` before
-- `metering load`, as the compose file and the Kubernetes init container do; with chDB the
-- directory lock makes it so): rows inserted into the old table between the copy and the swap
-- would be dropped with it.
CREATE TABLE raw_events_monthly
(
    event_id         String,
    customer_id      String,
    event_type       LowCardinality(String),
    event_time       DateTime64(3, 'UTC'),
    quantity         Decimal(38, 9),
    properties       Map(String, String),
    resource         String DEFAULT '',
    user_id          String DEFAULT '',
    region           LowCardinality(String) DEFAULT '',
    source           LowCardinality(String) DEFAULT '',
    schema_version   UInt16 DEFAULT 1,
    status           LowCardinality(String) DEFAULT 'accepted',
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    received_at      DateTime64(3, 'UTC'),
    payload          String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (customer_id, event_type, event_time, kafka_topic, kafka_partition, kafka_offset);

-- The copy itself may span any number of months (a database holding more than 8 years of events
-- would hit the limit above): the limit is lifted for this one statement. No FINAL: rows not yet
-- collapsed are copied as they are and collapse in the new table (same sorting key).
INSERT INTO raw_events_monthly
SELECT * FROM raw_events
SETTINGS max_partitions_per_insert_block = 0;

-- The names swap with one RENAME of both tables, as 0004 did for period_finals. EXCHANGE TABLES
-- works on chDB 26.9 here, but it needs renameat2(RENAME_EXCHANGE) from the filesystem, which NFS,
-- EFS, CephFS, ZFS < 2.2 and Docker-for-Mac volumes lack ("System call renameat2() is not
-- supported", ClickHouse issues #24439 and #96835): a migration must run wherever ClickHouse does.
RENAME TABLE raw_events TO raw_events_daily_before_0005, raw_events_monthly TO raw_events;

DROP TABLE raw_events_daily_before_0005;
