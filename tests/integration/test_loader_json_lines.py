"""The job's aggregate records, converted by ClickHouse (0008_aggregate_segments_json.sql), store what Python's reading stores.

The loader inserts the job's aggregate records as they are into ``aggregate_segments_json``,
whose materialized view converts them into ``aggregate_segments``. The reference is the record
read in Python (``json.loads``, exact Decimals, epoch milliseconds as UTC times), as the loader
did before: every column of every stored row must equal it, over records that reach each
aggregation, nulls, exponents, signs, the bounds of Decimal(38, 9) and text beyond ASCII.
"""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.tables import COLUMNS
from jobs.config import Config
from jobs.loader.loader import Loader, segment_line_row
from udfs.periods import from_epoch_millis

MINUTE = 1_767_225_600_000
BIG = "99999999999999999999999999999.999999999"


def _record(n: int, **changes: Any) -> dict[str, Any]:
    minute = MINUTE + n * 60_000
    record = {"customer_id": f"c-{n}", "meter": "m", "group_key": "{}", "aggregation": "sum", "minute_ms": minute}
    record |= {"day_start_ms": MINUTE, "period_start_ms": MINUTE, "period_end_ms": MINUTE + 31 * 86_400_000}
    record |= {"segment": "on-time", "version": n, "value": "1", "event_count": 1, "sum": "1", "max": None, "min": None}
    record |= {"distinct_values": [], "latest_ms": None, "latest_value": None}
    return record | changes


RECORDS = [
    _record(0),
    _record(1, value="1E-9", sum="1E-9"),
    _record(2, value="-12.5", sum="-12.5", event_count=3),
    _record(3, value=BIG, sum=BIG, aggregation="max", max=BIG),
    _record(4, value="-" + BIG, sum="0", aggregation="min", min="-" + BIG),
    _record(5, value="2", aggregation="unique_count", distinct_values=["a", "\u00e9\u4e2d\U0001f600", 'q"\\'], sum="0"),
    _record(6, value="7.25", aggregation="latest", latest_ms=MINUTE + 123, latest_value="7.25"),
    _record(7, customer_id='c:\u00e9/"x"', group_key='{"region":"eu-\u00e9"}', segment="late:e-1", version=2**40),
    _record(8, value="0E-9", sum="1E+3"),
]


def _reference(record: dict[str, Any]) -> tuple[Any, ...]:
    def dec(text: Any) -> Decimal | None:
        return None if text is None else Decimal(text)

    ms = from_epoch_millis
    return (
        record["customer_id"], record["meter"], record["group_key"], record["aggregation"],
        ms(record["minute_ms"]), ms(record["day_start_ms"]), ms(record["period_start_ms"]), ms(record["period_end_ms"]),
        record["segment"], record["version"], dec(record["value"]), record["event_count"], dec(record["sum"]),
        dec(record["max"]), dec(record["min"]), record["distinct_values"], record["latest_ms"], dec(record["latest_value"]),
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("ascii_only", [True, False])
def test_aggregate_records_store_what_pythons_reading_stores(storage_settings: StorageSettings, ascii_only: bool) -> None:
    lines = [json.dumps(r, ensure_ascii=ascii_only, separators=(",", ":")).encode() for r in RECORDS]
    records = [
        SimpleNamespace(topic="aggregates", partition=0, offset=n, timestamp=0, key=None, value=v) for n, v in enumerate(lines)
    ]
    columns = ", ".join(COLUMNS["aggregate_segments"])
    with open_storage(storage_settings) as storage:
        migrate(storage)
        loader = Loader(Config(), storage)
        rows = [segment_line_row(r)[1] for r in records]
        quarantine: list[list[Any]] = []
        assert loader._store("aggregate_segments", rows, records, quarantine) == len(rows) and not quarantine
        stored = storage.query_rows(f"SELECT {columns} FROM aggregate_segments ORDER BY minute")
    expected = [_reference(r) for r in RECORDS]
    got = [tuple(v.replace(tzinfo=from_epoch_millis(0).tzinfo) if hasattr(v, "tzinfo") else v for v in row) for row in stored]
    assert got == expected
