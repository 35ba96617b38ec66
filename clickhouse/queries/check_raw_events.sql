-- Data quality (raw_events suite): one row per raw event with event time in [from, to) of the sampled customers,
-- with what became of it: `status` is 'dead_letter' (refused as a whole: the dead letter of its Kafka coordinates
-- has no meter), 'duplicate' (an earlier valid record of the same (customer_id, event_id) exists: first in Kafka
-- order wins, as in the job) or 'accepted'. `negative_refused` = a meter refused its negative value
-- (negative_value); `non_negative_required` = its event type has a meter that refuses negative quantities.
-- Parameters: from, to, sample, non_negative_types (event types whose meters refuse a negative quantity).
SELECT
    r.event_id AS event_id, r.customer_id AS customer_id, r.event_type AS event_type, r.event_time AS event_time,
    r.received_at AS received_at, dateDiff('millisecond', r.received_at, r.event_time) AS future_skew_ms,
    toFloat64(r.quantity) AS quantity, r.schema_version AS schema_version,
    r.kafka_partition AS kafka_partition, r.kafka_offset AS kafka_offset,
    multiIf(d.reason != '', 'dead_letter', o.first_partition != r.kafka_partition OR o.first_offset != r.kafka_offset, 'duplicate', 'accepted')
        AS status,
    d.reason AS dead_letter_reason,
    has({non_negative_types:Array(String)}, toString(r.event_type)) AS non_negative_required,
    (r.kafka_partition, r.kafka_offset) IN (
        SELECT source_partition, source_offset FROM visible_dead_letters WHERE reason = 'negative_value'
    ) AS negative_refused,
    r.payload AS payload
FROM
(
    SELECT * FROM raw_events FINAL
    WHERE event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}
      AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
) AS r
LEFT JOIN
(
    SELECT source_partition, source_offset, any(reason) AS reason
    FROM visible_dead_letters
    WHERE meter = ''
    GROUP BY source_partition, source_offset
) AS d ON d.source_partition = r.kafka_partition AND d.source_offset = r.kafka_offset
LEFT JOIN
(
    -- first valid record per id, over the whole table (an earlier record may lie outside the range)
    SELECT customer_id, event_id,
           argMin(kafka_partition, (kafka_partition, kafka_offset)) AS first_partition,
           argMin(kafka_offset, (kafka_partition, kafka_offset)) AS first_offset
    FROM raw_events FINAL
    WHERE (customer_id, event_id) IN (
            SELECT customer_id, event_id FROM raw_events
            WHERE event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}
        )
      AND (kafka_partition, kafka_offset) NOT IN (SELECT source_partition, source_offset FROM visible_dead_letters WHERE meter = '')
    GROUP BY customer_id, event_id
) AS o ON o.customer_id = r.customer_id AND o.event_id = r.event_id
ORDER BY customer_id, event_time, kafka_partition, kafka_offset
