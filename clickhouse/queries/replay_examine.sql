-- Replay, step 1 (jobs/replay.py): decide every raw event of the replay's scope, per configured meter, as the
-- live job would, and record the decision in replay_events under the (not yet committed) revision:
--   1. raw events of the events topic up to the replay's cut (per partition, the newest offset loaded when the
--      replay started), without the records the job refused as a whole (a dead letter of their Kafka
--      coordinates without a meter, except `unknown_meter`, which depends on the configuration replayed; and
--      the job's record-level rules applied again, for records whose dead letter is not loaded yet: the SQL
--      functions of clickhouse/migrations/0009, held to schemas/validate.py by tests/unit/test_sql_rules_agreement.py);
--   2. the first record per (customer_id, event_id) in Kafka order (the job's keep-first dedup), with the
--      amendments the job applied up to the cut (the amendments table): a voided event is examined and refused
--      (`voided`: not counted, not a dead letter, and its live corrections are absorbed like any examined event's),
--      an amended one takes its last amend's quantity and that amend's Kafka coordinates (whose meter-level dead
--      letters are its);
--   3. per meter on the event's type: its value (quantity or a property, read from the payload as the job reads
--      it), its group_by values (missing = ''), and the job's meter-level refusal rules (missing_value,
--      bad_value, negative_value);
--   4. only events whose time lies in their customer's scope [scope_from, scope_to): whole billing periods.
-- Parameters: revision, topic, skew_ms (pipeline.allowed_future_skew), customers / scope_from / scope_to (parallel arrays), cut_partitions /
-- cut_offsets (parallel arrays), meter_names, meter_types, meter_aggregations, meter_values ('' = quantity,
-- else the property name), meter_dims (group_by per meter), meter_negative (1 = allow_negative).
INSERT INTO replay_events
    (revision, customer_id, event_id, meter, event_time, minute, group_values, value, distinct_value, refusal,
     kafka_partition, kafka_offset)
SELECT
    {revision:UInt32}, customer_id, event_id, meter, event_time, toDateTime64(toStartOfMinute(event_time), 3, 'UTC'),
    group_values, if(refusal = '', val, NULL), distinct_value, refusal, kafka_partition, kafka_offset
