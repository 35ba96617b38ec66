-- Threshold alerts (`metering alerts run`, docs/pricing.md "Alerts"), in the order they were judged.
-- Parameters: customer ('' = all: operator tokens only), meter ('' = all).
SELECT id, kind, rule, rule_kind, customer_id, meter, threshold, value, previous_value, period_start, period_end, final,
       sequence, reason, as_of, lag_ms, emitted_at
FROM alerts FINAL
WHERE ({customer:String} = '' OR customer_id = {customer:String}) AND ({meter:String} = '' OR meter = {meter:String})
ORDER BY customer_id, meter, period_start, as_of, emitted_at, id
