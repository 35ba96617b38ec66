"""Reads through the process that owns the chDB directory.

Embedded ClickHouse (chDB) allows one process per data directory, and the loader holds it for as
long as it runs. So the owner serves the *named read queries* (``clickhouse/queries/*.sql``, the
same allow-list the CLI and the dashboard use) on a loopback HTTP port and writes where to find it
in ``<chdb dir>/.gateway.json``. Any other process that wants to read (``metering query``,
``metering dashboard``) calls :func:`open_reader`: it opens the storage itself when the directory
is free, and goes through the owner's gateway when it is not. Only reads cross the gateway; no SQL
text does, only a query name and its parameters, which ClickHouse binds server-side.

With a ClickHouse server (``storage.url``, ``METERING__STORAGE__URL``) every process connects directly.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clickhouse.client import Storage, StorageError, StorageLockedError, StorageSettings, open_storage
from clickhouse.queries import QueryError, Reader, StorageReader

log = logging.getLogger("metering.gateway")

GATEWAY_FILE = ".gateway.json"


def gateway_file(settings: StorageSettings) -> Path:
    return settings.path.resolve() / GATEWAY_FILE


class _Handler(BaseHTTPRequestHandler):
    server: _GatewayServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("gateway: " + format, *args)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {"owner_pid": os.getpid(), "database": self.server.reader.storage.settings.database})
        else:
            self._reply(404, {"error": "not found; POST /query"})

    def do_POST(self) -> None:
        if self.path != "/query":
            self._reply(404, {"error": "not found; POST /query"})
            return
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            name, parameters = request["name"], request.get("parameters") or {}
            if not isinstance(name, str) or not isinstance(parameters, dict):
                raise QueryError("expected {'name': str, 'parameters': object}")
            rows = self.server.reader.run(name, parameters)
        except (QueryError, ValueError, KeyError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        except Exception as exc:  # the storage refused: report, keep serving
            log.warning("gateway query %r failed: %s", self.path, exc)
            self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._reply(200, {"rows": rows})


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], reader: StorageReader) -> None:
        super().__init__(address, _Handler)
        self.reader = reader


class QueryGateway:
    """Serve the named read queries of an open storage on 127.0.0.1 (a background thread)."""

    def __init__(self, storage: Storage, *, port: int = 0) -> None:
        self.storage = storage
        self._server = _GatewayServer(("127.0.0.1", port), StorageReader(storage))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="query-gateway", daemon=True)

    def __enter__(self) -> QueryGateway:
        self._thread.start()
        if self.storage.settings.backend == "chdb":
            path = gateway_file(self.storage.settings)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "url": self.url, "database": self.storage.settings.database}))
            tmp.replace(path)
        log.info("serving read queries at %s", self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.storage.settings.backend == "chdb":
            with suppress(OSError, ValueError):
                path = gateway_file(self.storage.settings)
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
        self._server.shutdown()
        self._server.server_close()


class GatewayReader:
    """A Reader that asks the owner of the chDB directory."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        body = json.dumps({"name": name, "parameters": dict(parameters)}).encode()
        request = urllib.request.Request(f"{self.url}/query", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                rows: list[dict[str, Any]] = json.loads(response.read())["rows"]
                return rows
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            if exc.code == 400:
                raise QueryError(detail) from None
            raise StorageError(f"the chDB owner's gateway at {self.url} failed: {detail}") from None
        except OSError as exc:
            raise StorageError(f"the chDB owner's gateway at {self.url} is unreachable: {exc}") from None


def _lock_holder(settings: StorageSettings) -> int | None:
    """The pid the current owner wrote into the chDB lock file (clickhouse.client._chdb_lock), if readable."""
    try:
        return int((settings.path.resolve() / ".owner.lock").read_text().strip())
    except (OSError, ValueError):
        return None


def _gateway_of(settings: StorageSettings, locked: StorageLockedError) -> GatewayReader:
    try:
        info = json.loads(gateway_file(settings).read_text())
    except (OSError, ValueError):
        raise StorageLockedError(f"{locked} (that process serves no read gateway: no {gateway_file(settings)})") from None
    owner = _lock_holder(settings)
    if owner is not None and info.get("pid") != owner:  # left behind by an owner that did not exit cleanly
        raise StorageLockedError(
            f"{locked} (that process serves no read gateway: {gateway_file(settings)} is from process {info.get('pid')})"
        )
    if info.get("database") != settings.database:
        raise StorageLockedError(f"{locked} (its gateway serves database {info.get('database')!r}, not {settings.database!r})")
    return GatewayReader(str(info["url"]))


@contextmanager
def open_reader(settings: StorageSettings, *, serve: bool = False) -> Iterator[Reader]:
    """A Reader for the configured storage: direct when possible, else through the chDB owner's gateway.

    With ``serve=True`` a process that becomes the owner also serves the gateway while the reader
    is open, so other processes can read through it.
    """
    with ExitStack() as stack:
        try:
            storage = stack.enter_context(open_storage(settings, create_database=False))
        except StorageLockedError as locked:
            if settings.backend != "chdb":
                raise
            yield _gateway_of(settings, locked)
            return
        if serve:
            stack.enter_context(QueryGateway(storage))
        yield StorageReader(storage)
