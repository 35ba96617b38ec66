"""One storage client for both targets: embedded chDB (default) and a ClickHouse server.

``clickhouse-connect`` exposes the same ``Client`` API over HTTP and over the
in-process chDB engine, so DDL, queries and inserts are shared; only
:class:`StorageSettings` differs. A chDB data directory can be opened by one
process at a time: we take an advisory lock (``<path>/.owner.lock``) first, so a
second process gets an error naming the owner instead of chDB's opaque one.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

Backend = Literal["chdb", "server"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StorageError(RuntimeError):
    """The storage could not be opened or used."""


class StorageLockedError(StorageError):
    """The chDB directory is owned by another process."""


@dataclass(frozen=True)
class StorageSettings:
    """Where aggregates live. ``backend='chdb'`` uses ``path``; ``'server'`` uses ``url`` and credentials."""

    backend: Backend = "chdb"
    path: Path = Path(".metering/chdb")
    url: str = ""
    username: str = "default"
    password: str = field(default="", repr=False)
    database: str = "metering"

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.database):
            raise StorageError(f"storage.database={self.database!r}: must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        if self.backend == "server" and not self.url:
            raise StorageError("storage.url: required when storage.backend is 'server' (e.g. http://host:8123)")
        if self.backend not in ("chdb", "server"):
            raise StorageError(f"storage.backend={self.backend!r}: must be 'chdb' or 'server'")

    def __repr__(self) -> str:  # never print the password
        secret = "'***'" if self.password else "''"
        return (
            f"StorageSettings(backend={self.backend!r}, path={str(self.path)!r}, url={self.url!r}, "
            f"username={self.username!r}, password={secret}, database={self.database!r})"
        )


def _lock_owner(lock_path: Path) -> str:
    try:
        pid = int(lock_path.read_text().strip() or "0")
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        return f"process {pid} ({cmd[:160]})"
    except (OSError, ValueError):
        return "another process"


@contextmanager
def _chdb_lock(path: Path) -> Iterator[IO[str]]:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)  # every customer's data: the owner's user only
    lock_path = path / ".owner.lock"
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StorageLockedError(
            f"the chDB directory {path} is in use by {_lock_owner(lock_path)}; embedded ClickHouse allows one "
            "process per directory. Run this through the process that owns it (the loader / dashboard), "
            "stop that process, or use a ClickHouse server (storage.url, METERING__STORAGE__URL)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    try:
        yield handle
    finally:
        handle.close()  # releases the flock


class Storage:
    """An open storage: a clickhouse-connect client bound to the configured database."""

    def __init__(self, settings: StorageSettings, client: Any, admin: Any) -> None:
        self.settings = settings
        self.client = client
        self._admin = admin

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        return self.client.command(sql, parameters=dict(parameters or {}))

    def query_rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self.client.query(sql, parameters=dict(parameters or {})).result_rows)

    def drop_database(self) -> None:
        """Drop the configured database (tests' throwaway databases)."""
        self._admin.command(f"DROP DATABASE IF EXISTS `{self.settings.database}`")


@contextmanager
def open_storage(settings: StorageSettings, *, create_database: bool = True) -> Iterator[Storage]:
    """Open the storage (taking the chDB directory lock in embedded mode); the database is created if absent."""
    import clickhouse_connect

    database = settings.database  # validated identifier: safe to quote into DDL
    if settings.backend == "chdb":
        with _chdb_lock(settings.path.resolve()):
            path = str(settings.path.resolve())
            admin = clickhouse_connect.get_client(interface="chdb", path=path)
            if create_database:
                admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            try:
                client = clickhouse_connect.get_client(interface="chdb", path=path, database=database)
            except Exception as exc:
                admin.close()
                if "UNKNOWN_DATABASE" in str(exc):
                    raise StorageError(f"database '{database}' does not exist in {path}; fix: run `metering migrate`") from None
                raise
            try:
                yield Storage(settings, client, admin)
            finally:
                client.close()
                admin.close()
    else:
        common: dict[str, Any] = {"dsn": settings.url, "username": settings.username, "password": settings.password}
        admin = clickhouse_connect.get_client(**common)
        if create_database:
            admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        client = clickhouse_connect.get_client(**common, database=database)
        try:
            yield Storage(settings, client, admin)
        finally:
            client.close()
            admin.close()
