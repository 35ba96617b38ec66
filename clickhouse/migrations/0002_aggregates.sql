-- Aggregates, finals, corrections, dead letters and duplicates written by the loader from the
-- job's Kafka topics (docs/semantics.md explains each). Every table is idempotent under
-- re-delivery: the loader may write a batch again after a crash (it commits Kafka offsets only
-- after ClickHouse accepted the batch), so each row has a deterministic key and engines collapse
-- repeats. Readers use the views below, which return one current row per key (FINAL).

-- aggregate_segments: the minute "segments" from the job. Per (key, minute) there is one
-- on-time segment, re-emitted with a growing `version` (the CUMULATE step end) while the minute
-- is open, plus one segment per late event ('late:<event_id>', version 1). A minute's value is
-- the combination of its segments' latest versions.
-- Engine: ReplacingMergeTree(version) keeps the latest version per segment; re-delivered rows are
-- identical and collapse too. ORDER BY leads with customer_id: every dashboard query is scoped by
-- customer. PARTITION BY month of the minute: replays and retention act on whole months.
-- TTL: none; aggregates are small and invoices are disputed late.
CREATE TABLE aggregate_segments
(
    customer_id      String,
    meter            LowCardinality(String),
    group_key        String,
    aggregation      LowCardinality(String),
    minute           DateTime64(3, 'UTC'),
    day_start        DateTime64(3, 'UTC'),
    period_start     DateTime64(3, 'UTC'),
    period_end       DateTime64(3, 'UTC'),
    segment          String,
    version          UInt64,
    value            Decimal(38, 9),
    event_count      Int64,
    sum_value        Decimal(38, 9),
    max_value        Nullable(Decimal(38, 9)),
    min_value        Nullable(Decimal(38, 9)),
    distinct_values  Array(String),
    latest_ms        Nullable(Int64),
    latest_value     Nullable(Decimal(38, 9)),
    loaded_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (customer_id, meter, group_key, minute, segment);

-- period_finals: the invoice-ready total per (customer, meter, group, period). The job emits a
-- final exactly once; `revision` exists for replays (a recomputation writes a higher revision and
-- readers see the highest). ReplacingMergeTree(revision) makes a re-delivered final harmless.
CREATE TABLE period_finals
(
    customer_id                String,
    meter                      LowCardinality(String),
    group_key                  String,
    aggregation                LowCardinality(String),
    period_start               DateTime64(3, 'UTC'),
    period_end                 DateTime64(3, 'UTC'),
    value                      Decimal(38, 9),
    event_count                Int64,
    finalized_at_watermark     DateTime64(3, 'UTC'),
    revision                   UInt32 DEFAULT 1,
    loaded_at                  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, group_key, period_start);

-- corrections: changes that arrived after their period was final, for the next invoice. Keyed by
-- the Kafka coordinates of the correction record, so re-delivery collapses; `sign` is -1 for the
-- retraction half of an update (sum/count meters), +1 otherwise.
CREATE TABLE corrections
(
    customer_id      String,
    meter            LowCardinality(String),
    group_key        String,
    aggregation      LowCardinality(String),
    period_start     DateTime64(3, 'UTC'),
    period_end       DateTime64(3, 'UTC'),
    minute           DateTime64(3, 'UTC'),
    sign             Int8,
    value            Decimal(38, 9),
    event_count      Int64,
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    loaded_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, group_key, period_start, kafka_partition, kafka_offset);

-- dead_letters: records the job refused, with the reason code and the original payload. Keyed by
-- the source record's Kafka coordinates (+ meter for meter-level refusals).
CREATE TABLE dead_letters
(
    reason           LowCardinality(String),
    meter            LowCardinality(String),
    customer_id      String,
    event_id         String,
    payload          String CODEC(ZSTD(3)),
    source_partition UInt32,
    source_offset    UInt64,
    source_time      DateTime64(3, 'UTC'),
    loaded_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(source_time)
ORDER BY (source_partition, source_offset, meter);

-- duplicates: per (customer, event_id) seen more than once within the dedup retention: how often
-- and how many different payloads (variants > 1 is a conflict: a producer bug). Upserts from the
-- job; ReplacingMergeTree(seen) keeps the highest count.
CREATE TABLE duplicates
(
    customer_id      String,
    event_id         String,
    seen             UInt64,
    variants         UInt64,
    last_seen        DateTime64(3, 'UTC'),
    loaded_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(seen)
ORDER BY (customer_id, event_id);

-- minute_usage: one row per (customer, meter, group, minute), combining the current version of
-- every segment. (Inputs are renamed in a subquery: ClickHouse aliases are query-wide, and an
-- output alias equal to an input column would nest aggregates.)
CREATE VIEW minute_usage AS
SELECT
    customer_id, meter, group_key, aggregation, minute,
    any(d0) AS day_start, any(p0) AS period_start, any(e0) AS period_end,
    multiIf(
        aggregation = 'sum', sum(s0),
        aggregation = 'count', toDecimal128(sum(n0), 9),
        aggregation = 'max', max(hi0),
        aggregation = 'min', min(lo0),
        aggregation = 'unique_count', toDecimal128(length(groupUniqArrayArray(dv0)), 9),
        argMax(lv0, lm0)
    ) AS value,
    sum(n0) AS event_count,
    groupUniqArrayArray(dv0) AS distinct_values,
    argMax(lv0, lm0) AS latest_value,
    max(lm0) AS latest_ms
FROM
(
    SELECT customer_id, meter, group_key, aggregation, minute, day_start AS d0, period_start AS p0, period_end AS e0,
           sum_value AS s0, event_count AS n0, max_value AS hi0, min_value AS lo0, distinct_values AS dv0,
           latest_value AS lv0, latest_ms AS lm0
    FROM aggregate_segments FINAL
)
GROUP BY customer_id, meter, group_key, aggregation, minute;

-- period_usage: per billing period, the final where one exists, else the running (provisional)
-- total from the minute segments. `status` is 'final' or 'provisional'; invoices read only finals.
CREATE VIEW period_usage AS
SELECT
    p.customer_id AS customer_id, p.meter AS meter, p.group_key AS group_key, p.aggregation AS aggregation,
    p.period_start AS period_start, p.period_end AS period_end,
    if(f.customer_id = '', p.running_value, f.value) AS value,
    if(f.customer_id = '', p.running_count, f.event_count) AS event_count,
    if(f.customer_id = '', 'provisional', 'final') AS status,
    p.last_minute AS as_of_minute
FROM
(
    SELECT
        customer_id, meter, group_key, aggregation, period_start, any(e1) AS period_end,
        multiIf(
            aggregation IN ('sum', 'count'), sum(v1),
            aggregation = 'max', max(v1),
            aggregation = 'min', min(v1),
            aggregation = 'unique_count', toDecimal128(length(groupUniqArrayArray(dv1)), 9),
            argMax(lv1, lm1)
        ) AS running_value,
        sum(n1) AS running_count,
        max(m1) AS last_minute
    FROM
    (
        SELECT customer_id, meter, group_key, aggregation, period_start, period_end AS e1, value AS v1,
               event_count AS n1, distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1, minute AS m1
        FROM minute_usage
    )
    GROUP BY customer_id, meter, group_key, aggregation, period_start
) AS p
LEFT JOIN (SELECT * FROM period_finals FINAL) AS f
    ON f.customer_id = p.customer_id AND f.meter = p.meter AND f.group_key = p.group_key AND f.period_start = p.period_start;