FROM
(
    SELECT
        e.customer_id AS customer_id, e.event_id AS event_id, e.event_time AS event_time,
        e.kafka_partition AS kafka_partition, e.kafka_offset AS kafka_offset,
        m.1 AS meter, m.3 AS aggregation, m.4 AS prop, m.6 AS allow_negative,
        arrayMap(d -> e.properties[d], m.5) AS group_values,
        if(prop = '', '', toString(JSONType(e.payload, 'properties', prop))) AS prop_type,
        -- the property's text as the job read it (raw_events.properties: a string's content, a number as
        -- written: ClickHouse's JSON functions would re-write 0.000000001 as 1e-9); NULL when absent or null
        if(prop = '' OR prop_type IN ('Null', 'Object', 'Array'), NULL, e.properties[prop]) AS prop_text,
        aggregation IN ('sum', 'max', 'min', 'latest') AS numeric,
        if(prop = '', toNullable(e.quantity), toDecimal128OrNull(prop_text, 9)) AS val,
        multiIf(
            aggregation != 'unique_count', '',
            prop != '', ifNull(prop_text, ''),
            metering_quantity_text_v2(e.payload)
        ) AS distinct_value,
        multiIf(
            e.voided = 1, 'voided',
            numeric AND prop != '' AND prop_text IS NULL, 'missing_value',
            numeric AND prop != '' AND NOT metering_decimal_text_ok_v1(prop_text), 'bad_value',
            numeric AND allow_negative = 0 AND val < 0, 'negative_value',
            aggregation = 'unique_count' AND prop != '' AND prop_text IS NULL, 'missing_value',
            aggregation = 'count' AND allow_negative = 0 AND e.quantity < 0, 'negative_value',
            ''
        ) AS refusal
    FROM
    (
        SELECT f.customer_id AS customer_id, f.event_id AS event_id, f.event_type AS event_type,
               f.event_time AS event_time, if(ifNull(a.amends, 0) > 0, a.amended_quantity, f.quantity) AS quantity,
               f.properties AS properties, f.payload AS payload,
               if(ifNull(a.amends, 0) > 0, a.amended_at.1, f.kafka_partition) AS kafka_partition,
               if(ifNull(a.amends, 0) > 0, a.amended_at.2, f.kafka_offset) AS kafka_offset,
               ifNull(a.voided, 0) AS voided
        FROM
        (
        SELECT customer_id, event_id, event_type, event_time, quantity, properties, payload, kafka_partition, kafka_offset
        FROM raw_events FINAL
        WHERE kafka_topic = {topic:String}
          AND customer_id IN {customers:Array(String)}
          AND kafka_offset <= {cut_offsets:Array(UInt64)}[indexOf({cut_partitions:Array(UInt32)}, kafka_partition)]
          AND indexOf({cut_partitions:Array(UInt32)}, kafka_partition) > 0
          AND (kafka_partition, kafka_offset) NOT IN (
                SELECT source_partition, source_offset FROM dead_letters FINAL WHERE meter = '' AND reason != 'unknown_meter')
          -- the job's record-level rules again (clickhouse/migrations/0010, metering_valid_event_v2), for records
          -- past the job's progress, whose dead letters are not loaded yet
          AND metering_valid_event_v2(schema_version, event_id, customer_id, event_type, payload, event_time, received_at,
                                      {skew_ms:UInt64})
          AND (customer_id, event_id) IN (
                SELECT customer_id, event_id FROM raw_events
                WHERE kafka_topic = {topic:String} AND customer_id IN {customers:Array(String)}
                  AND event_time >= arrayMin({scope_from:Array(DateTime64(3, 'UTC'))})
                  AND event_time < arrayMax({scope_to:Array(DateTime64(3, 'UTC'))}))
        ORDER BY customer_id, event_id, kafka_partition, kafka_offset
        LIMIT 1 BY customer_id, event_id
        ) AS f
        LEFT JOIN
        (
            -- AMENDMENTS (the same in check_recompute.sql; tests/unit/test_amendment_queries.py)
            SELECT customer_id, event_id, max(action = 'void') AS voided, countIf(action = 'amend') AS amends,
                   argMaxIf(quantity, (kafka_partition, kafka_offset), action = 'amend') AS amended_quantity,
                   argMaxIf((kafka_partition, kafka_offset), (kafka_partition, kafka_offset), action = 'amend') AS amended_at
            FROM amendments FINAL
            WHERE outcome = 'applied'
            -- END AMENDMENTS
              AND customer_id IN {customers:Array(String)}
              AND indexOf({cut_partitions:Array(UInt32)}, kafka_partition) > 0
              AND kafka_offset <= {cut_offsets:Array(UInt64)}[indexOf({cut_partitions:Array(UInt32)}, kafka_partition)]
            GROUP BY customer_id, event_id
        ) AS a ON f.customer_id = a.customer_id AND f.event_id = a.event_id
    ) AS e
    ARRAY JOIN arrayFilter(
        x -> x.2 = toString(e.event_type),
        arrayZip({meter_names:Array(String)}, {meter_types:Array(String)}, {meter_aggregations:Array(String)},
                 {meter_values:Array(String)}, {meter_dims:Array(Array(String))}, {meter_negative:Array(UInt8)})
    ) AS m
    WHERE e.event_time >= {scope_from:Array(DateTime64(3, 'UTC'))}[indexOf({customers:Array(String)}, e.customer_id)]
      AND e.event_time < {scope_to:Array(DateTime64(3, 'UTC'))}[indexOf({customers:Array(String)}, e.customer_id)]
)
