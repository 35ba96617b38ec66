"""The stream-rated cost on chDB: the evaluator's cost records, converted by the loader, into ``costs``; the
``cost_current`` view and the ``stream_cost`` named query return each group's newest period's newest emission."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import run_query
from clickhouse.tables import COLUMNS
from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, Evaluator
from jobs.cli import main
from jobs.loader.loader import cost_row
from tests.unit.test_alert_evaluator import P0, P1, P2, aggregate, correction, final, run
from tests.unit.test_cost_records import COSTS, DAY, RATING
from udfs.periods import from_epoch_millis, rfc3339_millis

EU = '{"region":"eu"}'


def _rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    converted = [cost_row(SimpleNamespace(value=json.dumps(r).encode())) for r in records]
    assert {table for table, _ in converted} == {"costs"}
    return [row for _, row in converted]


def test_the_table_and_the_view_return_the_newest_cost(
    storage_settings: StorageSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluator = Evaluator(COSTS, RATING)
    emitted: list[dict[str, Any]] = []
    transactions = [
        [(AGGREGATE, aggregate(P0 + DAY, 1, 600)), (AGGREGATE, aggregate(P0 + DAY, 1, 40, group=EU))],
        [(FINAL, final(1200))],
        [(CORRECTION, correction(200))],
        [(AGGREGATE, aggregate(P1 + DAY, 1, 150, period=(P1, P2), group=EU))],  # eu's newer period
    ]
    for now_ms, records in enumerate(transactions, start=1_000):
        run(evaluator, records)
        emitted += evaluator.take_costs(now_ms=now_ms)
    assert len(emitted) == 5
    with open_storage(storage_settings) as storage:
        migrate(storage)
        rows = _rows(emitted)
        # the loader's batches may be re-delivered, in any order of inserts: the newest emission still wins
        for block in (rows, rows[:2], rows[2:]):
            storage.client.insert("costs", block, column_names=COLUMNS["costs"])
        current = run_query(storage, "stream_cost", {"customer": "acme", "meter": ""})
        assert [(r["group_key"], r["period_start"], r["is_final"], r["quantity"], r["cost"]) for r in current] == [
            ("", "2026-03-01T00:00:00.000Z", True, "1400", "11"),
            (EU, "2026-04-01T00:00:00.000Z", False, "150", "0.5"),
        ]
        assert current[0]["cost_exact"] == "11" and current[0]["currency"] == "USD"
        newest = emitted[-1]
        assert Decimal(current[1]["projected_quantity"]) == Decimal(newest["projected_quantity"]) > 150
        assert Decimal(current[1]["projected_cost"]) == Decimal(newest["projected_cost"])
        assert current[1]["as_of"] == rfc3339_millis(from_epoch_millis(newest["as_of_ms"]))
        assert run_query(storage, "stream_cost", {"customer": "bob", "meter": ""}) == []
        assert run_query(storage, "stream_cost", {"customer": "", "meter": "tokens"}) == []
        (count,) = storage.query_rows("SELECT count() FROM costs FINAL")[0]
        assert count == 3  # one row per (customer, meter, group, period)

    # `metering query stream-cost` reads the same rows
    path = tmp_path / "metering.yaml"
    stored_at = {"backend": "chdb", "path": str(storage_settings.path), "database": storage_settings.database}
    path.write_text(
        yaml.safe_dump({"storage": stored_at, "meters": [{"name": "api_calls", "event_type": "x", "aggregation": "count"}]})
    )
    capsys.readouterr()
    assert main(["query", "stream-cost", "--customer", "acme", "--format", "json", "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["group_by"], r["quantity"], r["cost"]) for r in printed] == [({}, "1400", "11"), ({"region": "eu"}, "150", "0.5")]
