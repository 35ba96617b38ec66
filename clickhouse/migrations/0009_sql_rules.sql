-- The SQL rules, written once (docs/design.md, "ClickHouse: the rules written once"). Before this
-- migration the aggregation merge was written out in every view that combines aggregate state
-- (0002, 0003, 0004) and in the quality checks' queries, and the replay's query repeated the job's
-- record-level rules; now each is one SQL user-defined function, and the views, the checks
-- (clickhouse/queries/check_*.sql) and the replay (replay_examine.sql) call it.
-- tests/unit/test_sql_rules_agreement.py holds them to the Python reference (udfs/aggregators.py,
-- schemas/validate.py) on the same cases.
--
-- Why SQL functions (`CREATE FUNCTION name AS (args) -> expr`), and not a shared view or SQL
-- generated in Python: the merge is an expression over a GROUP BY's rows (aggregates inside a
-- multiIf), which a view cannot be handed as a parameter, and generated SQL would need a build
-- step for the .sql files every reader (the CLI, Grafana, operators) runs as they are. A SQL
-- function is a macro: ClickHouse substitutes its body at the call, so it costs nothing at run time
-- and it may hold aggregate functions. Verified on chDB 26.9 (the engine of the pinned chDB):
--   * the function is stored with the data (`<chDB path>/user_defined/function_<name>.sql`, on a
--     server in its `user_defined` directory) and is there in every later session of that path;
--   * CREATE VIEW stores the view with the body already substituted (system.tables shows the
--     multiIf), so a view does not depend on the function when it is loaded or read, and views
--     recreated below return exactly what they returned before;
--   * functions are global to the chDB path / server, not per database: DROP DATABASE leaves them,
--     and every database on one path (the tests' throwaway databases) shares them. Each database's
--     migration therefore runs CREATE OR REPLACE FUNCTION (a plain CREATE fails for the second
--     database; migrations use no conditional CREATE) with the same text, which is idempotent.
--     schema_migrations' checksum covers this file as any other.
-- A function's definition never changes under its name: databases on one server may be at
-- different versions, and the queries of each version call the functions of that version. A
-- changed rule is a new function `…_v2` in a new migration, which recreates the views that use it.
-- On a ClickHouse server the migrating user needs the CREATE FUNCTION and DROP FUNCTION grants.

-- metering_merge_v1: the aggregation merge. Combines aggregate states (rows of a GROUP BY) into one
-- value, as udfs/aggregators.py merge + Partial.result: sum adds the sums, count adds the event
-- counts, max / min take the extreme, unique_count counts the union of the distinct sets, latest
-- takes the value with the newest `latest_order` (any one of them on a tie). The same call merges
-- segments into a minute and minutes into an hour, day or period: a minute row passes its value as
-- its sum, max and min (for count, the value is its event count).
CREATE OR REPLACE FUNCTION metering_merge_v1 AS
    (aggregation, sum_value, event_count, max_value, min_value, distinct_values, latest_value, latest_order) ->
    multiIf(
        aggregation = 'sum', sum(sum_value),
        aggregation = 'count', toDecimal128(sum(event_count), 9),
        aggregation = 'max', max(max_value),
        aggregation = 'min', min(min_value),
        aggregation = 'unique_count', toDecimal128(length(groupUniqArrayArray(distinct_values)), 9),
        argMax(latest_value, latest_order)
    );

-- metering_decimal_text_ok_v1: whether a text is an exact decimal Decimal(38, 9) holds, written
-- without an exponent (the schema's quantity pattern; a meter's value property is held to it too).
CREATE OR REPLACE FUNCTION metering_decimal_text_ok_v1 AS
    (text) -> match(text, '^-?(0|[1-9][0-9]{0,28})(\\.[0-9]{1,9})?$');

-- metering_quantity_text_v1: an event's quantity as written in its payload: a string's content, a
-- number's text (what unique_count counts, and what the schema's pattern is applied to).
CREATE OR REPLACE FUNCTION metering_quantity_text_v1 AS
    (payload) -> if(JSONType(payload, 'quantity') = 'String', JSONExtractString(payload, 'quantity'),
                    JSONExtractRaw(payload, 'quantity'));

-- metering_valid_event_v1: the job's record-level rules on a raw_events row (schemas/validate.py,
-- job_reason): schema version, event_id, customer_id, event_type and the quantity's text, and the
-- event time at most `skew_ms` after Kafka received the record (future_timestamp). The rest of the
-- reference (the JSON profile, the timestamp's form, properties, optional fields) cannot be told
-- from a row: a row exists only for a record the job read as an event.
CREATE OR REPLACE FUNCTION metering_valid_event_v1 AS
    (schema_version, event_id, customer_id, event_type, payload, event_time, received_at, skew_ms) ->
    schema_version = 1
    AND lengthUTF8(event_id) BETWEEN 1 AND 128 AND NOT match(event_id, '[\\x00-\\x1f]')
    AND lengthUTF8(customer_id) <= 128 AND match(customer_id, '^[A-Za-z0-9][A-Za-z0-9._:@-]*$')
    AND lengthUTF8(event_type) <= 64 AND match(event_type, '^[a-z0-9][a-z0-9_.-]*$')
    AND metering_decimal_text_ok_v1(metering_quantity_text_v1(payload))
    AND event_time <= received_at + toIntervalMillisecond(skew_ms);

-- The views that merge aggregate state, recreated to call metering_merge_v1; names, columns and
-- results are unchanged (the last definitions: minute_usage, period_usage and customer_minutes
-- from 0004, customer_series_hour, customer_series_day and customer_periods from 0003).

CREATE OR REPLACE VIEW minute_usage AS
SELECT
    customer_id, meter, group_key, aggregation, minute,
    any(d0) AS day_start, any(p0) AS period_start, any(e0) AS period_end,
    metering_merge_v1(aggregation, s0, n0, hi0, lo0, dv0, lv0, lm0) AS value,
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
        metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS running_value,
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
    metering_merge_v1(aggregation, s0, n0, hi0, lo0, dv0, lv0, lm0) AS value,
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

CREATE OR REPLACE VIEW customer_series_hour AS
SELECT
    customer_id, meter, group_key, aggregation, toStartOfHour(m1) AS bucket,
    metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS value,
    sum(n1) AS event_count
FROM
(
    SELECT customer_id, meter, group_key, aggregation, minute AS m1, value AS v1, event_count AS n1,
           distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
    FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
)
GROUP BY customer_id, meter, group_key, aggregation, bucket;

CREATE OR REPLACE VIEW customer_series_day AS
SELECT
    customer_id, meter, group_key, aggregation, d1 AS bucket,
    metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS value,
    sum(n1) AS event_count
FROM
(
    SELECT customer_id, meter, group_key, aggregation, day_start AS d1, value AS v1, event_count AS n1,
           distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
    FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
)
GROUP BY customer_id, meter, group_key, aggregation, bucket;

CREATE OR REPLACE VIEW customer_periods AS
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
        metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS running_value,
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
