-- Replays and revisions (docs/replay.md explains the rules with a worked example).
--
-- A replay recomputes whole billing periods of (customer, meter) from raw_events with a (possibly
-- fixed) configuration and writes the result as a new **revision**: rows tagged with a revision
-- number that no reader sees until the replay commits. Committing is one INSERT of the replay's
-- scope rows into `replay_scope` (an unpartitioned table, so one block is atomic); from then on the
-- `visible_*` views return that revision for those (customer, meter, period) keys and nothing of
-- the earlier ones, which stay stored for audit. Revision 1 is the live pipeline.
--
-- Every reader (the 0002/0003 views, the named queries, the quality checks) reads the `visible_*`
-- views below instead of the base tables; this migration re-creates the earlier views on top of
-- them with otherwise unchanged SQL.

-- Segments carry the revision that wrote them (live rows: 1). Replay segments are named
-- 'replay:<revision>', so revisions never collapse into each other.
ALTER TABLE aggregate_segments ADD COLUMN revision UInt32 DEFAULT 1 AFTER version;

-- A late-event correction names the event it came from (''  for the rare correction of an on-time
-- window step), so a replay that counted that event can supersede it.
ALTER TABLE corrections ADD COLUMN event_id String DEFAULT '' AFTER event_count;

-- period_finals keeps every revision: the revision joins the sorting key (before, a higher
-- revision replaced the lower one at merge time, losing the audit trail). Same columns; the rows
-- are copied, then the tables swap names.
CREATE TABLE period_finals_0004
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, group_key, period_start, revision);

INSERT INTO period_finals_0004 SELECT * FROM period_finals FINAL;

RENAME TABLE period_finals TO period_finals_before_0004, period_finals_0004 TO period_finals;

DROP TABLE period_finals_before_0004;

-- replay_runs: one row per replay and state ('started', then 'committed'); the audit record of
-- who replayed what, why, from which source, with which configuration and cut.
CREATE TABLE replay_runs
(
    revision        UInt32,
    state           LowCardinality(String),
    state_rank      UInt8,
    started_at      DateTime64(3, 'UTC'),
    updated_at      DateTime64(3, 'UTC'),
    range_from      DateTime64(3, 'UTC'),
    range_to        DateTime64(3, 'UTC'),
    customers       Array(String),
    meters          Array(String),
    reason          String,
    source          LowCardinality(String),
    config_sha256   String,
    cut             Map(UInt32, UInt64),
    events_examined UInt64,
    periods         UInt64,
    adjustments     UInt64,
    seconds         Float64
)
ENGINE = ReplacingMergeTree(state_rank)
ORDER BY revision;

-- replay_events: per replayed (event, meter), what the replay decided: counted (with its value,
-- group and minute) or refused (with the reason). The audit trail from a replayed total back to
-- its events, and the identity that supersedes the live pipeline's corrections and meter-level
-- dead letters for those events.
CREATE TABLE replay_events
(
    revision         UInt32,
    customer_id      String,
    event_id         String,
    meter            LowCardinality(String),
    event_time       DateTime64(3, 'UTC'),
    minute           DateTime64(3, 'UTC'),
    group_values     Array(String),
    value            Nullable(Decimal(38, 9)),
    distinct_value   String,
    refusal          LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64
)
ENGINE = MergeTree
PARTITION BY revision
ORDER BY (customer_id, event_id, meter, revision);

