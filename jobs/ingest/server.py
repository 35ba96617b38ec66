"""Run the ingestion API: a threaded HTTP server, JSON logs, and a graceful stop on SIGTERM.

On SIGTERM (or Ctrl-C) the server stops accepting connections, ``/readyz`` and new event requests
answer 503, every request in flight runs to its answer (each handler thread is joined: a request
whose events were enqueued still waits for Kafka's acknowledgement), and then the producer is
flushed. The HTTP server is werkzeug's threaded one: one thread per connection, and a connection
per request (it does not keep connections alive), so joining its threads is the drain.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from jobs.ingest.app import IngestApp


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= getattr(record, "fields", {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_logging(level: int = logging.INFO) -> None:
    """The service's logs as JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("metering")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@contextmanager
def logging_to(path: Path, level: int = logging.INFO) -> Iterator[None]:
    """The service's logs as JSON lines in ``path`` for the block (the demo's in-process service), then as before."""
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("metering")
    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    try:
        yield
    finally:
        root.handlers[:], root.level, root.propagate = saved
        handler.close()


class _Quiet(WSGIRequestHandler):
    """No access log of werkzeug's own (the application logs every request as JSON)."""

    timeout = 30  # seconds a client may take to send its request

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _BindFailed(Exception):
    """The bind's ``OSError``, carried past werkzeug, which turns it into ``sys.exit(1)``."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Server(ThreadedWSGIServer):
    daemon_threads = False  # joined at server_close: in-flight requests finish
    block_on_close = True

    def server_bind(self) -> None:
        try:
            super().server_bind()
        except OSError as exc:
            self.socket.close()
            raise _BindFailed(exc) from exc


class _SharedPortServer(_Server):
    """Listens with SO_REUSEPORT: several processes (of one user) bind the same port and the kernel
    spreads new connections over them (docs/ingest.md, "Several workers")."""

    allow_reuse_port = True


class Service:
    """The listening server around an :class:`IngestApp`; :meth:`stop` may be called from any thread."""

    def __init__(self, app: IngestApp, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.app = app
        try:
            self.server = (_SharedPortServer if reuse_port else _Server)(host, port, app, handler=_Quiet)
        except _BindFailed as failed:  # the port is taken (or the address is not ours): the caller says so
            raise failed.error from None
        self.port = self.server.server_port
        self._stopping = threading.Event()

    def serve(self) -> None:
        """Serve until :meth:`stop`; returns after every in-flight request has been answered."""
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()  # joins the request threads

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.app.draining.set()
        threading.Thread(target=self.server.shutdown, name="metering-serve-stop", daemon=True).start()


def stop_on_signals(service: Service) -> None:
    """SIGTERM and SIGINT stop the service gracefully (the serving thread must be the main thread)."""

    def handler(signum: int, frame: object) -> None:
        logging.getLogger("metering.ingest").info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        service.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def create_app(config: Any, sink: Any, keys: Any | None = None) -> IngestApp:
    """The application of a configuration (jobs/config.py's ``Config``) writing to ``sink``."""
    from jobs.ingest.app import Limits, Rules
    from jobs.ingest.keys import KeyStore
    from jobs.ingest.limits import Buckets

    ingest = config.ingest
    return IngestApp(
        sink=sink,
        keys=keys if keys is not None else KeyStore(ingest.keys),
        rules=Rules(frozenset(m.event_type for m in config.meters), config.pipeline.allowed_future_skew),
        limits=Limits(ingest.max_events, ingest.max_body_bytes, ingest.max_decompressed_bytes, ingest.max_in_flight),
        buckets=Buckets(ingest.rate, ingest.burst),
    )


def open_service(config: Any, host: str, port: int, *, reuse_port: bool = False) -> tuple[Service, Any]:
    """The service of a configuration bound to ``host:port``, and the Kafka sink the caller closes after it.

    ``reuse_port``: bind with SO_REUSEPORT, so that other ``metering serve`` processes may share the port.

    ``OSError`` when it cannot listen there (the sink is closed first).
    """
    from jobs.ingest.kafka import KafkaSink

    kafka = config.kafka
    sink = KafkaSink(
        kafka.bootstrap_servers,
        kafka.topics.events,
        security=kafka.security,
        delivery_timeout_s=config.ingest.delivery_timeout.total_seconds(),
    )
    try:
        return Service(create_app(config, sink), host, port, reuse_port=reuse_port), sink
    except OSError:
        sink.close(5)
        raise


@contextmanager
def serving(config: Any, host: str = "127.0.0.1", port: int = 0, ready_timeout_s: float = 30.0) -> Iterator[Service]:
    """``metering serve`` in a thread of this process (the demo's), until the block ends.

    The same application, Kafka sink and server as the command, on ``port`` (0: a free one, see
    ``service.port``); ready once ``/readyz`` answers 200 over HTTP (a broker answered for the
    events topic, which the caller has created, as the command does with jobs.topics.ensure_topic).
    At the end the service stops as on SIGTERM: in-flight requests finish, then the producer is
    flushed; records left undelivered raise :class:`RuntimeError`.
    """
    kafka = config.kafka
    service, sink = open_service(config, host, port)
    log = logging.getLogger("metering.ingest")
    thread = threading.Thread(target=service.serve, name="metering-serve", daemon=True)
    thread.start()
    url = f"http://{host}:{service.port}"
    log.info("listening", extra={"fields": {"url": url, "topic": kafka.topics.events, "keys": str(config.ingest.keys)}})
    left = 0
    try:
        _wait_ready(f"{url}/readyz", ready_timeout_s)
        yield service
    finally:
        log.info("stopping", extra={"fields": {"signal": None}})
        service.stop()
        thread.join()
        left = sink.close()
        log.info("stopped", extra={"fields": {"undelivered": left}})
    if left:
        raise RuntimeError(f"metering serve stopped with {left} records undelivered")


def _wait_ready(url: str, timeout_s: float) -> None:
    """Probe ``url`` until it answers 200 (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read().decode(errors='replace')[:200]}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s: {last}")
        time.sleep(0.1)
