-- Every billing period of one customer starting in [from, to): final total or provisional running total.
-- Parameters: customer (required), meter ('' = all), from, to.
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value AS total, event_count, status, revision,
       as_of_minute, as_of_loaded
FROM customer_periods(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
WHERE {meter:String} = '' OR meter = {meter:String}
ORDER BY meter, group_key, period_start
