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
    SELECT 'hour' AS level, customer_id, meter, group_key, aggregation, bucket, minutes_value, rollup_value, minutes_events,
           rollup_events, in_minutes, in_rollup
    FROM
    (
        SELECT
            customer_id, meter, group_key, aggregation, toDateTime64(toStartOfHour(m1), 3, 'UTC') AS bucket,
            metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS minutes_value,
            sum(n1) AS minutes_events, toUInt8(1) AS in_minutes
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, minute AS m1, value AS v1, event_count AS n1,
                   distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
            FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        )
        GROUP BY customer_id, meter, group_key, aggregation, bucket
    ) AS m
    FULL OUTER JOIN
    (
        SELECT customer_id, meter, group_key, aggregation, toDateTime64(b0, 3, 'UTC') AS bucket, value AS rollup_value,
               event_count AS rollup_events, toUInt8(1) AS in_rollup
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, bucket AS b0, value, event_count
            FROM customer_series_hour(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        )
    ) AS h USING (customer_id, meter, group_key, aggregation, bucket)

    UNION ALL

    SELECT 'day' AS level, customer_id, meter, group_key, aggregation, bucket, minutes_value, rollup_value, minutes_events,
           rollup_events, in_minutes, in_rollup
    FROM
    (
        SELECT
            customer_id, meter, group_key, aggregation, toDateTime64(d1, 3, 'UTC') AS bucket,
            metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS minutes_value,
            sum(n1) AS minutes_events, toUInt8(1) AS in_minutes
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, day_start AS d1, value AS v1, event_count AS n1,
                   distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
            FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        )
        GROUP BY customer_id, meter, group_key, aggregation, bucket
    ) AS m
    FULL OUTER JOIN
    (
        SELECT customer_id, meter, group_key, aggregation, toDateTime64(b0, 3, 'UTC') AS bucket, value AS rollup_value,
               event_count AS rollup_events, toUInt8(1) AS in_rollup
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, bucket AS b0, value, event_count
            FROM customer_series_day(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        )
    ) AS d USING (customer_id, meter, group_key, aggregation, bucket)

    UNION ALL

    SELECT 'period' AS level, customer_id, meter, group_key, aggregation, bucket, minutes_value, rollup_value, minutes_events,
           rollup_events, in_minutes, in_rollup
    FROM
    (
        SELECT
            customer_id, meter, group_key, aggregation, toDateTime64(p1, 3, 'UTC') AS bucket,
            metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS minutes_value,
            sum(n1) AS minutes_events, toUInt8(1) AS in_minutes
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, period_start AS p1, value AS v1, event_count AS n1,
                   distinct_values AS dv1, latest_value AS lv1, latest_ms AS lm1
            FROM customer_minutes(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = toDateTime64('2200-01-01 00:00:00', 3, 'UTC'))
            WHERE period_start >= {from:DateTime64(3, 'UTC')} AND period_start < {to:DateTime64(3, 'UTC')}
        )
        GROUP BY customer_id, meter, group_key, aggregation, bucket
    ) AS m
    FULL OUTER JOIN
    (
        SELECT customer_id, meter, group_key, aggregation, toDateTime64(b0, 3, 'UTC') AS bucket, value AS rollup_value,
               event_count AS rollup_events, toUInt8(1) AS in_rollup, st0
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, period_start AS b0, value, event_count, status AS st0
            FROM customer_periods(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
        )
    ) AS p USING (customer_id, meter, group_key, aggregation, bucket)
    WHERE st0 != 'final'
)
ORDER BY level, meter, group_key, bucket
