"""Migration files: naming, ordering, statement splitting (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickhouse.migrate import MigrationError, discover, split_statements


def test_repository_migrations_are_well_formed() -> None:
    migrations = discover()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    for migration in migrations:
        assert migration.statements(), migration.path
        text = migration.sql.lower()
        assert "if not exists" not in text, "migrations are forward-only; no IF NOT EXISTS"
        assert "metering." not in text, "DDL names no database"


def test_split_statements_ignores_comments_and_semicolons_inside_lines() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory;\n\nSELECT 1;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory", "SELECT 1"]


def test_gaps_in_versions_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="expected version 0002"):
        discover(tmp_path)


def test_badly_named_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_a.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        discover(tmp_path)


def _comment_above(lines: list[str], index: int) -> str:
    block = []
    while index > 0 and lines[index - 1].startswith("--"):
        index -= 1
        block.append(lines[index])
    return "\n".join(reversed(block))


def test_every_table_is_explained_in_a_comment_right_above_it() -> None:
    for migration in discover():
        lines = migration.sql.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("CREATE TABLE"):
                assert _comment_above(lines, index), f"{migration.path.name}: {line} has no comment explaining it"


def test_raw_events_partitioning_says_why_monthly() -> None:
    [migration] = [m for m in discover() if m.name == "raw_events_monthly"]
    lines = migration.sql.splitlines()
    comment = _comment_above(lines, next(i for i, line in enumerate(lines) if line.startswith("CREATE TABLE")))
    assert "max_partitions_per_insert_block" in comment and "100 partitions are 8 years" in comment
    assert "Retention and replays act on months" in comment
    assert "PARTITION BY toYYYYMM(event_time)" in migration.sql
