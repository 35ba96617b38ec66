-- Per billing period: the final where one exists, else the provisional running total.
-- Parameters: customer ('' = all).
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value AS total, event_count, status, as_of_minute
FROM period_usage
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY customer_id, meter, group_key, period_start
