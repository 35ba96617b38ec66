"""The columns of the tables the migrations create, in the order the loader and replay insert them.

Declared once here and used by every writer (jobs/loader, jobs/replay); the period-level tables
share :data:`PERIOD_KEY`. tests/integration/test_records_contract.py holds every list to its
table in a migrated database.
"""

from __future__ import annotations

from schemas.validate import RAW_EVENT_COLUMNS

#: A billing period of one meter of one customer: the key every period-level table starts with.
PERIOD_KEY = ["customer_id", "meter", "group_key", "aggregation", "period_start", "period_end"]

SEGMENT_COLUMNS = [
    "customer_id",
    "meter",
    "group_key",
    "aggregation",
    "minute",
    "day_start",
    "period_start",
    "period_end",
    "segment",
    "version",
    "value",
    "event_count",
    "sum_value",
    "max_value",
    "min_value",
    "distinct_values",
    "latest_ms",
    "latest_value",
]
FINAL_COLUMNS = [
    *PERIOD_KEY,
    "value",
    "event_count",
    "finalized_at_watermark",
]
CORRECTION_COLUMNS = [
    *PERIOD_KEY,
    "minute",
    "sign",
    "value",
    "event_count",
    "event_id",
    "kafka_partition",
    "kafka_offset",
]
DEAD_LETTER_COLUMNS = [
    "reason",
    "meter",
    "customer_id",
    "event_id",
    "payload",
    "payload_size",
    "source_partition",
    "source_offset",
    "source_time",
]
DUPLICATE_COLUMNS = ["customer_id", "event_id", "seen", "variants", "last_seen"]
#: The job writes these as JSON lines (schemas/validate.py).
RAW_COLUMNS = list(RAW_EVENT_COLUMNS)
BATCH_COLUMNS = ["loader_id", "batch_at", "rows", "rows_by_table", "newest_source_time", "consumer_lag"]
QUARANTINE_COLUMNS = [
    "target_table",
    "stage",
    "error_code",
    "error_name",
    "error",
    "row",
    "record",
    "record_key",
    "source_topic",
    "source_partition",
    "source_offset",
    "source_time",
]

AMENDMENT_COLUMNS = [
    "amendment_id",
    "action",
    "customer_id",
    "event_id",
    "event_type",
    "quantity",
    "previous_quantity",
    "outcome",
    "requested_at",
    "requested_by",
    "reason",
    "payload",
    "kafka_partition",
    "kafka_offset",
    "received_at",
]

#: The alerts topic's records (schemas/records.py ``ALERT``, written by ``metering alerts run``).
ALERT_COLUMNS = [
    "id",
    "kind",
    "rule",
    "rule_kind",
    "customer_id",
    "meter",
    "threshold",
    "value",
    "previous_value",
    "period_start",
    "period_end",
    "final",
    "sequence",
    "reason",
    "as_of",
    "lag_ms",
    "emitted_at",
]

#: Prepaid credits (0012_credits.sql): a ledger row (a grant or a void), loaded from the ledger topic.
LEDGER_COLUMNS = [
    "customer_id",
    "grant_id",
    "action",
    "amount",
    "currency",
    "priority",
    "effective_at",
    "expires_at",
    "rollover",
    "recorded_at",
    "recorded_by",
    "reason",
]

#: The costs topic's records (schemas/records.py ``COST``, written by ``metering alerts run`` with ``alerts.costs``).
COST_COLUMNS = [
    *PERIOD_KEY,
    "quantity",
    "currency",
    "cost",
    "cost_exact",
    "projected_quantity",
    "projected_cost",
    "is_final",
    "as_of",
    "emitted_at",
]

#: What the loader inserts, by table.
COLUMNS = {
    "loader_batches": BATCH_COLUMNS,
    "aggregate_segments": SEGMENT_COLUMNS,
    "period_finals": FINAL_COLUMNS,
    "corrections": CORRECTION_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
    "duplicates": DUPLICATE_COLUMNS,
    "raw_events": RAW_COLUMNS,
    "quarantine": QUARANTINE_COLUMNS,
    "amendments": AMENDMENT_COLUMNS,
    "alerts": ALERT_COLUMNS,
    "credit_ledger": LEDGER_COLUMNS,
    "costs": COST_COLUMNS,
}

#: A replay's rows: the loader's columns plus the revision (the loader's rows take the default, 1).
REPLAY_SEGMENT_COLUMNS = [*SEGMENT_COLUMNS, "revision"]
REPLAY_FINAL_COLUMNS = [*FINAL_COLUMNS, "revision"]
ADJUSTMENT_COLUMNS = [
    *PERIOD_KEY,
    "old_revision",
    "revision",
    "old_total",
    "new_total",
    "old_event_count",
    "new_event_count",
    "superseded_corrections",
    "superseded_correction_value",
    "reason",
]
SCOPE_COLUMNS = ["revision", "customer_id", "meter", "period_start", "period_end"]
RUN_COLUMNS = [
    "revision",
    "state",
    "state_rank",
    "started_at",
    "updated_at",
    "range_from",
    "range_to",
    "customers",
    "meters",
    "reason",
    "source",
    "config_sha256",
    "cut",
    "events_examined",
    "periods",
    "adjustments",
    "seconds",
]

#: A balance row of `credits refresh` (0012_credits.sql).
BALANCE_COLUMNS = [
    "customer_id",
    "currency",
    "as_of",
    "granted",
    "consumed_settled",
    "consumed_pending",
    "remaining_settled",
    "remaining",
    "expired",
    "voided",
    "uncovered_settled",
    "uncovered_pending",
    "exhaustion",
    "grace_pct",
    "over_limit",
    "live_grants",
    "next_expiry",
    "settled_through",
    "refreshed_at",
]
