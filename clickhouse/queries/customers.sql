-- Operator view: customers with usage, their first and newest minute and meters.
SELECT customer_id, first_minute, last_minute, meters
FROM customers
ORDER BY customer_id
