-- Final (invoice-ready) totals of one customer, highest revision per key, periods starting in [from, to).
-- Parameters: customer (required), meter ('' = all), from, to.
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, value AS total, event_count, revision,
       finalized_at_watermark
FROM customer_finals(customer = {customer:String})
WHERE ({meter:String} = '' OR meter = {meter:String})
  AND period_start >= {from:DateTime64(3, 'UTC')} AND period_start < {to:DateTime64(3, 'UTC')}
ORDER BY meter, group_key, period_start
