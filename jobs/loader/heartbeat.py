"""Heartbeats: records that move the job's watermark while the events topic is quiet.

The watermark moves only with event time the job reads. Idle partitions stop holding it back, but
if every partition is quiet no period becomes final and the newest provisional step stays
unpublished (docs/semantics.md). A heartbeat is a tiny record, sent to **every** partition of the
events topic, whose ``timestamp`` is the sender's clock::

    {"heartbeat":true,"timestamp":"2026-11-22T10:15:00.000Z"}

The job reads its timestamp like an event's (so it moves that partition's watermark to about
``timestamp - max_out_of_orderness``, and a future-dated one moves nothing), then drops it: it is
not an event, not a dead letter, not a duplicate, and the loader does not copy it to raw_events.
An event read after a heartbeat that put the watermark past its timestamp is late and is counted
exactly on the late path, or becomes a correction once its period is final: the same as behind any
other event.

``metering load`` sends heartbeats every ``pipeline.heartbeat_interval`` while it runs unbounded;
``metering heartbeat`` sends them on its own (``--once`` for cron).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.kafka_security import PLAINTEXT, KafkaSecurity
from schemas.validate import HEARTBEAT_FIELD, is_heartbeat
from udfs.periods import rfc3339_millis

__all__ = ["HEARTBEAT_FIELD", "HeartbeatSender", "heartbeat_record", "is_heartbeat"]

log = logging.getLogger("metering.heartbeat")

#: The field that marks a heartbeat (its JSON value must be ``true``; an event never has it).


def heartbeat_record(at: datetime) -> bytes:
    """The heartbeat for instant ``at`` (timezone-aware), with millisecond precision."""
    if at.tzinfo is None:
        raise ValueError("a heartbeat needs a timezone-aware instant")
    return json.dumps({HEARTBEAT_FIELD: True, "timestamp": rfc3339_millis(at)}, separators=(",", ":")).encode()


@dataclass
class HeartbeatStats:
    rounds: int = 0  # rounds in which every partition was sent a heartbeat
    records: int = 0
    failures: int = 0
    last_error: str | None = None


class HeartbeatSender:
    """Sends a heartbeat to every partition of ``topic``: once, or every ``interval`` (:meth:`run`, :meth:`start`).

    A failed round (broker down, topic missing) is logged and retried with backoff, never
    skipped silently: ``stats`` counts failures and keeps the last error.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        send_timeout_s: float = 30.0,
        metadata_timeout_s: float = 10.0,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.clock = clock
        self.send_timeout_s = send_timeout_s
        self.metadata_timeout_s = metadata_timeout_s
        self.security = security
        self.stats = HeartbeatStats()
        self._producer: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _get_producer(self) -> Any:
        if self._producer is None:
            from jobs.produce import make_producer

            self._producer = make_producer(
                self.bootstrap_servers,
                security=self.security,
                linger_ms=0,
                client_id="metering-heartbeat",
                max_block_ms=int(self.metadata_timeout_s * 1000),  # metadata of a missing topic: fail soon
            )
        return self._producer

    def send_once(self) -> int:
        """One heartbeat to each partition, all acknowledged; returns how many were sent."""
        producer = self._get_producer()
        from kafka.errors import KafkaTimeoutError

        try:
            partitions = producer.partitions_for(self.topic)
        except KafkaTimeoutError as exc:
            waited = f"{self.metadata_timeout_s:g}s"
            raise RuntimeError(f"no metadata for topic {self.topic!r} within {waited}: does it exist?") from exc
        if not partitions:
            raise RuntimeError(f"topic {self.topic!r} has no partitions: does it exist?")
        value = heartbeat_record(self.clock())
        futures = [producer.send(self.topic, value=value, partition=p) for p in sorted(partitions)]
        for future in futures:
            future.get(timeout=self.send_timeout_s)
        self.stats.rounds += 1
        self.stats.records += len(futures)
        return len(futures)

    def run(self, interval: timedelta, max_backoff: timedelta = timedelta(seconds=60)) -> None:
        """Send every ``interval`` until :meth:`stop`; a failed round is retried after 1 s, 2 s, … up to ``max_backoff``."""
        if interval <= timedelta(0):
            raise ValueError("the heartbeat interval must be longer than zero")
        retry = timedelta(seconds=1)
        while not self._stop.is_set():
            try:
                self.send_once()
                wait, retry = interval, timedelta(seconds=1)
            except Exception as exc:  # broker down or topic missing: report and retry
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                wait, retry = min(retry, max_backoff), retry * 2
                log.warning(
                    "heartbeat to %s failed (%d so far), retrying in %.1fs: %s",
                    self.topic,
                    self.stats.failures,
                    wait.total_seconds(),
                    exc,
                )
            self._stop.wait(wait.total_seconds())

    def start(self, interval: timedelta) -> HeartbeatSender:
        """Run :meth:`run` in a daemon thread."""
        if interval <= timedelta(0):
            raise ValueError("the heartbeat interval must be longer than zero")
        self._thread = threading.Thread(target=self.run, args=(interval,), name="metering-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (if started) and close the producer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.send_timeout_s + 5)
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
