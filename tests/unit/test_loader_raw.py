"""The loader's Arrow inserts of raw events (jobs/loader.py ``arrow_table``): types, exact values, refusals.

tests/integration/test_loader_raw_arrow.py stores the same rows both ways in chDB and compares.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from jobs.inserts import InsertErrorKind, classify_insert_error
from jobs.loader import COLUMNS, arrow_table, raw_row


def record(value: bytes, offset: int = 7) -> Any:
    return SimpleNamespace(topic="usage-events", partition=2, offset=offset, timestamp=1_772_323_200_123, key=None, value=value)


EVENT = {
    "event_id": "e-1",
    "customer_id": "acme",
    "event_type": "gpu_seconds",
    "timestamp": "2026-02-28T19:00:00.987654321-05:00",
    "quantity": "-12345678901234567890123456789.123456789",
    "properties": {"gpu": "a100", "n": 3, "on": True, "none": None},
    "region": "eu",
}


def test_raw_rows_become_one_arrow_table_with_the_columns_types_and_exact_values() -> None:
    # a number as written (1.50, not 1.5), text beyond ASCII
    line = json.dumps(EVENT, ensure_ascii=False).replace('"gpu": "a100"', '"gpu": "a100 é", "ratio": 1.50').encode()
    converted = raw_row(record(line))
    assert converted is not None
    table = arrow_table("raw_events", [converted[1]])
    assert table is not None and table.column_names == COLUMNS["raw_events"] and table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["event_time"] == datetime(2026, 3, 1, 0, 0, 0, 987000, tzinfo=UTC)  # truncated to ms, in UTC
    assert table.schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert row["quantity"] == Decimal("-12345678901234567890123456789.123456789")
    assert table.schema.field("quantity").type == pa.decimal128(38, 9)
    assert dict(row["properties"]) == {"gpu": "a100 é", "ratio": "1.50", "n": "3", "on": "true", "none": ""}
    assert row["payload"] == line  # the record's bytes as they are
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == ("usage-events", 2, 7)
    assert row["received_at"] == datetime(2026, 3, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert (row["region"], row["resource"], row["status"], row["schema_version"]) == ("eu", "", "received", 1)


def test_many_rows_keep_their_order_and_no_rows_make_an_empty_table() -> None:
    rows = []
    for n in range(5):
        converted = raw_row(record(json.dumps({**EVENT, "event_id": f"e-{n}", "properties": {}}).encode(), offset=n))
        assert converted is not None
        rows.append(converted[1])
    table = arrow_table("raw_events", rows)
    assert table is not None and table.column("event_id").to_pylist() == [f"e-{n}" for n in range(5)]
    assert table.column("kafka_offset").to_pylist() == list(range(5))
    empty = arrow_table("raw_events", [])
    assert empty is not None and empty.num_rows == 0 and empty.column_names == COLUMNS["raw_events"]


def test_other_tables_are_inserted_as_rows() -> None:
    assert arrow_table("aggregate_segments", [["x"]]) is None
    assert arrow_table("quarantine", []) is None


@pytest.mark.parametrize(
    "column, value",
    [
        ("quantity", Decimal("1" * 30)),  # beyond Decimal(38, 9)
        ("quantity", Decimal("0.0000000001")),  # beyond its scale: never rounded
        ("kafka_partition", -1),
        ("event_id", 5),
    ],
)
def test_a_value_its_column_cannot_hold_is_an_error_about_the_rows(column: str, value: Any) -> None:
    converted = raw_row(record(json.dumps({**EVENT, "properties": {}}).encode()))
    assert converted is not None
    row = list(converted[1])
    row[COLUMNS["raw_events"].index(column)] = value
    with pytest.raises((ValueError, TypeError, OverflowError)) as raised:
        arrow_table("raw_events", [row])
    assert classify_insert_error(raised.value).kind is InsertErrorKind.REFUSED  # bisected and quarantined, not retried


def test_a_short_row_is_an_error_about_the_rows() -> None:
    converted = raw_row(record(json.dumps({**EVENT, "properties": {}}).encode()))
    assert converted is not None
    with pytest.raises(ValueError) as raised:
        arrow_table("raw_events", [converted[1], converted[1][:-1]])
    assert classify_insert_error(raised.value).kind is InsertErrorKind.REFUSED
