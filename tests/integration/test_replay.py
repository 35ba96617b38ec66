"""metering replay against chDB: revisions, the atomic switch, adjustments, superseded corrections and refusals.

The data set is the data-quality suite's (tests/integration/test_quality_checks.py): raw events, the segments,
finals, corrections and dead letters the live pipeline would have written for them, built independently of the
replay code. A replay with the same configuration must therefore reproduce every final; the only change is the
late correction it absorbs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from clickhouse import quality
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import StorageReader
from jobs.config import Config, load_config
from jobs.replay import Replay, ReplayError, ReplayRequest, replay
from tests.integration.test_quality_checks import seed, write_config

pytestmark = pytest.mark.integration

FEBRUARY = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 28, 22, tzinfo=UTC))  # closed for acme and globex


@pytest.fixture
def seeded(storage_settings: StorageSettings, tmp_path: Path) -> Iterator[tuple[Storage, Config, Path]]:
    config_path = write_config(tmp_path / "metering.yaml", storage_settings)
    with open_storage(storage_settings) as storage:
        migrate(storage)
        seed(storage, load_config(config_path, env={}))
        yield storage, load_config(config_path, env={}), config_path


def variant(config_path: Path, change: Any) -> Config:
    document = yaml.safe_load(config_path.read_text())
    change(document)
    path = config_path.with_name("variant.yaml")
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={})


def visible_finals(storage: Storage) -> dict[tuple[str, str, str], tuple[Decimal, int, int]]:
    rows = storage.query_rows("SELECT customer_id, meter, group_key, value, event_count, revision FROM visible_finals")
    return {(c, m, g): (v, n, r) for c, m, g, v, n, r in rows}


def count(storage: Storage, sql: str) -> int:
    return int(storage.query_rows(sql)[0][0])


def request(**kwargs: Any) -> ReplayRequest:
    return ReplayRequest(*FEBRUARY, **{"reason": "test", **kwargs})


def test_the_same_configuration_reproduces_every_final_and_absorbs_the_late_correction(
    seeded: tuple[Storage, Config, Path],
) -> None:
    storage, config, _ = seeded
    before = visible_finals(storage)
    stored = count(storage, "SELECT count() FROM period_finals")

    dry = replay(storage, config, request(dry_run=True))
    assert dry.dry_run and dry.events_counted == 11
    for table in ("replay_scope", "replay_runs", "adjustments", "replay_events"):
        assert count(storage, f"SELECT count() FROM {table}") == 0, f"a dry run wrote to {table}"
    assert visible_finals(storage) == before and count(storage, "SELECT count() FROM period_finals") == stored

    report = replay(storage, config, request())
    assert report.revision == dry.revision == 2
    after = visible_finals(storage)
    m2 = ("acme", "tokens", '{"model":"m2"}')
    assert {k: v[:2] for k, v in after.items() if k != m2} == {k: v[:2] for k, v in before.items() if k != m2}
    assert {v[2] for v in after.values()} == {2}
    # a17 (11 tokens, after February's final) was a correction; the new final counts it and the correction goes
    assert before[m2][:2] == (Decimal(7), 1) and after[m2][:2] == (Decimal(18), 2)
    assert count(storage, "SELECT count() FROM corrections") == 1
    assert count(storage, "SELECT count() FROM visible_corrections") == 0
    [adjustment] = [a for a in report.adjustments]
    assert (adjustment.meter, adjustment.old_total, adjustment.new_total, adjustment.superseded_corrections) == (
        "tokens",
        Decimal(7),
        Decimal(18),
        1,
    )
    stored_adjustment = storage.query_rows(
        "SELECT old_total, new_total, revision, old_revision, superseded_correction_value, reason FROM adjustments"
    )
    assert stored_adjustment == [(Decimal(7), Decimal(18), 2, 1, Decimal(11), "test")]
    # audit: the live revision is still stored next to the new one
    assert count(storage, "SELECT count() FROM period_finals WHERE revision = 1") == stored
    assert storage.query_rows("SELECT state FROM replay_runs FINAL") == [("committed",)]
    # the aggregates still reconcile: minutes = hours = days = periods, finals = segments, segments = raw events
    report_checks = quality.run_checks(
        StorageReader(storage), config, quality.CheckOptions(suites=("aggregates",), docs_dir=None)
    )
    assert [s.name for s in report_checks.suites if not s.success] == []


def test_a_replay_of_a_replay_is_a_new_revision_with_nothing_to_adjust(seeded: tuple[Storage, Config, Path]) -> None:
    storage, config, _ = seeded
    replay(storage, config, request())
    first = visible_finals(storage)
    again = replay(storage, config, request())
    assert again.revision == 3 and again.adjustments == []
    assert {k: v[:2] for k, v in visible_finals(storage).items()} == {k: v[:2] for k, v in first.items()}


def test_a_changed_meter_rewrites_only_its_finals_and_its_refusals_become_dead_letters(
    seeded: tuple[Storage, Config, Path],
) -> None:
    storage, _, config_path = seeded

    def disallow_negative_credits(document: dict[str, Any]) -> None:
        for meter in document["meters"]:
            if meter["name"] == "credits":
                meter["allow_negative"] = False

    fixed = variant(config_path, disallow_negative_credits)
    before = visible_finals(storage)
    report = replay(storage, fixed, request(meters=("credits",)))
    assert report.refusals == {"negative_value": 1}
    [adjustment] = report.adjustments
    assert (adjustment.meter, adjustment.old_total, adjustment.new_total, adjustment.delta) == (
        "credits",
        Decimal("-5.25"),
        None,
        Decimal("5.25"),
    )
    after = visible_finals(storage)
    assert ("acme", "credits", "{}") not in after  # superseded without a successor: no events count any more
    assert {k: v for k, v in after.items() if k[1] != "credits"} == {k: v for k, v in before.items() if k[1] != "credits"}
    refused = storage.query_rows("SELECT reason, meter, customer_id FROM visible_dead_letters WHERE meter = 'credits'")
    assert refused == [("negative_value", "credits", "acme")]


def test_a_replay_that_dies_before_its_commit_changes_nothing_visible(
    seeded: tuple[Storage, Config, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, config, _ = seeded
    before = visible_finals(storage)
    segments = count(storage, "SELECT count() FROM visible_segments")
    real_insert = Replay._insert

    def crash_at_commit(self: Replay, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        if table == "replay_scope":
            raise RuntimeError("killed before the commit")
        real_insert(self, table, rows, columns)

    monkeypatch.setattr(Replay, "_insert", crash_at_commit)
    with pytest.raises(RuntimeError, match="killed"):
        replay(storage, config, request())
    assert count(storage, "SELECT count() FROM period_finals WHERE revision = 2") > 0  # written, but not committed
    assert visible_finals(storage) == before
    assert count(storage, "SELECT count() FROM visible_segments") == segments
    assert count(storage, "SELECT count() FROM visible_corrections") == 1
    monkeypatch.undo()
    assert replay(storage, config, request()).revision == 3  # the orphaned revision number is never reused


def test_open_periods_changed_cycles_and_unknown_meters_are_refused(seeded: tuple[Storage, Config, Path]) -> None:
    storage, config, config_path = seeded
    with pytest.raises(ReplayError, match=r"still open .*globex 2026-02-28T23:00:00\+00:00"):
        replay(storage, config, ReplayRequest(FEBRUARY[0], datetime(2026, 3, 2, tzinfo=UTC), reason="x"))

    def berlin(document: dict[str, Any]) -> None:
        document["billing"]["default"]["timezone"] = "Europe/Berlin"

    with pytest.raises(ReplayError, match="billing cycle"):
        replay(storage, variant(config_path, berlin), request(customers=("acme",)))
    with pytest.raises(ReplayError, match="--meter nope"):
        replay(storage, config, request(meters=("nope",)))
    with pytest.raises(ReplayError, match="--reason"):
        replay(storage, config, request(reason=" "))
    assert count(storage, "SELECT count() FROM replay_runs") == 0


def test_a_customer_filter_leaves_other_customers_on_their_revision(seeded: tuple[Storage, Config, Path]) -> None:
    storage, config, _ = seeded
    report = replay(storage, config, request(customers=("globex",)))
    assert report.customers == ["globex"] and report.adjustments == []
    revisions = {(c, r) for (c, _m, _g), (_v, _n, r) in visible_finals(storage).items()}
    assert revisions == {("acme", 1), ("globex", 2)}


def test_raw_events_are_flagged_without_being_changed(seeded: tuple[Storage, Config, Path]) -> None:
    storage, _, _ = seeded
    flags = dict(((f, r), n) for f, r, n in storage.query_rows("SELECT flag, reason, count() FROM raw_event_flags GROUP BY ALL"))
    assert flags == {
        ("accepted", ""): 19,
        ("duplicate", ""): 1,
        ("dead_letter", "future_timestamp"): 1,
        ("dead_letter", "unknown_meter"): 1,
    }
    assert count(storage, "SELECT count() FROM raw_event_flags") == count(storage, "SELECT count() FROM raw_events FINAL")
