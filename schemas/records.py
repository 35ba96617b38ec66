"""The records that cross a process or a language, each declared once: its fields, in order, with their Flink types.

The job writes these to Kafka and the loader reads them; the declarations here are what both
sides are built from and tested against:

* the Flink SQL sinks' and the finalization's input columns are generated from them
  (``jobs/flink/metering_job.py``, ``jobs/flink/sql.py``);
* the JSON records the job's Java writes (``udfs/jvm``: ``Finalize``, ``EventRules.rawRow``) carry
  exactly these fields in this order (tests/flink/test_finalize.py, tests/unit/test_event_agreement.py);
* the records ClickHouse reads as they are have tables whose columns are these fields
  (``raw_events``, ``aggregate_segments_json``; tests/integration/test_records_contract.py);
* the loader converts the others by these names (jobs/loader/loader.py; tests/unit/test_records.py).

JSON forms: the Flink JSON format's for the dead letters and duplicates (decimals as plain
numbers, ``TIMESTAMP_LTZ`` as ``YYYY-MM-DD hh:mm:ss.mmmZ``); the Java writers' own for the others
(decimals as strings, times in epoch milliseconds except in raw rows, which carry ClickHouse's
UTC text).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    #: Flink SQL type (the column's type where the record is a Flink row or a sink's column)
    flink: str


@dataclass(frozen=True)
class Record:
    """One record type: its fields in order."""

    name: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def flink_columns(self) -> str:
        """``name TYPE, …``: a Flink table's column list."""
        return ", ".join(f"{f.name} {f.flink}" for f in self.fields)

    def column_names(self) -> str:
        """``name, …``: a SELECT list."""
        return ", ".join(self.names)


