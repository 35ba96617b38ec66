-- Usage so far for one customer: the newest billing period per (meter, group), final or provisional
-- with its "as of" time. Parameters: customer (required), meter ('' = all), since (periods starting
-- before it are not looked at).
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value AS total, event_count, status, revision,
       as_of_minute, as_of_loaded
FROM customer_usage(customer = {customer:String}, since = {since:DateTime64(3, 'UTC')})
WHERE {meter:String} = '' OR meter = {meter:String}
ORDER BY meter, group_key
