-- Cost so far as the stream rated it (`metering alerts run` with alerts.costs, docs/pricing.md "Cost so far"):
-- per (meter, group) the newest period's newest cost record. Parameters: customer ('' = all: operator
-- tokens only), meter ('' = all).
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, is_final, quantity, currency, cost, cost_exact,
       projected_quantity, projected_cost, as_of, emitted_at
FROM cost_current
WHERE ({customer:String} = '' OR customer_id = {customer:String}) AND ({meter:String} = '' OR meter = {meter:String})
ORDER BY customer_id, meter, group_key
