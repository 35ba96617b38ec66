-- Operator view: customers with usage, their first and newest minute and meters.
-- Times are formatted by ClickHouse (RFC 3339 UTC): converting 10,000 rows of datetimes in Python
-- cost more than the query (bench/dashboard_queries.py).
SELECT customer_id,
       concat(replaceOne(toString(first_minute), ' ', 'T'), 'Z') AS first_minute,
       concat(replaceOne(toString(last_minute), ' ', 'T'), 'Z') AS last_minute,
       meters
FROM customers
ORDER BY customer_id
