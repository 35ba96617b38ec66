-- Replay, step 2: the counted events of a revision combined per (customer, meter, group, UTC minute), with
-- everything a minute segment stores (sum, extremes, distinct values, the latest event). Parameters: revision.
SELECT
    customer_id, toString(meter) AS meter, group_values, minute,
    count() AS event_count,
    sum(value) AS total,
    max(value) AS max_value,
    min(value) AS min_value,
    groupUniqArray(distinct_value) AS distinct_values,
    argMax(tuple(toUnixTimestamp64Milli(event_time), event_id, value), tuple(event_time, event_id)) AS latest
FROM replay_events
WHERE revision = {revision:UInt32} AND refusal = ''
GROUP BY customer_id, meter, group_values, minute
