"""Raw events stored through the Arrow insert are exactly those the row insert stored (chDB, no broker).

The same records (the spec's examples, live-shaped events, odd but valid ones) go through
``raw_row`` and into ``raw_events`` once through clickhouse-connect's row insert (the loader's
path before the Arrow insert) and once through ``arrow_table`` and ``insert_arrow``; every column
of every stored row must be equal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from jobs.loader import COLUMNS, arrow_table, raw_row

ROOT = Path(__file__).resolve().parents[2]


def _lines() -> list[bytes]:
    from bench.loader_raw import odd_valid_lines
    from bench.pipeline import live_shaped_lines

    corpus = [p.read_bytes().strip() for p in sorted((ROOT / "schemas" / "examples" / "v1").glob("*/*.json"))]
    live = list(live_shaped_lines(2_000, 20, 100, datetime(2026, 3, 1, tzinfo=UTC)))
    return corpus + odd_valid_lines() + [b'{"quantity": 1.0e3}'] + live


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
