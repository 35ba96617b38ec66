-- Prepaid credit balances as of the newest `metering credits refresh` (one row per customer; docs/pricing.md
-- "Prepaid credits"). `stale_seconds` is the age of the balance (from `as_of`), at the time of the query.
-- Parameters: customer ('' = all).
SELECT customer_id, currency, as_of, remaining_settled, remaining, exhaustion, grace_pct, over_limit, granted,
       consumed_settled, consumed_pending, expired, voided, uncovered_settled, uncovered_pending, live_grants,
       next_expiry, settled_through, refreshed_at,
       toInt64(greatest(0, dateDiff('second', as_of, now64(3, 'UTC')))) AS stale_seconds
FROM credit_balances FINAL
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY customer_id
