"""The job's raw lines, inserted as they are, store exactly the reference rows (the JVM's lines, chDB, no broker).

The job writes each valid event's ``raw_events`` row as one JSON line (``udfs/jvm`` EventRules.rawRow)
and the loader inserts the lines as they are (``JSONEachRow``). tests/unit/test_event_agreement.py
holds the lines' values to :func:`schemas.validate.raw_event_row`; this holds ClickHouse's reading
of them: the same records (the spec's examples, events at the edges of the spec, live-shaped
events) stored from the Java lines through the loader's insert and from the reference rows through
clickhouse-connect's row insert must be equal in every column.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.tables import COLUMNS
from jobs.config import Config
from jobs.loader.loader import Loader, raw_line_row
from schemas.validate import RAW_EVENT_COLUMNS, raw_event_row
from tests.jvm import JavaProcess
from tests.support.lines import spec_example_lines
from udfs.periods import from_epoch_millis

#: EventVerdicts writes every raw line at these coordinates (its RAW_*); the offset is then made unique.
TOPIC, PARTITION, OFFSET, RECEIVED_MS = "usage-events", 3, 42, 1_767_225_600_123


def _lines() -> list[bytes]:
    from bench.loader_raw import odd_valid_lines
    from bench.pipeline import live_shaped_lines

    corpus = spec_example_lines()
    live = list(live_shaped_lines(2_000, 20, 100, datetime(2026, 3, 1, tzinfo=UTC)))
    return corpus + odd_valid_lines() + [b'{"quantity": 1.0e3}'] + live


def _java_raw_lines(lines: list[bytes]) -> list[str | None]:
    java = JavaProcess("dev.metering.udfs.EventVerdicts", jvm_options=("-Xss4m",))
    try:
        answers = java.exchange(b"".join(struct.pack(">i", len(line)) + line for line in lines), len(lines))
    finally:
        java.close()
    return [answer[-1] for answer in answers]


@pytest.mark.integration
def test_the_jobs_raw_lines_store_what_the_reference_rows_store(storage_settings: StorageSettings) -> None:
    lines = _lines()
    java_lines = _java_raw_lines(lines)
    records, reference = [], []
    for n, (line, raw) in enumerate(zip(lines, java_lines, strict=True)):
        row = raw_event_row(line, TOPIC, PARTITION, n, RECEIVED_MS)
        assert (row is None) == (raw is None), line
        if row is None or raw is None:
            continue
        value = raw.replace(f'"kafka_offset":{OFFSET},', f'"kafka_offset":{n},').encode()
        key = str(row["event_time"]).encode()
        records.append(SimpleNamespace(topic="raw", partition=0, offset=n, timestamp=0, key=key, value=value))
        row |= {"event_time": from_epoch_millis(row["event_time"]), "received_at": from_epoch_millis(row["received_at"])}
        reference.append([row[c] for c in RAW_EVENT_COLUMNS])
    assert 2_000 < len(reference) < len(lines)  # the invalid examples have no line
    select = "SELECT * FROM raw_events ORDER BY kafka_offset"
    with open_storage(storage_settings) as storage:
        migrate(storage)
        storage.client.insert("raw_events", reference, column_names=COLUMNS["raw_events"])
        by_reference = storage.query_rows(select)
        storage.command("TRUNCATE TABLE raw_events")
        loader = Loader(Config(), storage)
        rows: list[list[Any]] = [converted[1] for r in records if (converted := raw_line_row(r)) is not None]
        quarantine: list[list[Any]] = []
        assert loader._store("raw_events", rows, records, quarantine) == len(rows) and not quarantine
        by_lines = storage.query_rows(select)
    assert len(by_lines) == len(reference)
    assert by_lines == by_reference
    assert json.loads(records[0].value)["payload"].encode() == next(r for r in reference)[-1]
