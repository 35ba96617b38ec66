"""Raw events stored through the Arrow insert are exactly those the row insert stored (chDB, no broker).

The same records (the spec's examples, live-shaped events, odd but valid ones) go through
``raw_row`` and into ``raw_events`` once through clickhouse-connect's row insert (the loader's
path before the Arrow insert) and once through ``arrow_table`` and ``insert_arrow``; every column
of every stored row must be equal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from jobs.loader import COLUMNS, arrow_table, raw_row

ROOT = Path(__file__).resolve().parents[2]


def _lines() -> list[bytes]:
    from bench.pipeline import live_shaped_lines

    corpus = [p.read_bytes().strip() for p in sorted((ROOT / "schemas" / "examples" / "v1").glob("*/*.json"))]
    base = {"event_id": "odd", "customer_id": "c:1@x", "event_type": "t.x-1", "quantity": "0.000000001"}
    odd = [
        {**base, "timestamp": "2026-01-31T23:59:59.9999999-01:30"},  # a month later in UTC, sub-ms truncated
        {**base, "timestamp": "1970-01-01T00:00:00Z", "quantity": 0},
        {**base, "timestamp": "2099-12-31T23:59:59.999+00:00", "quantity": "99999999999999999999999999999.999999999"},
        {**base, "timestamp": "2026-03-01 12:00:00z", "properties": {"a": "\u00e9\u4e2d\U0001f600", "b": None, "c": False}},
        {**base, "timestamp": "2026-03-01T12:00:00Z", "event_id": "tab\\there", "resource": "r" * 256, "source": "s"},
    ]
    live = list(live_shaped_lines(2_000, 20, 100, datetime(2026, 3, 1, tzinfo=UTC)))
    return corpus + [json.dumps(e, ensure_ascii=False).encode() for e in odd] + [b'{"quantity": 1.0e3}'] + live


def test_arrow_and_row_inserts_store_the_same_raw_events(storage_settings: StorageSettings) -> None:
    records = [
        SimpleNamespace(topic="usage-events", partition=n % 2, offset=n, timestamp=1_772_323_200_000 + n, key=None, value=line)
        for n, line in enumerate(_lines())
    ]
    rows: list[list[Any]] = [converted[1] for r in records if (converted := raw_row(r)) is not None]
    assert 2_000 < len(rows) < len(records)  # the invalid examples are skipped
    select = "SELECT * FROM raw_events ORDER BY kafka_partition, kafka_offset"
    with open_storage(storage_settings) as storage:
        migrate(storage)
        storage.client.insert("raw_events", rows, column_names=COLUMNS["raw_events"])
        by_rows = storage.query_rows(select)
        storage.command("TRUNCATE TABLE raw_events")
        storage.client.insert_arrow("raw_events", arrow_table("raw_events", rows))
        by_arrow = storage.query_rows(select)
    assert len(by_arrow) == len(rows)
    assert by_arrow == by_rows
