-- Time series of one customer by UTC hour, buckets in [from, to).
-- Parameters: customer (required), meter ('' = all), from, to.
SELECT customer_id, meter, group_key, aggregation, bucket, value, event_count
FROM customer_series_hour(customer = {customer:String}, from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})
WHERE {meter:String} = '' OR meter = {meter:String}
ORDER BY meter, group_key, bucket
