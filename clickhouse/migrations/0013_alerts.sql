-- alerts: the threshold alerts `metering alerts run` wrote to the alerts topic (jobs/alerts/,
-- docs/pricing.md "Alerts"), loaded by the loader like the job's topics.
--
-- One row per alert event: `id` is deterministic (rule, threshold, customer, meter, period, kind
-- and, for an `alert.corrected`, its sequence number), `kind` is `alert.triggered`,
-- `alert.resolved` or `alert.corrected`; `value` the value the rule compared (a quantity, a
-- percent or an amount, by `rule_kind`), `previous_value` the one before; `final` whether the
-- period was final when it was judged; `as_of` the stream's event time then; `lag_ms` from the
-- Kafka timestamp of the record that caused it to its evaluation.
-- Engine: ReplacingMergeTree keyed by the id: the evaluator writes each alert once (Kafka
-- transactions), and the loader's re-delivered batches collapse. ORDER BY leads with customer_id:
-- the named query is customer-scoped. PARTITION BY month of the period, like the finals.
-- No TTL: an alert is part of a period's history, as small as its finals.
CREATE TABLE alerts
(
    id               String,
    kind             LowCardinality(String),
    rule             LowCardinality(String),
    rule_kind        LowCardinality(String),
    customer_id      String,
    meter            LowCardinality(String),
    threshold        Decimal(38, 9),
    value            Decimal(38, 9),
    previous_value   Nullable(Decimal(38, 9)),
    period_start     DateTime64(3, 'UTC'),
    period_end       DateTime64(3, 'UTC'),
    final            Bool,
    sequence         UInt32,
    reason           LowCardinality(String),
    as_of            DateTime64(3, 'UTC'),
    lag_ms           Int64,
    emitted_at       DateTime64(3, 'UTC'),
    loaded_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, period_start, id);
