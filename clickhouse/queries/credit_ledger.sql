-- The credit ledger: every grant and void row, oldest first (append-only; docs/pricing.md "Prepaid credits").
-- Parameters: customer ('' = all).
SELECT customer_id, grant_id, action, amount, currency, priority, effective_at, expires_at, rollover, recorded_at,
       recorded_by, reason
FROM credit_ledger FINAL
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY customer_id, recorded_at, grant_id, action
