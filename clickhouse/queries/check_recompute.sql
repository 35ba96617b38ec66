-- Data quality (aggregates suite, recompute): per (customer, meter, group, minute) of [from, to), the stored usage
-- (the minute's segments, plus the corrections of that minute: changes that arrived after its period was final)
-- next to a recomputation from raw_events with the configured meters:
--   1. records refused as a whole (a dead letter of their Kafka coordinates without a meter) are left out;
--   2. the first valid record per (customer_id, event_id) in Kafka order is kept (the job's keep-first dedup), with
--      the amendments the job applied: a voided event is left out, an amended one takes its last amend's quantity
--      and Kafka coordinates (the meter-level dead letters of its replacement carry those);
--   3. each meter on the event's type takes its value (quantity or a property) and group (its group_by
--      properties, missing = ''), unless that meter refused the record (a dead letter with that meter);
--   4. values combine per UTC minute of event time by the meter's aggregation (metering_merge_v1, as the views).
-- Groups are compared as sorted (name, value) pairs: the job's group_key is JSON. unique_count and latest minutes
-- with corrections cannot be recombined (corrections carry no distinct sets or event times): there only the event
-- counts are compared (`value_comparable` = 0). Meters come as parallel arrays: meter_names, meter_types,
-- meter_aggregations, meter_values ('' = quantity, else the property name), meter_dims (group_by per meter).
-- Parameters: from, to, sample and the meter arrays.
SELECT
    customer_id, meter, ifNull(s_group, r_group) AS group_key, ifNull(s_agg, r_agg) AS aggregation,
    minute, s_value AS stored_value,
    -- a sum or count of no event is 0: the stored minute of events that were all voided adds up to 0 for 0 events
    if(r_value IS NULL AND ifNull(s_events, 0) = 0 AND ifNull(s_agg, r_agg) IN ('sum', 'count'), s_value, r_value)
        AS recomputed_value,
    ifNull(s_events, 0) AS stored_events,
    ifNull(r_events, 0) AS recomputed_events,
    toUInt8(NOT (ifNull(s_agg, r_agg) IN ('unique_count', 'latest') AND ifNull(s_corrections, 0) > 0)) AS value_comparable,
    ifNull(s_corrections, 0) AS corrections
FROM
(
    -- stored: the minute's segments combined (as in the views: metering_merge_v1), then that minute's corrections applied
    SELECT
        customer_id, meter, minute, group_key AS s_group,
        arraySort(JSONExtractKeysAndValues(ifNull(group_key, ''), 'String')) AS group_pairs,
        ifNull(aggregation, c_agg) AS s_agg,
        multiIf(
            s_agg IN ('sum', 'count'), ifNull(seg_value, toDecimal128(0, 9)) + ifNull(delta_value, toDecimal128(0, 9)),
            s_agg = 'max', multiIf(corr_max IS NULL, seg_value, seg_value IS NULL, corr_max, greatest(seg_value, corr_max)),
            s_agg = 'min', multiIf(corr_min IS NULL, seg_value, seg_value IS NULL, corr_min, least(seg_value, corr_min)),
            seg_value
        ) AS s_value,
        ifNull(seg_events, 0) + ifNull(delta_events, 0) AS s_events,
        ifNull(n_corr, 0) AS s_corrections
    FROM
    (
        SELECT
            customer_id, meter, group_key, aggregation, minute,
            metering_merge_v1(aggregation, s0, n0, hi0, lo0, dv0, lv0, lm0) AS seg_value,
            sum(n0) AS seg_events
        FROM
        (
            SELECT customer_id, meter, group_key, aggregation, minute, sum_value AS s0, event_count AS n0,
                   max_value AS hi0, min_value AS lo0, distinct_values AS dv0, latest_value AS lv0, latest_ms AS lm0
            FROM visible_segments
            WHERE minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}
              AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
        )
        GROUP BY customer_id, meter, group_key, aggregation, minute
    ) AS s
    FULL OUTER JOIN
    (
        SELECT
            customer_id, meter, group_key, minute, any(aggregation) AS c_agg,
            sum(sign * value) AS delta_value, sum(sign * event_count) AS delta_events,
            maxIfOrNull(value, sign > 0) AS corr_max, minIfOrNull(value, sign > 0) AS corr_min, count() AS n_corr
        FROM visible_corrections
        WHERE minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}
          AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
        GROUP BY customer_id, meter, group_key, minute
    ) AS c USING (customer_id, meter, group_key, minute)
) AS stored
FULL OUTER JOIN
(
    -- recomputed from raw_events
    SELECT
        customer_id, meter, group_pairs, minute, any(aggregation) AS r_agg,
        toJSONString(CAST((arrayMap(p -> p.1, group_pairs), arrayMap(p -> p.2, group_pairs)), 'Map(String, String)')) AS r_group,
        -- each event is a state of its own: its value as sum, max, min and latest, one event, one distinct value
        metering_merge_v1(r_agg, val, 1, val, val, [distinct_value], val, (event_time, event_id)) AS r_value,
        count() AS r_events
    FROM
    (
        SELECT
            e.customer_id AS customer_id, e.event_id AS event_id, e.event_time AS event_time,
            toDateTime64(toStartOfMinute(e.event_time), 3, 'UTC') AS minute,
            m.1 AS meter, m.3 AS aggregation,
            if(m.4 = '', toNullable(e.quantity), toDecimal128OrNull(e.properties[m.4], 9)) AS val,
            -- unique_count counts values as sent: a quantity's own text (1.50 and 1.5 differ, as in the job)
            multiIf(
                m.3 != 'unique_count', '',
                m.4 != '', e.properties[m.4],
                metering_quantity_text_v2(e.payload)
            ) AS distinct_value,
            arraySort(arrayMap(d -> (d, e.properties[d]), m.5)) AS group_pairs,
            e.kafka_partition AS kafka_partition, e.kafka_offset AS kafka_offset
        FROM
        (
            SELECT f.customer_id AS customer_id, f.event_id AS event_id, f.event_type AS event_type,
                   f.event_time AS event_time, if(ifNull(a.amends, 0) > 0, a.amended_quantity, f.quantity) AS quantity,
                   f.properties AS properties, f.payload AS payload,
                   if(ifNull(a.amends, 0) > 0, a.amended_at.1, f.kafka_partition) AS kafka_partition,
                   if(ifNull(a.amends, 0) > 0, a.amended_at.2, f.kafka_offset) AS kafka_offset
            FROM
            (
            SELECT * FROM raw_events FINAL
            WHERE (customer_id, event_id) IN (
                    SELECT customer_id, event_id FROM raw_events
                    WHERE event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}
                      AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
                )
              AND (kafka_partition, kafka_offset) NOT IN (SELECT source_partition, source_offset FROM visible_dead_letters WHERE meter = '')
            ORDER BY customer_id, event_id, kafka_partition, kafka_offset
            LIMIT 1 BY customer_id, event_id
            ) AS f
            LEFT JOIN
            (
            -- AMENDMENTS (the same in replay_examine.sql; tests/unit/test_amendment_queries.py)
            SELECT customer_id, event_id, max(action = 'void') AS voided, countIf(action = 'amend') AS amends,
                   argMaxIf(quantity, (kafka_partition, kafka_offset), action = 'amend') AS amended_quantity,
                   argMaxIf((kafka_partition, kafka_offset), (kafka_partition, kafka_offset), action = 'amend') AS amended_at
            FROM amendments FINAL
            WHERE outcome = 'applied'
            -- END AMENDMENTS
            GROUP BY customer_id, event_id
            ) AS a ON f.customer_id = a.customer_id AND f.event_id = a.event_id
            WHERE ifNull(a.voided, 0) = 0
        ) AS e
        ARRAY JOIN arrayFilter(
            x -> x.2 = toString(e.event_type),
            arrayZip({meter_names:Array(String)}, {meter_types:Array(String)}, {meter_aggregations:Array(String)},
                     {meter_values:Array(String)}, {meter_dims:Array(Array(String))})
        ) AS m
        WHERE e.event_time >= {from:DateTime64(3, 'UTC')} AND e.event_time < {to:DateTime64(3, 'UTC')}
    )
    WHERE (kafka_partition, kafka_offset, meter) NOT IN (
        SELECT source_partition, source_offset, toString(meter) FROM visible_dead_letters WHERE meter != ''
    )
    GROUP BY customer_id, meter, group_pairs, minute
) AS recomputed USING (customer_id, meter, group_pairs, minute)
ORDER BY customer_id, meter, group_key, minute
SETTINGS join_use_nulls = 1
