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
from datetime import UTC, datetime
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


class _Quiet(WSGIRequestHandler):
    """No access log of werkzeug's own (the application logs every request as JSON)."""

    timeout = 30  # seconds a client may take to send its request

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _Server(ThreadedWSGIServer):
    daemon_threads = False  # joined at server_close: in-flight requests finish
    block_on_close = True


class Service:
    """The listening server around an :class:`IngestApp`; :meth:`stop` may be called from any thread."""

    def __init__(self, app: IngestApp, host: str, port: int) -> None:
        self.app = app
        self.server = _Server(host, port, app, handler=_Quiet)
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
