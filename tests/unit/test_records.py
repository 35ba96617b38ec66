"""Each record the loader converts in Python round-trips by its declaration (schemas/records.py).

A record with every declared field, in the form the job writes it, converts into a row of its
table; the loader reads no field the declaration lacks (a typo on either side fails here); and
the Flink sinks and the finalization's input are generated from the same declarations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

import jobs.loader.loader as loader
from clickhouse import tables
from jobs.flink import metering_job, sql
from schemas import records

#: A sample value per Flink type, in the JSON form the job writes it.
SAMPLES: dict[str, Any] = {
    "STRING": "x",
    "BIGINT": 1_767_225_600_000,
    "INT": 3,
    "BOOLEAN": True,
    "ARRAY<STRING>": ["a"],
    "TIMESTAMP_LTZ(3)": "2026-01-01 00:00:00.000Z",
}
DECIMALS = {
    "value",
    "sum",
    "max",
    "min",
    "latest_value",
    "threshold",
    "previous_value",
    "amount",
    "quantity",
    "cost",
    "cost_exact",
    "projected_quantity",
    "projected_cost",
}


def sample(record: records.Record) -> dict[str, Any]:
    return {f.name: "1.5" if f.name in DECIMALS else SAMPLES[f.flink] for f in record.fields}


class Reads(dict[str, Any]):
    """A decoded record that remembers which fields were read."""

    read: set[str]

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


CONVERTED: list[tuple[records.Record, Callable[[Any], Any], str]] = [
    (records.FINAL, loader.final_row, "period_finals"),
    (records.CORRECTION, loader.correction_row, "corrections"),
    (records.DEAD_LETTER, loader.dead_letter_row, "dead_letters"),
    (records.DUPLICATE, loader.duplicate_row, "duplicates"),
    (records.ALERT, loader.alert_row, "alerts"),
    (records.CREDIT_LEDGER, loader.credit_ledger_row, "credit_ledger"),
    (records.COST, loader.cost_row, "costs"),
]


@pytest.mark.parametrize(("record", "convert", "table"), CONVERTED, ids=[c[2] for c in CONVERTED])
def test_a_declared_record_converts_and_the_loader_reads_only_declared_fields(
    record: records.Record, convert: Callable[[Any], Any], table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = sample(record)
    if record is records.DEAD_LETTER:
        fields["payload_base64"] = "eA=="
    decoded = Reads(fields)
    decoded.read = set()
    monkeypatch.setattr(loader, "json", SimpleNamespace(loads=lambda _: decoded))
    converted = convert(SimpleNamespace(value=json.dumps(fields).encode(), topic="t", partition=1, offset=2, timestamp=0))
    assert converted is not None and converted[0] == table and len(converted[1]) == len(tables.COLUMNS[table])
    assert decoded.read <= set(record.names), decoded.read - set(record.names)
    assert decoded.read, "the row reads the record"


def test_a_final_round_trips_its_values() -> None:
    fields = sample(records.FINAL) | {"value": "12.000000001", "event_count": 4, "finalized_at_watermark_ms": 1_767_225_600_123}
    _, row = loader.final_row(SimpleNamespace(value=json.dumps(fields).encode()))
    stored = dict(zip(tables.COLUMNS["period_finals"], row, strict=True))
    assert stored["value"] == Decimal("12.000000001") and stored["event_count"] == 4
    assert stored["finalized_at_watermark"] == datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)


def test_the_flink_columns_come_from_the_declarations() -> None:
    assert records.DEAD_LETTER.flink_columns() == metering_job.DEAD_LETTER_COLUMNS
    assert records.DUPLICATE.flink_columns() == metering_job.DUPLICATE_COLUMNS
    assert sql.PARTIAL_COLUMNS.split(", ") == list(records.PARTIAL.names)
    assert records.DEAD_LETTER.names == ("reason", "meter", "customer_id", "event_id", "payload_base64", "payload_size",
                                         "kafka_partition", "kafka_offset", "kafka_ts")  # fmt: skip
    assert list(records.RAW_EVENT.names) == tables.RAW_COLUMNS


def test_a_type_with_a_comma_stays_one_field() -> None:
    (properties,) = (f for f in records.RAW_EVENT.fields if f.name == "properties")
    assert properties.flink == "MAP<STRING, STRING>" and len(records.RAW_EVENT.fields) == 17


def test_an_amendments_outcome_round_trips_with_who_when_and_why_from_its_record() -> None:
    import base64

    amendment = {"amendment": "amend", "amendment_id": "amd-1", "customer_id": "acme", "event_id": "e-1"}
    amendment |= {"quantity": "7.5", "requested_at": "2026-03-02T08:00:00.250+01:00", "requested_by": "key:ops"}
    payload = json.dumps(amendment | {"reason": "a typo"}).encode()
    fields: dict[str, object] = {"amendment_id": "amd-1", "action": "amend", "customer_id": "acme", "event_id": "e-1"}
    fields |= {"event_type": "tokens"}
    fields |= {"quantity": "7.5", "previous_quantity": "70", "outcome": "applied"}
    fields |= {"payload_base64": base64.b64encode(payload).decode(), "kafka_partition": 3, "kafka_offset": 9}
    fields |= {"kafka_ts": "2026-03-02 07:00:01.000Z"}
    assert set(fields) == set(records.AMENDMENT.names)
    table, row = loader.amendment_row(SimpleNamespace(value=json.dumps(fields).encode()))
    stored = dict(zip(tables.COLUMNS[table], row, strict=True))
    assert table == "amendments" and stored["quantity"] == Decimal("7.5") and stored["previous_quantity"] == Decimal(70)
    assert stored["requested_at"] == datetime(2026, 3, 2, 7, 0, 0, 250000, tzinfo=UTC)
    assert (stored["requested_by"], stored["reason"], stored["payload"]) == ("key:ops", "a typo", payload)
    assert records.AMENDMENT.flink_columns() == metering_job.AMENDMENT_COLUMNS


def test_a_ledger_row_round_trips_from_what_the_credits_commands_publish() -> None:
    """``LedgerRow.record`` (what grant and void publish) -> the loader's row -> the same ``LedgerRow`` values."""
    from clickhouse.credits import LedgerRow

    at = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    grant = LedgerRow("acme", "g1", "grant", Decimal("250.00"), "USD", 5, at, None, "carry", at, "local:ops", "prepaid")
    void = LedgerRow("acme", "g1", "void", Decimal(0), "USD", 5, at, at, "period", at, "token:t1", "mistake")
    for row in (grant, void):
        table, values = loader.credit_ledger_row(SimpleNamespace(value=json.dumps(row.record()).encode()))
        assert table == "credit_ledger" and values == row.values()
        assert dict(zip(tables.COLUMNS[table], values, strict=True))["amount"] == row.amount
    # re-delivery converts to the very same row: the table's key (customer, grant id, action) collapses it
    record = SimpleNamespace(value=json.dumps(grant.record()).encode())
    assert loader.credit_ledger_row(record) == loader.credit_ledger_row(record)
