-- Data quality (raw_events suite, dedup): every (customer_id, event_id) of the range that raw_events holds more
-- than once as a valid record, or that the job reported as a duplicate: how many valid records raw_events has
-- (`raw_records`; records refused as a whole are not counted) against how many the job saw (`job_seen`: the
-- duplicates table's count, 1 when the job reported no duplicate). Equal means the job kept exactly one
-- occurrence per id and dropped the others. Parameters: from, to, sample.
SELECT customer_id, event_id, raw_records, greatest(s0, 1) AS job_seen, v0 AS job_variants
FROM
(
    SELECT customer_id, event_id, count() AS raw_records
    FROM raw_events FINAL
    WHERE (customer_id, event_id) IN (
            SELECT customer_id, event_id FROM raw_events
            WHERE event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}
              AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
        )
      AND (kafka_partition, kafka_offset) NOT IN (SELECT source_partition, source_offset FROM visible_dead_letters WHERE meter = '')
    GROUP BY customer_id, event_id
) AS r
FULL OUTER JOIN
(
    SELECT customer_id, event_id, seen AS s0, variants AS v0
    FROM duplicates FINAL
    WHERE (customer_id, event_id) IN (
            SELECT customer_id, event_id FROM raw_events
            WHERE event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}
              AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
        )
) AS d USING (customer_id, event_id)
WHERE raw_records > 1 OR s0 > 1
ORDER BY customer_id, event_id
SETTINGS join_use_nulls = 0
