-- Dashboard views (docs/dashboards.md explains each with an example query).
--
-- Row-level scoping: every view that returns a customer's usage is a *parameterized view* whose
-- `customer` parameter is compared for equality inside the scan of the base table, e.g.
--     SELECT * FROM customer_usage(customer = 'acme')
-- A query cannot read such a view without naming exactly one customer (ClickHouse refuses a
-- missing parameter), and no filter placed outside the view can widen it. The scan is also the
-- fast path: every base table's ORDER BY leads with customer_id.
--
-- One current version per key: segments are read FINAL (latest version per segment), finals
-- FINAL (highest revision), as in 0002.
--
-- Value combination: a bucket's value is the merge of its minutes' values, by aggregation:
-- sum/count add, max/min take the extreme, unique_count counts the union of the distinct sets,
-- latest takes the value with the newest event time. Inputs are renamed in subqueries because
-- ClickHouse aliases are query-wide (an output alias equal to an input column nests aggregates).

-- loader_batches: one row per batch the loader committed (for pipeline health: loader lag and
-- throughput). Appended after the batch's rows were accepted; kept 30 days.
CREATE TABLE loader_batches
(
    loader_id           LowCardinality(String),
    batch_at            DateTime64(3, 'UTC'),
    rows                UInt64,
    rows_by_table       Map(String, UInt64),
    newest_source_time  DateTime64(3, 'UTC'),
    consumer_lag        UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(batch_at)
ORDER BY (loader_id, batch_at)
TTL toDateTime(batch_at) + INTERVAL 30 DAY;

-- customer_directory: which customers have usage, for operators' pickers (not customer-facing).
-- Maintained from aggregate_segments by a materialized view; min/max merge, so re-delivered
-- segments are harmless.
CREATE TABLE customer_directory
(
    customer_id   String,
    first_minute  SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_minute   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    meters        SimpleAggregateFunction(groupUniqArrayArray, Array(String))
)
ENGINE = AggregatingMergeTree
ORDER BY customer_id;

CREATE MATERIALIZED VIEW customer_directory_feed TO customer_directory AS
SELECT customer_id, min(minute) AS first_minute, max(minute) AS last_minute, groupUniqArray(toString(meter)) AS meters
FROM aggregate_segments
GROUP BY customer_id;

INSERT INTO customer_directory
SELECT customer_id, min(minute), max(minute), groupUniqArray(toString(meter))
FROM aggregate_segments
GROUP BY customer_id;

CREATE VIEW customers AS
SELECT customer_id, min(f) AS first_minute, max(l) AS last_minute, arraySort(groupUniqArrayArray(ms)) AS meters
FROM (SELECT customer_id, first_minute AS f, last_minute AS l, meters AS ms FROM customer_directory)
GROUP BY customer_id;

-- customer_minutes(customer, from, to): one row per (meter, group, minute) in [from, to), the
-- current version of every segment combined.
CREATE VIEW customer_minutes AS
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
    FROM aggregate_segments FINAL
    WHERE customer_id = {customer:String}
      AND minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}
)
GROUP BY customer_id, meter, group_key, aggregation, minute;

-- customer_series_hour(customer, from, to): UTC hours.
CREATE VIEW customer_series_hour AS
SELECT
    customer_id, meter, group_key, aggregation, toStartOfHour(m1) AS bucket,
    multiIf(
        aggregation IN ('sum', 'count'), sum(v1),
        aggregation = 'max', max(v1),
        aggregation = 'min', min(v1),
        aggregation = 'unique_count', toDecimal128(length(groupUniqArrayArray(dv1)), 9),
        argMax(lv1, lm1)
    ) AS value,
    sum(n1) AS event_count
FROM
(
    SELECT customer_id, meter, group_key, aggregation, minute AS m1, value AS v1, event_count AS n1,
           distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
    FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
)
GROUP BY customer_id, meter, group_key, aggregation, bucket;

-- customer_series_day(customer, from, to): days in the customer's time zone (bucket = local
-- midnight as a UTC instant; DST days are 23 or 25 hours long).
CREATE VIEW customer_series_day AS
SELECT
    customer_id, meter, group_key, aggregation, d1 AS bucket,
    multiIf(
        aggregation IN ('sum', 'count'), sum(v1),
        aggregation = 'max', max(v1),
        aggregation = 'min', min(v1),
        aggregation = 'unique_count', toDecimal128(length(groupUniqArrayArray(dv1)), 9),
        argMax(lv1, lm1)
    ) AS value,
    sum(n1) AS event_count
FROM
(
    SELECT customer_id, meter, group_key, aggregation, day_start AS d1, value AS v1, event_count AS n1,
           distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
    FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
)
GROUP BY customer_id, meter, group_key, aggregation, bucket;

-- customer_finals(customer): the invoice-ready totals, highest revision per key.
CREATE VIEW customer_finals AS
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value, event_count, revision,
       finalized_at_watermark, loaded_at
FROM period_finals FINAL
WHERE customer_id = {customer:String};

