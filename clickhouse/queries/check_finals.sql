-- Data quality (aggregates suite, finals): every final of a period starting in [from, to) (highest revision) next
-- to the combination of that period's minute segments (latest version of each segment), i.e. the last provisional
-- total before finalization. The job writes a minute segment only while its period is open: a change that
-- arrives after finalization goes to `corrections` instead, so the stored segments of a final period are exactly
-- what the final was computed from. Combination as in the views, by the one merge rule (metering_merge_v1,
-- clickhouse/migrations/0009): a minute merges its segments, a period merges its minutes (sum/count add, max/min
-- take the extreme, unique_count unites, latest takes the newest).
-- Parameters: from, to, sample.
SELECT
    f.customer_id AS customer_id, f.meter AS meter, f.group_key AS group_key, f.aggregation AS aggregation,
    f.period_start AS period_start, f.period_end AS period_end, f.revision AS revision,
    f.finalized_at_watermark AS finalized_at_watermark,
    f.value AS final_value, p.segments_value AS segments_value,
    f.event_count AS final_events, p.segments_events AS segments_events, p.minutes AS minutes
FROM
(
    SELECT * FROM visible_finals
    WHERE period_start >= {from:DateTime64(3, 'UTC')} AND period_start < {to:DateTime64(3, 'UTC')}
      AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
) AS f
LEFT JOIN
(
    SELECT
        customer_id, meter, group_key, p1 AS period_start,
        metering_merge_v1(aggregation, v1, n1, v1, v1, dv1, lv1, lm1) AS segments_value,
        sum(n1) AS segments_events,
        count() AS minutes
    FROM
    (
        SELECT
            customer_id, meter, group_key, aggregation, minute, any(p0) AS p1,
            metering_merge_v1(aggregation, s0, n0, hi0, lo0, dv0, lv0, lm0) AS v1,
            sum(n0) AS n1, groupUniqArrayArray(dv0) AS dv1, argMax(lv0, lm0) AS lv1, max(lm0) AS lm1
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, minute, period_start AS p0, sum_value AS s0,
                   event_count AS n0, max_value AS hi0, min_value AS lo0, distinct_values AS dv0,
                   latest_value AS lv0, latest_ms AS lm0
            FROM visible_segments
            WHERE period_start >= {from:DateTime64(3, 'UTC')} AND period_start < {to:DateTime64(3, 'UTC')}
              AND minute >= {from:DateTime64(3, 'UTC')}
              AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
        )
        GROUP BY customer_id, meter, group_key, aggregation, minute
    )
    GROUP BY customer_id, meter, group_key, aggregation, period_start
) AS p
    ON p.customer_id = f.customer_id AND p.meter = f.meter AND p.group_key = f.group_key AND p.period_start = f.period_start
ORDER BY customer_id, meter, group_key, period_start
SETTINGS join_use_nulls = 1
