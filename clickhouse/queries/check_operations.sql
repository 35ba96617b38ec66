-- Data quality (operations suite): one row for the range [from, to) with the pipeline's refusal and correction
-- rates. dead_letter_rate = records with a dead letter (refused as a whole or by a meter) / records read, both by
-- the time Kafka received them (raw_events.received_at, dead_letters.source_time); records read = raw_events
-- plus dead-lettered records that never reached raw_events (not JSON, fields missing). correction_rate = events
-- that arrived after their period was final (net events of `corrections`) / all events counted, both by event
-- minute. Parameters: from, to.
SELECT
    toDateTime64({from:DateTime64(3, 'UTC')}, 3, 'UTC') AS range_start,
    toDateTime64({to:DateTime64(3, 'UTC')}, 3, 'UTC') AS range_end,
    records, dead_lettered, if(records = 0, 0, round(dead_lettered / records, 6)) AS dead_letter_rate,
    counted_events, corrected_events, if(counted_events = 0, 0, round(corrected_events / counted_events, 6)) AS correction_rate
FROM
(
    SELECT uniqExact(coords) AS records, uniqExactIf(coords, refused = 1) AS dead_lettered
    FROM
    (
        SELECT (kafka_partition, kafka_offset) AS coords, 0 AS refused
        FROM raw_events FINAL
        WHERE received_at >= {from:DateTime64(3, 'UTC')} AND received_at < {to:DateTime64(3, 'UTC')}
        UNION ALL
        SELECT (source_partition, source_offset) AS coords, 1 AS refused
        FROM visible_dead_letters
        WHERE source_time >= {from:DateTime64(3, 'UTC')} AND source_time < {to:DateTime64(3, 'UTC')}
    )
) AS r
CROSS JOIN
(
    SELECT segment_events + corrected_events AS counted_events, corrected_events
    FROM
    (
        SELECT
            (SELECT sum(event_count) FROM visible_segments
             WHERE minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}) AS segment_events,
            (SELECT sum(sign * event_count) FROM visible_corrections
             WHERE minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}) AS corrected_events
    )
) AS c