-- customer_periods(customer, from, to): every billing period starting in [from, to), with the
-- final total where the period is final and the running total otherwise (status 'provisional',
-- as of the newest minute with usage and the time that minute was loaded).
CREATE VIEW customer_periods AS
SELECT
    p.customer_id AS customer_id, p.meter AS meter, p.group_key AS group_key, p.aggregation AS aggregation,
    p.period_start AS period_start, p.period_end AS period_end,
    if(f.customer_id = '', p.running_value, f.value) AS value,
    if(f.customer_id = '', p.running_count, f.event_count) AS event_count,
    if(f.customer_id = '', 'provisional', 'final') AS status,
    if(f.customer_id = '', toUInt32(0), f.revision) AS revision,
    p.as_of_minute AS as_of_minute,
    p.as_of_loaded AS as_of_loaded
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
        max(m1) AS as_of_minute,
        max(la1) AS as_of_loaded
    FROM
    (
        SELECT customer_id, meter, group_key, aggregation, period_start, period_end AS e1, value AS v1,
               event_count AS n1, distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1, minute AS m1,
               loaded_at AS la1
        FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'))
        WHERE period_start >= {from:DateTime64(3, 'UTC')} AND period_start < {to:DateTime64(3, 'UTC')}
    )
    GROUP BY customer_id, meter, group_key, aggregation, period_start
) AS p
LEFT JOIN
(
    SELECT customer_id, meter, group_key, period_start, value, event_count, revision
    FROM customer_finals(customer = {customer:String})
) AS f
    ON f.customer_id = p.customer_id AND f.meter = p.meter AND f.group_key = p.group_key AND f.period_start = p.period_start;

-- customer_usage(customer, since): usage so far, the newest billing period per (meter, group) with
-- usage at or after `since`: final if its grace window has passed, else provisional with its "as of"
-- time. Only the newest periods are computed: a cheap scan (no FINAL, three columns) finds each
-- key's newest period start first, and the running totals read the minutes from the earliest of
-- those on (bench/dashboard_queries.py: this halves the query on 35 days of history).
CREATE VIEW customer_usage AS
SELECT
    customer_id, meter, group_key, aggregation,
    max(ps) AS period_start, argMax(pe, ps) AS period_end,
    argMax(v, ps) AS value, argMax(n, ps) AS event_count,
    argMax(st, ps) AS status, argMax(rv, ps) AS revision,
    argMax(am, ps) AS as_of_minute, argMax(al, ps) AS as_of_loaded
FROM
(
    SELECT customer_id, meter, group_key, aggregation, period_start AS ps, period_end AS pe, value AS v,
           event_count AS n, status AS st, revision AS rv, as_of_minute AS am, as_of_loaded AS al
    FROM customer_periods(
        customer = {customer:String},
        from = (
            SELECT if(count() = 0, toDateTime64('2200-01-01 00:00:00', 3, 'UTC'), min(newest))
            FROM
            (
                SELECT max(period_start) AS newest
                FROM aggregate_segments
                WHERE customer_id = {customer:String} AND minute >= {since:DateTime64(3, 'UTC')}
                GROUP BY meter, group_key
            )
        ),
        to = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'))
    WHERE (meter, group_key) IN (
        SELECT meter, group_key FROM aggregate_segments
        WHERE customer_id = {customer:String} AND minute >= {since:DateTime64(3, 'UTC')})
)
GROUP BY customer_id, meter, group_key, aggregation;

-- dead_letter_reasons: operator view, refused records per reason (all time and last 24 hours).
CREATE VIEW dead_letter_reasons AS
SELECT reason, count() AS total, countIf(source_time >= now64(3) - INTERVAL 1 DAY) AS last_24h, max(source_time) AS newest
FROM dead_letters FINAL
GROUP BY reason;

-- pipeline_health: operator view, one row: what the pipeline refused, dropped and corrected, and
-- how far behind the loader is (records not yet loaded, seconds since its last batch).
CREATE VIEW pipeline_health AS
SELECT
    (SELECT count() FROM raw_events FINAL) AS raw_events,
    (SELECT count() FROM dead_letters FINAL) AS dead_letters,
    (SELECT countIf(source_time >= now64(3) - INTERVAL 1 DAY) FROM dead_letters FINAL) AS dead_letters_24h,
    (SELECT count() FROM duplicates FINAL) AS duplicated_ids,
    (SELECT sum(seen - 1) FROM duplicates FINAL) AS duplicates_dropped,
    (SELECT countIf(variants > 1) FROM duplicates FINAL) AS conflicting_ids,
    (SELECT count() FROM corrections FINAL) AS corrections,
    (SELECT count() FROM period_finals FINAL) AS finals,
    (SELECT count() FROM customer_directory FINAL) AS customers,
    (SELECT maxOrNull(batch_at) FROM loader_batches) AS loader_last_batch,
    (SELECT if(count() = 0, NULL, dateDiff('millisecond', max(batch_at), now64(3)) / 1000) FROM loader_batches) AS loader_idle_seconds,
    (SELECT argMaxOrNull(consumer_lag, batch_at) FROM loader_batches) AS loader_consumer_lag,
    (SELECT maxOrNull(newest_source_time) FROM loader_batches) AS loader_newest_source_time;