-- replay_scope: the commit record. One row per (customer, meter, billing period) a committed
-- replay rewrote; the highest revision per key is the visible one.
CREATE TABLE replay_scope
(
    revision      UInt32,
    customer_id   String,
    meter         LowCardinality(String),
    period_start  DateTime64(3, 'UTC'),
    period_end    DateTime64(3, 'UTC'),
    committed_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (customer_id, meter, period_start, revision);

-- adjustments: a final a replay changed, never silently: the old and new totals for the next
-- invoice. `superseded_corrections` / `superseded_correction_value` are the live corrections of
-- the period the new revision absorbed (their events are counted in the new final).
CREATE TABLE adjustments
(
    customer_id                  String,
    meter                        LowCardinality(String),
    group_key                    String,
    aggregation                  LowCardinality(String),
    period_start                 DateTime64(3, 'UTC'),
    period_end                   DateTime64(3, 'UTC'),
    old_revision                 UInt32,
    revision                     UInt32,
    old_total                    Nullable(Decimal(38, 9)),
    new_total                    Nullable(Decimal(38, 9)),
    old_event_count              Int64,
    new_event_count              Int64,
    superseded_corrections       UInt64,
    superseded_correction_value  Decimal(38, 9),
    reason                       String,
    created_at                   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, meter, group_key, period_start, revision);

-- The visible revision of every (customer, meter, period): the highest committed replay, else 1.
CREATE VIEW current_revisions AS
SELECT customer_id, meter, period_start, max(revision) AS revision
FROM replay_scope
GROUP BY customer_id, meter, period_start;

CREATE VIEW visible_segments AS
SELECT *
FROM aggregate_segments FINAL
WHERE (revision = 1 AND (customer_id, meter, period_start) NOT IN (SELECT customer_id, meter, period_start FROM replay_scope))
   OR (customer_id, meter, period_start, revision) IN (SELECT customer_id, meter, period_start, revision FROM current_revisions);

CREATE VIEW visible_finals AS
SELECT *
FROM period_finals FINAL
WHERE (revision = 1 AND (customer_id, meter, period_start) NOT IN (SELECT customer_id, meter, period_start FROM replay_scope))
   OR (customer_id, meter, period_start, revision) IN (SELECT customer_id, meter, period_start, revision FROM current_revisions);

-- A correction is superseded once a committed replay of its period examined its event (the event
-- is then counted in, or refused by, the new revision).
CREATE VIEW visible_corrections AS
SELECT *
FROM corrections FINAL
WHERE event_id = ''
   OR (customer_id, event_id, meter) NOT IN (
        SELECT customer_id, event_id, meter FROM replay_events
        WHERE revision IN (SELECT revision FROM replay_scope)
          AND (customer_id, event_id) IN (SELECT customer_id, event_id FROM corrections WHERE event_id != ''));

-- Dead letters: record-level refusals as the job wrote them; a meter-level refusal is replaced by
-- the decision of the newest committed replay that examined the (event, meter): nothing if it
-- counted the event, its own refusal otherwise.
CREATE VIEW visible_dead_letters AS
SELECT reason, meter, customer_id, event_id, payload, source_partition, source_offset, source_time, loaded_at
FROM dead_letters FINAL
WHERE meter = ''
   OR (customer_id, event_id, meter) NOT IN (
        SELECT customer_id, event_id, meter FROM replay_events
        WHERE revision IN (SELECT revision FROM replay_scope)
          AND (customer_id, event_id) IN (SELECT customer_id, event_id FROM dead_letters WHERE meter != ''))
UNION ALL
SELECT argMax(e.refusal, e.revision) AS reason, e.meter AS meter, e.customer_id AS customer_id, e.event_id AS event_id,
       any(r.payload) AS payload, any(e.kafka_partition) AS source_partition, any(e.kafka_offset) AS source_offset,
       any(r.received_at) AS source_time, max(s.committed_at) AS loaded_at
FROM replay_events AS e
INNER JOIN replay_scope AS s ON s.revision = e.revision AND s.customer_id = e.customer_id AND s.meter = e.meter
INNER JOIN raw_events AS r ON r.customer_id = e.customer_id AND r.event_id = e.event_id
    AND r.kafka_partition = e.kafka_partition AND r.kafka_offset = e.kafka_offset
GROUP BY e.customer_id, e.event_id, e.meter
HAVING reason != '';

-- The earlier views, re-created over the visible_* views (otherwise unchanged).

CREATE OR REPLACE VIEW minute_usage AS
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
    FROM visible_segments
)
GROUP BY customer_id, meter, group_key, aggregation, minute;

CREATE OR REPLACE VIEW period_usage AS
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
LEFT JOIN (SELECT * FROM visible_finals) AS f
    ON f.customer_id = p.customer_id AND f.meter = p.meter AND f.group_key = p.group_key AND f.period_start = p.period_start;

CREATE OR REPLACE VIEW customer_minutes AS
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
    max(lm0) AS latest_ms,
    max(la0) AS loaded_at
FROM
(
    SELECT customer_id, meter, group_key, aggregation, minute, day_start AS d0, period_start AS p0, period_end AS e0,
           sum_value AS s0, event_count AS n0, max_value AS hi0, min_value AS lo0, distinct_values AS dv0,
           latest_value AS lv0, latest_ms AS lm0, loaded_at AS la0
    FROM visible_segments
    WHERE customer_id = {customer:String}
      AND minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}
)
GROUP BY customer_id, meter, group_key, aggregation, minute;

CREATE OR REPLACE VIEW customer_finals AS
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value, event_count, revision,
       finalized_at_watermark, loaded_at
FROM visible_finals
WHERE customer_id = {customer:String};

CREATE OR REPLACE VIEW dead_letter_reasons AS
SELECT reason, count() AS total, countIf(source_time >= now64(3) - INTERVAL 1 DAY) AS last_24h, max(source_time) AS newest
FROM visible_dead_letters
GROUP BY reason;

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
    (SELECT maxOrNull(newest_source_time) FROM loader_batches) AS loader_newest_source_time;

-- raw_event_flags: every raw event with what the pipeline made of it, derived (raw_events itself is
-- never updated): 'dead_letter' (refused as a whole; `reason` says why), 'duplicate' (a later
-- occurrence of a (customer_id, event_id) already seen, in Kafka order), else 'accepted'.
-- Records that are not even a JSON object with the required fields cannot fill raw_events' columns;
-- they are kept with their original bytes and Kafka coordinates in dead_letters.
CREATE VIEW raw_event_flags AS
SELECT
    r.*,
    multiIf(d.reason != '', 'dead_letter', occurrence > 1, 'duplicate', 'accepted') AS flag,
    d.reason AS reason
FROM
(
    SELECT *,
           row_number() OVER (PARTITION BY customer_id, event_id, (kafka_partition, kafka_offset) IN (
               SELECT source_partition, source_offset FROM dead_letters WHERE meter = '')
             ORDER BY kafka_partition, kafka_offset) AS occurrence
    FROM raw_events FINAL
) AS r
LEFT JOIN (SELECT source_partition, source_offset, any(reason) AS reason FROM dead_letters FINAL WHERE meter = ''
           GROUP BY source_partition, source_offset) AS d
    ON d.source_partition = r.kafka_partition AND d.source_offset = r.kafka_offset;
