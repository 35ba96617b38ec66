-- raw_events: every well-formed usage event the pipeline read from Kafka, kept for audit,
-- replay and reconciliation (brief, invariant 8). Columns follow schemas/usage_event.v1.json;
-- tests/unit/test_schema_agreement.py checks that they agree.
--
-- Engine: ReplacingMergeTree without a version column. Raw rows are never updated; the only
-- rows that collapse are byte-identical re-deliveries of the same Kafka record (the loader may
-- write a batch twice after a crash), because (kafka_topic, kafka_partition, kafka_offset) is
-- in the sorting key. Producer-side duplicates (same event_id, different offsets) are kept as
-- separate rows and flagged by `status`; they are evidence, not noise.
-- ORDER BY: per-customer scans by meter and time first (replay, reconciliation, "show me the
-- events behind this total"), then the Kafka coordinates that make a row unique.
-- PARTITION BY day of event time: replays and retention act on whole days.
-- No TTL: retention is a business decision (invoices are disputed months later); add one in a
-- later migration when the operator sets it.
CREATE TABLE raw_events
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
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (customer_id, event_type, event_time, kafka_topic, kafka_partition, kafka_offset);
