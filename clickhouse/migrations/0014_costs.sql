-- costs: the cost so far that `metering alerts run` rated in the stream and wrote to the costs
-- topic (`alerts.costs`; jobs/alerts/, docs/pricing.md "Cost so far"), loaded by the loader like
-- the job's topics.
--
-- One row per emission: the evaluator writes one record per (customer, meter, group, period)
-- whose value changed in a transaction (Kafka transactions with its state and offsets: exactly
-- once). `quantity` is the final with its corrections once `is_final`, else the running value;
-- `cost` (rounded, as an invoice shows it) and `cost_exact` that quantity priced by the
-- customer's card; `projected_quantity` and `projected_cost` its projection at `as_of` (the
-- stream's event time of the period, not the reading time) priced the same way. `currency`,
-- `cost`, `cost_exact` and `projected_cost` are null when the card has no rate in effect.
-- Engine: ReplacingMergeTree versioned by `emitted_at`, keyed by (customer, meter, group,
-- period): the newest emission of a period wins, and the loader's re-delivered batches collapse.
-- ORDER BY leads with customer_id: the named query is customer-scoped. PARTITION BY month of the
-- period, like the finals. `cost_exact` keeps 30 places: a unit price's digits times a quantity's.
-- No TTL: one row per group and period once merged, as small as the finals.
CREATE TABLE costs
(
    customer_id        String,
    meter              LowCardinality(String),
    group_key          String,
    aggregation        LowCardinality(String),
    period_start       DateTime64(3, 'UTC'),
    period_end         DateTime64(3, 'UTC'),
    quantity           Decimal(38, 9),
    currency           Nullable(String),
    cost               Nullable(Decimal(38, 9)),
    cost_exact         Nullable(Decimal(76, 30)),
    projected_quantity Decimal(38, 9),
    projected_cost     Nullable(Decimal(38, 9)),
    is_final           Bool,
    as_of              DateTime64(3, 'UTC'),
    emitted_at         DateTime64(3, 'UTC'),
    loaded_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, group_key, period_start);

-- cost_current: each customer's current cost per (meter, group), for dashboards and SQL users
-- (Grafana): the newest period's newest emission. FINAL keeps each period's newest row, LIMIT 1 BY
-- the newest period. `as_of` says how far the stream had got; a period whose group had no record
-- since stays at its last value (see docs/pricing.md, "Cost so far").
CREATE VIEW cost_current AS
SELECT customer_id, meter, group_key, aggregation, period_start, period_end, quantity, currency, cost, cost_exact,
       projected_quantity, projected_cost, is_final, as_of, emitted_at
FROM costs FINAL
ORDER BY customer_id, meter, group_key, period_start DESC, emitted_at DESC
LIMIT 1 BY customer_id, meter, group_key;
