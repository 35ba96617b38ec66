"""Migrations on the real ClickHouse engine (chDB): apply, re-apply, detect edits, directory lock."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate, status


def test_apply_twice_is_a_no_op(storage_settings: StorageSettings) -> None:
    with open_storage(storage_settings) as storage:
        applied = migrate(storage)
        assert [m.version for m in applied] == [m.version for m in discover()]
        assert migrate(storage) == []
        assert {s.state for s in status(storage)} == {"applied"}
        tables = {r[0] for r in storage.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
        assert {"schema_migrations", "raw_events"} <= tables


def test_raw_events_keeps_decimals_exact(storage_settings: StorageSettings) -> None:
    with open_storage(storage_settings) as storage:
        migrate(storage)
        columns = dict(
            storage.query_rows(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'raw_events'"
            )
        )
        assert columns["quantity"] == "Decimal(38, 9)"
        storage.command(
            "INSERT INTO raw_events (event_id, customer_id, event_type, event_time, quantity, properties, kafka_topic, "
            "kafka_partition, kafka_offset, received_at, payload) SELECT toString(number), 'c', 'a', now64(3), "
            "toDecimal128('0.1', 9), map(), 't', 0, number, now64(3), '' FROM numbers(1000)"
        )
        (total,) = storage.query_rows("SELECT toString(sum(quantity)) FROM raw_events")[0]
        assert total == "100"


def test_a_changed_applied_migration_stops_the_run(storage_settings: StorageSettings, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with open_storage(storage_settings) as storage:
        migrate(storage, migrations)
        first = sorted(migrations.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
        assert status(storage, migrations)[0].state == "changed"
        with pytest.raises(MigrationError, match=f"{first.stem}: file changed after it was applied"):
            migrate(storage, migrations)


def test_a_new_migration_is_pending_then_applied(storage_settings: StorageSettings, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with open_storage(storage_settings) as storage:
        migrate(storage, migrations)
        version = len(discover(migrations)) + 1
        (migrations / f"{version:04d}_add_probe.sql").write_text(
            "-- a test-only table\nCREATE TABLE probe (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        )
        assert status(storage, migrations)[-1].state == "pending"
        assert [m.version for m in migrate(storage, migrations)] == [version]


def test_failed_statement_names_the_migration(storage_settings: StorageSettings, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_broken.sql").write_text("CREATE TABLE ok_t (x UInt8) ENGINE = Memory;\nCREATE TABLE bad (;\n")
    with (
        open_storage(storage_settings) as storage,
        pytest.raises(MigrationError, match=r"0001_broken\.sql, statement 2 failed"),
    ):
        migrate(storage, migrations)


def test_second_process_gets_a_clear_lock_error(storage_settings: StorageSettings) -> None:
    with open_storage(storage_settings):
        probe = (
            "from clickhouse.client import StorageSettings, open_storage, StorageLockedError\n"
            "from pathlib import Path\n"
            f"s = StorageSettings(path=Path({str(storage_settings.path)!r}), database={storage_settings.database!r})\n"
            "try:\n"
            "    with open_storage(s): print('OPENED')\n"
            "except StorageLockedError as e:\n"
            "    print('LOCKED', e)\n"
        )
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.startswith("LOCKED"), result.stdout + result.stderr
    assert "in use by process" in result.stdout and "pytest" in result.stdout


def test_raw_events_move_to_monthly_partitions_with_every_row(storage_settings: StorageSettings, tmp_path: Path) -> None:
    """0005 re-partitions raw_events by month: rows, views and the sorting key survive; 12.5 years copy in one go."""
    before = tmp_path / "before_0005"
    before.mkdir()
    for migration in discover()[:4]:
        shutil.copy(migration.path, before)
    with open_storage(storage_settings) as storage:
        migrate(storage, before)
        storage.command(
            "INSERT INTO raw_events (event_id, customer_id, event_type, event_time, quantity, properties, kafka_topic, "
            "kafka_partition, kafka_offset, received_at, payload) SELECT toString(number), 'c', 'a', "
            "toDateTime64('2014-01-01', 3, 'UTC') + toIntervalDay(number * 3), toDecimal128(number, 9) / 1000, map(), 't', "
            "0, number, now64(3), '' FROM numbers(1520) SETTINGS max_partitions_per_insert_block = 0"
        )
        summary = "SELECT count(), toString(sum(quantity)), uniqExact(toYYYYMM(event_time)) FROM raw_events"
        daily = storage.query_rows(summary)
        assert daily == [(1520, "1154.44", 150)]
        assert [m.version for m in migrate(storage)] == list(range(5, len(discover()) + 1))
        assert storage.query_rows(summary) == daily
        table = storage.query_rows(
            "SELECT partition_key, sorting_key, engine FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'raw_events'"
        )
        assert table == [
            (
                "toYYYYMM(event_time)",
                "customer_id, event_type, event_time, kafka_topic, kafka_partition, kafka_offset",
                "ReplacingMergeTree",
            )
        ]
        others = "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'raw_events_%'"
        assert storage.query_rows(others) == []  # the old table is gone
        # The views over raw_events read the new table.
        assert storage.query_rows("SELECT raw_events, quarantined FROM pipeline_health") == [(1520, 0)]
        assert storage.query_rows("SELECT count() FROM raw_event_flags WHERE flag = 'accepted'") == [(1520,)]
