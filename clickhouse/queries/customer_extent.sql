-- The first and newest minute with usage of one customer (default ranges for series). Parameters: customer.
SELECT minOrNull(minute) AS first_minute, maxOrNull(minute) AS last_minute
FROM aggregate_segments
WHERE customer_id = {customer:String}
