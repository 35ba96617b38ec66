-- Data quality (aggregates suite, rollups): for one customer, every hour, day and period bucket of the views the
-- dashboards read (customer_series_hour, customer_series_day, customer_periods) next to the same bucket recombined
-- here from the minute view (customer_minutes): minute sums = hour = day = period for the same key and range.
-- Combination by aggregation, the views' own rule (metering_merge_v1, clickhouse/migrations/0009): sum/count add,
-- max/min take the extreme, unique_count unites the distinct sets, latest takes the value with the newest event time. Periods are those starting in [from, to) and only the
-- provisional ones (a final period shows its final; check_finals compares those). A bucket missing on one side
-- has NULLs there. (Not join_use_nulls: the views' own LEFT JOINs rely on default values.) Parameters: customer,
-- from, to.
SELECT level, customer_id, meter, group_key, aggregation, bucket,
       if(in_minutes = 1, minutes_value, NULL) AS minutes_value, if(in_rollup = 1, rollup_value, NULL) AS rollup_value,
       if(in_minutes = 1, minutes_events, NULL) AS minutes_events, if(in_rollup = 1, rollup_events, NULL) AS rollup_events
FROM
(
    -- Each minute in its hour, its day (minutes in [from, to)) and its period (periods starting in [from, to)).
    SELECT lv.1 AS level, customer_id, meter, group_key, aggregation, lv.2 AS bucket,
           metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS minutes_value,
           sum(n1) AS minutes_events, toUInt8(1) AS in_minutes
    FROM
    (
        SELECT customer_id, meter, group_key, aggregation, minute, day_start, period_start, value AS v1, event_count AS n1,
               distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
        FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'))
    )
    ARRAY JOIN [
        ('hour', toDateTime64(toStartOfHour(minute), 3, 'UTC'), minute < {to:DateTime64(3, 'UTC')}),
        ('day', toDateTime64(day_start, 3, 'UTC'), minute < {to:DateTime64(3, 'UTC')}),
        ('period', toDateTime64(period_start, 3, 'UTC'),
         period_start >= {from:DateTime64(3, 'UTC')} AND period_start < {to:DateTime64(3, 'UTC')})
    ] AS lv
    WHERE lv.3
    GROUP BY level, customer_id, meter, group_key, aggregation, bucket
) AS m
FULL OUTER JOIN
(
    -- The views' buckets.
    SELECT level, customer_id, meter, group_key, aggregation, toDateTime64(b0, 3, 'UTC') AS bucket, value AS rollup_value,
           event_count AS rollup_events, toUInt8(1) AS in_rollup, st0
    FROM
    (
        SELECT 'hour' AS level, customer_id, meter, group_key, aggregation, bucket AS b0, value, event_count, '' AS st0
        FROM customer_series_hour(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        UNION ALL
        SELECT 'day' AS level, customer_id, meter, group_key, aggregation, bucket AS b0, value, event_count, '' AS st0
        FROM customer_series_day(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        UNION ALL
        SELECT 'period' AS level, customer_id, meter, group_key, aggregation, period_start AS b0, value, event_count,
               toString(status) AS st0
        FROM customer_periods(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
    )
) AS r USING (level, customer_id, meter, group_key, aggregation, bucket)
WHERE st0 != 'final'  -- both sides of a final period: it shows its final, which check_finals compares
ORDER BY level, meter, group_key, bucket
