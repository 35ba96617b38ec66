-- Data quality (`metering check`): the customers a check covers: usage in [from, to), and in the sample (a
-- deterministic fraction of customers by a hash of the id; sample >= 1 means all). Parameters: from, to, sample.
SELECT customer_id
FROM customers
WHERE last_minute >= {from:DateTime64(3, 'UTC')} AND first_minute < {to:DateTime64(3, 'UTC')}
  AND ({sample:Float64} >= 1 OR cityHash64(customer_id) % 10000 < {sample:Float64} * 10000)
ORDER BY customer_id
