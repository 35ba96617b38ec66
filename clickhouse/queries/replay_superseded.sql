-- Replay: the visible live corrections whose events the revision examined, per (customer, meter, group,
-- period): they are absorbed by the new revision (counted in its final, or refused by it). Parameters: revision.
SELECT customer_id, toString(meter) AS meter, group_key, period_start, count() AS corrections,
       sum(sign * value) AS value
FROM visible_corrections
WHERE event_id != ''
  AND (customer_id, event_id, meter) IN (
        SELECT customer_id, event_id, meter FROM replay_events WHERE revision = {revision:UInt32}
        UNION ALL
        -- an amendment's corrections (clickhouse/migrations/0011, correction_events) go with its event
        SELECT c.customer_id, c.correction_event_id, e.meter
        FROM correction_events AS c
        INNER JOIN replay_events AS e ON e.customer_id = c.customer_id AND e.event_id = c.event_id
        WHERE e.revision = {revision:UInt32})
GROUP BY customer_id, meter, group_key, period_start
