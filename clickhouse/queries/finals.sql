-- Final (invoice-ready) period totals, the highest revision per key. Parameters: customer ('' = all).
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value AS total, event_count, revision,
       finalized_at_watermark
FROM visible_finals
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY customer_id, meter, group_key, period_start
