-- Prepaid credits (udfs/credits.py, docs/pricing.md "Prepaid credits"): the ledger of grants and
-- voids, and the balances `metering credits refresh` computes from it and the priced totals.
--
-- credit_ledger: append-only. A grant is one row (`action` 'grant'); voiding it is a second row of
-- the same grant id (`action` 'void', amount 0), never an update or a delete. `amount` is exact,
-- in the currency of the customer's plan at the time of the grant (`currency`), with at most the
-- currency's minor-unit digits (the CLI refuses more). `priority` (smaller burns first),
-- `effective_at`, `expires_at` (NULL: no expiry) and `rollover` ('carry' or 'period') are the
-- grant's terms; `recorded_at`, `recorded_by` and `reason` say when, who and why for either row.
-- Engine: ReplacingMergeTree keyed by (customer_id, grant_id, action): a grant has one grant row
-- and at most one void row, so the key never repeats by design and a retried insert of the same
-- row collapses instead of doubling the credit. Unpartitioned and no TTL: grants are few and are
-- part of the invoices' history.
CREATE TABLE credit_ledger
(
    customer_id   String,
    grant_id      String,
    action        LowCardinality(String),
    amount        Decimal(38, 9),
    currency      LowCardinality(String),
    priority      UInt16,
    effective_at  DateTime64(3, 'UTC'),
    expires_at    Nullable(DateTime64(3, 'UTC')),
    rollover      LowCardinality(String),
    recorded_at   DateTime64(3, 'UTC'),
    recorded_by   String,
    reason        String
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, grant_id, action);

-- credit_balances: per customer the balance as of `as_of`, materialized by `metering credits refresh`
-- (cost is priced in Python from the rate cards, so no view can compute it). A calling service
-- reads one row per customer with FINAL: `remaining_settled` (credit after the cost of final
-- periods), `remaining` (after the provisional cost of periods not final yet too), the
-- `exhaustion` policy with `grace_pct`, and `over_limit`. The other columns make the row add up:
-- granted = remaining + consumed_settled + consumed_pending + expired + voided.
-- Engine: ReplacingMergeTree(as_of) by customer: the newest refresh wins, an older `--at` never
-- replaces a newer row. No TTL, unpartitioned: one row per customer.
CREATE TABLE credit_balances
(
    customer_id        String,
    currency           LowCardinality(String),
    as_of              DateTime64(3, 'UTC'),
    granted            Decimal(38, 9),
    consumed_settled   Decimal(38, 9),
    consumed_pending   Decimal(38, 9),
    remaining_settled  Decimal(38, 9),
    remaining          Decimal(38, 9),
    expired            Decimal(38, 9),
    voided             Decimal(38, 9),
    uncovered_settled  Decimal(38, 9),
    uncovered_pending  Decimal(38, 9),
    exhaustion         LowCardinality(String),
    grace_pct          Nullable(Decimal(38, 9)),
    over_limit         UInt8,
    live_grants        UInt32,
    next_expiry        Nullable(DateTime64(3, 'UTC')),
    settled_through    Nullable(DateTime64(3, 'UTC')),
    refreshed_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(as_of)
ORDER BY customer_id;
