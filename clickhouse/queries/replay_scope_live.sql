-- Replay: the visible finals and the period starts of visible segments of the scope's customers and meters that
-- overlap [from, to), to diff against and to detect a changed billing cycle. Parameters: customers, meters,
-- from, to.
SELECT customer_id, toString(meter) AS meter, group_key, toString(aggregation) AS aggregation, period_start, period_end,
       value, event_count, revision, 1 AS is_final
FROM visible_finals
WHERE customer_id IN {customers:Array(String)} AND meter IN {meters:Array(String)}
  AND period_start < {to:DateTime64(3, 'UTC')} AND period_end > {from:DateTime64(3, 'UTC')}
UNION ALL
SELECT DISTINCT customer_id, toString(meter) AS meter, '' AS group_key, '' AS aggregation, period_start, period_end,
       toDecimal128(0, 9) AS value, toInt64(0) AS event_count, toUInt32(0) AS revision, 0 AS is_final
FROM visible_segments
WHERE customer_id IN {customers:Array(String)} AND meter IN {meters:Array(String)}
  AND minute >= {from:DateTime64(3, 'UTC')} AND minute < {to:DateTime64(3, 'UTC')}
