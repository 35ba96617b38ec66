-- Changes that arrived after their period was final (for the next invoice). Parameters: customer ('' = all).
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, minute, sign, value, event_count, event_id
FROM visible_corrections
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY customer_id, meter, group_key, period_start, minute