def _fields(spec: str) -> tuple[Field, ...]:
    """``"name TYPE, name TYPE"`` as fields (a comma inside ``<…>`` belongs to its type)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(spec):
        depth += (c == "<") - (c == ">")
        if c == "," and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return tuple(Field(*part.strip().split(" ", 1)) for part in parts)


#: What the finalization reads (``metering_finalize``'s input): on-time steps and late events.
PARTIAL = Record(
    "partial",
    _fields(
        "customer_id STRING, meter STRING, group_key STRING, minute_ms BIGINT, window_end_ms BIGINT, cnt BIGINT, "
        "total STRING, mx STRING, mn STRING, distinct_values STRING, latest_enc STRING, event_id STRING, "
        "partition_wm_ms BIGINT, replayed BOOLEAN"
    ),
)

#: The value fields every aggregate, final and correction carries (``rules/Partial.appendJson``).
_PARTIAL_VALUE = (
    "value STRING, event_count BIGINT, sum STRING, max STRING, min STRING, distinct_values ARRAY<STRING>, "
    "latest_ms BIGINT, latest_value STRING"
)
_KEY = "customer_id STRING, meter STRING, group_key STRING, aggregation STRING"

#: A minute's provisional value (the aggregates topic), inserted as it is into ``aggregate_segments_json``.
AGGREGATE = Record(
    "aggregate",
    _fields(
        f"{_KEY}, minute_ms BIGINT, day_start_ms BIGINT, period_start_ms BIGINT, period_end_ms BIGINT, segment STRING, "
        f"version BIGINT, {_PARTIAL_VALUE}"
    ),
)

#: A billing period's final total (the finals topic).
FINAL = Record(
    "final",
    _fields(f"{_KEY}, period_start_ms BIGINT, period_end_ms BIGINT, finalized_at_watermark_ms BIGINT, {_PARTIAL_VALUE}"),
)

#: A change to a final period (the corrections topic): ``retract`` undoes a previous correction.
CORRECTION = Record(
    "correction",
    _fields(
        f"{_KEY}, period_start_ms BIGINT, period_end_ms BIGINT, minute_ms BIGINT, retract BOOLEAN, event_id STRING, "
        f"{_PARTIAL_VALUE}"
    ),
)

#: A record the job refused, with why and where it came from (the dead letters topic, Flink's JSON).
DEAD_LETTER = Record(
    "dead_letter",
    _fields(
        "reason STRING, meter STRING, customer_id STRING, event_id STRING, payload_base64 STRING, payload_size INT, "
        "kafka_partition INT, kafka_offset BIGINT, kafka_ts TIMESTAMP_LTZ(3)"
    ),
)

#: How often an event id was seen, and in how many variants (the duplicates topic, upserts).
DUPLICATE = Record(
    "duplicate", _fields("customer_id STRING, event_id STRING, seen BIGINT, variants BIGINT, last_seen TIMESTAMP_LTZ(3)")
)

#: A valid event's ``raw_events`` row (the raw topic), inserted as it is: the table's columns.
RAW_EVENT = Record(
    "raw_event",
    _fields(
        "event_id STRING, customer_id STRING, event_type STRING, event_time STRING, quantity STRING, "
        "properties MAP<STRING, STRING>, resource STRING, user_id STRING, region STRING, source STRING, "
        "schema_version INT, status STRING, kafka_topic STRING, kafka_partition INT, kafka_offset BIGINT, "
        "received_at STRING, payload STRING"
    ),
)

#: What became of an amendment (the amendments topic, Flink's JSON): one per amendment record read.
#: ``outcome`` is ``applied``, ``repeated`` or a refusal (schemas/amendments.py); ``previous_quantity``
#: what the event counted before an applied one; ``payload_base64`` the amendment record (who, when, why).
AMENDMENT = Record(
    "amendment",
    _fields(
        "amendment_id STRING, action STRING, customer_id STRING, event_id STRING, event_type STRING, quantity STRING, "
        "previous_quantity STRING, outcome STRING, payload_base64 STRING, kafka_partition INT, kafka_offset BIGINT, "
        "kafka_ts TIMESTAMP_LTZ(3)"
    ),
)

#: A threshold alert (the alerts topic, written by ``metering alerts run``, jobs/alerts/): ``id`` is
#: deterministic (udfs/alerting.py, ``alert_id``), ``kind`` ``alert.triggered``, ``alert.resolved`` or
#: ``alert.corrected``; decimals as strings, times in epoch milliseconds; ``lag_ms`` from the Kafka
#: timestamp of the record that caused it to the alert's evaluation. Inserted as it is into ``alerts``.
ALERT = Record(
    "alert",
    _fields(
        "id STRING, kind STRING, rule STRING, rule_kind STRING, customer_id STRING, meter STRING, threshold STRING, "
        "value STRING, previous_value STRING, period_start_ms BIGINT, period_end_ms BIGINT, final BOOLEAN, "
        "sequence BIGINT, reason STRING, as_of_ms BIGINT, lag_ms BIGINT, emitted_ms BIGINT"
    ),
)

#: A prepaid credit ledger row (the credit ledger topic, written by ``metering credits grant|void``,
#: read by ``metering alerts run``): ``action`` ``grant`` or ``void`` (a void's ``effective_at_ms`` is
#: the instant it takes effect); the ``credit_ledger`` table's columns with decimals as strings and
#: times in epoch milliseconds (``expires_at_ms`` null: never).
CREDIT_LEDGER = Record(
    "credit_ledger",
    _fields(
        "customer_id STRING, grant_id STRING, action STRING, amount STRING, currency STRING, priority INT, "
        "effective_at_ms BIGINT, expires_at_ms BIGINT, rollover STRING, recorded_at_ms BIGINT, recorded_by STRING, "
        "reason STRING"
    ),
)

#: The cost so far of one group of a customer's meter in one period (the costs topic, written by
#: ``metering alerts run`` with ``alerts.costs``, docs/pricing.md "Cost so far"): ``quantity`` is the
#: final with its corrections once ``is_final``, else the running value; ``cost`` (rounded) and
#: ``cost_exact`` that quantity priced by the customer's card, ``projected_quantity`` and
#: ``projected_cost`` its projection at ``as_of_ms`` priced so (udfs/projection.py ``cost_so_far``);
#: ``currency``, ``cost`` and ``projected_cost`` null when unpriced. Decimals as strings, times in
#: epoch milliseconds. Converted into ``costs``.
COST = Record(
    "cost",
    _fields(
        "customer_id STRING, meter STRING, group_key STRING, aggregation STRING, period_start_ms BIGINT, "
        "period_end_ms BIGINT, quantity STRING, currency STRING, cost STRING, cost_exact STRING, projected_quantity STRING, "
        "projected_cost STRING, is_final BOOLEAN, as_of_ms BIGINT, emitted_ms BIGINT"
    ),
)

ALL = (PARTIAL, AGGREGATE, FINAL, CORRECTION, DEAD_LETTER, DUPLICATE, RAW_EVENT, AMENDMENT, ALERT, CREDIT_LEDGER, COST)
