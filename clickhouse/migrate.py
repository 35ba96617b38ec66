"""Forward-only, numbered ClickHouse migrations with checksums.

Files are ``clickhouse/migrations/NNNN_description.sql``, applied in order.
Each applied file is recorded in ``schema_migrations`` (version, name,
SHA-256 of the file, time). Re-running applies only what is pending; a file
that changed after it was applied stops the run (write a new migration
instead). The same files run on chDB and on a ClickHouse server, and name no
database, so tests can apply them to a throwaway one.

ClickHouse DDL is not transactional: when a statement of a migration fails,
the statements before it stay applied and the migration is not recorded. The
error names the migration and statement so an operator can finish by hand.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: The migrator's own bookkeeping table (the only DDL not in a migration file).
MIGRATIONS_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


class MigrationError(RuntimeError):
    """A migration file is malformed, was changed after being applied, or failed."""


class SqlRunner(Protocol):
    def command(self, sql: str, parameters: dict[str, Any] | None = ...) -> Any: ...

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = ...) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements: split on ``;`` at a line end, comments removed."""
        return split_statements(self.sql)


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    state: str  # "applied" | "pending" | "changed" | "missing-file"
    applied_at: str | None = None


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements. ``;`` ends a statement only at the end of a line."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files, ordered, with gaps and duplicates rejected."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path, path.read_text()))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"{migration.path}: expected version {expected:04d} (versions are 1, 2, 3, … without gaps)")
    return migrations


def _applied(storage: SqlRunner) -> dict[int, tuple[str, str, str]]:
    storage.command(MIGRATIONS_TABLE_DDL)
    rows = storage.query_rows("SELECT version, name, checksum, toString(applied_at) FROM schema_migrations ORDER BY version")
    return {int(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}


def status(storage: SqlRunner, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    """Every migration with its state against this database."""
    applied = _applied(storage)
    result: list[MigrationStatus] = []
    files = {m.version: m for m in discover(directory)}
    for version in sorted(set(files) | set(applied)):
        migration = files.get(version)
        record = applied.get(version)
        if migration is None:
            assert record is not None
            result.append(MigrationStatus(version, record[0], "missing-file", record[2]))
        elif record is None:
            result.append(MigrationStatus(version, migration.name, "pending"))
        elif record[1] != migration.checksum:
            result.append(MigrationStatus(version, migration.name, "changed", record[2]))
        else:
            result.append(MigrationStatus(version, migration.name, "applied", record[2]))
    return result


def function_statements(migration: Migration) -> list[str]:
    """The migration's SQL function definitions (``CREATE OR REPLACE FUNCTION``, idempotent)."""
    return [s for s in migration.statements() if s.upper().startswith("CREATE OR REPLACE FUNCTION ")]


def restore_functions(storage: SqlRunner, migration: Migration) -> None:
    """Define an applied migration's SQL functions again.

    Functions belong to the ClickHouse server (or chDB path), not to a database: a database copied
    or restored elsewhere arrives without them, while its schema_migrations says they were created.
    Their definitions never change under a name (0009), so running them again is a no-op where they
    exist and brings them back where they do not; `metering migrate` is the fix for a restored
    database.
    """
    for statement in function_statements(migration):
        try:
            storage.command(statement)
        except Exception as exc:
            raise MigrationError(f"{migration.path.name}: restoring its SQL functions failed: {exc}") from exc


def migrate(storage: SqlRunner, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations in order; returns those applied (empty when up to date).

    Applied migrations' SQL functions are defined again on the way (:func:`restore_functions`).
    """
    states = status(storage, directory)
    problems = [s for s in states if s.state in ("changed", "missing-file")]
    if problems:
        details = "; ".join(
            f"{s.version:04d}_{s.name}: "
            + ("file changed after it was applied" if s.state == "changed" else "applied but its file is gone")
            for s in problems
        )
        raise MigrationError(f"refusing to migrate: {details}. Applied migrations are immutable; add a new one.")
    pending = {s.version for s in states if s.state == "pending"}
    done: list[Migration] = []
    for migration in discover(directory):
        if migration.version not in pending:
            restore_functions(storage, migration)
            continue
        for number, statement in enumerate(migration.statements(), start=1):
            try:
                storage.command(statement)
            except Exception as exc:
                raise MigrationError(
                    f"{migration.path.name}, statement {number} failed: {exc}\n"
                    "earlier statements of this migration stay applied (ClickHouse DDL is not transactional)"
                ) from exc
        storage.command(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ({v:UInt32}, {n:String}, {c:String})",
            {"v": migration.version, "n": migration.name, "c": migration.checksum},
        )
        done.append(migration)
    return done
