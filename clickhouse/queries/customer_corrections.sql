-- Corrections of one customer loaded into ClickHouse before `loaded_before` (the invoice of a period carries those
-- loaded while it ran: udfs/invoicing.py). `loaded_at` is the load of the record's newest delivery (corrections
-- is a ReplacingMergeTree keyed by the record's Kafka coordinates; merges keep the newest row).
-- Parameters: customer (required), meter ('' = all), loaded_before.
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, minute, sign, value, event_count, loaded_at
FROM visible_corrections
WHERE customer_id = {customer:String} AND ({meter:String} = '' OR meter = {meter:String})
  AND loaded_at < {loaded_before:DateTime64(3, 'UTC')}
ORDER BY meter, group_key, period_start, loaded_at
