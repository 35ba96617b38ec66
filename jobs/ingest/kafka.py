"""The service's producer: librdkafka (confluent-kafka), idempotent, ``acks=all``, waited for per request.

Why librdkafka and not ``metering produce``'s kafka-python: a request thread must learn quickly
whether each of its events is acknowledged, the queue length is a metric, and a full queue must be
refused at once (``BufferError``) rather than block; librdkafka gives all three, in C.

:meth:`KafkaSink.send` enqueues a request's records and waits for every delivery report (a
background thread polls them): a record is ``None`` (acknowledged by all in-sync replicas) or the
error that kept it out. Nothing is reported acknowledged before Kafka said so; a record that timed
out may still have been written (librdkafka's "possibly persisted"), which is why a client's retry
is safe only because the job drops duplicates (docs/ingest.md, "Retries").

:meth:`KafkaSink.health` says, without a network call, whether the sink can still write at all
(``failure``: librdkafka declared a fatal error, or the sink was closed; only a restart helps)
and what was last seen of the brokers (``kafka``): what ``/healthz`` shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.kafka_security import LIBRDKAFKA_PARTITIONER, PLAINTEXT, KafkaSecurity, librdkafka_options

#: librdkafka's queue bound (messages); a request finding it full is answered 503.
QUEUE_MAX_MESSAGES = 200_000


#: librdkafka's error codes (``KafkaError``) that say no broker can be reached: they mark Kafka
#: unreachable in :meth:`KafkaSink.health` until a request is acknowledged or ``/readyz`` reaches one.
_UNREACHABLE_CODES = frozenset({-187, -195, -193})  # _ALL_BROKERS_DOWN, _TRANSPORT, _RESOLVE


@dataclass(frozen=True)
class SinkHealth:
    """What ``/healthz`` shows of the sink, known without a network call.

    ``failure``: why the sink can never write again (a fatal producer error, the sink closed), or
    None; the process must be restarted. ``kafka``: ``reachable``, ``unreachable`` (with
    ``problem``) or ``unknown`` (not tried yet), as last seen by a request, ``/readyz`` or
    librdkafka's error callback, ``since`` when (Unix seconds).
    """

    failure: str | None = None
    kafka: str = "unknown"
    problem: str | None = None
    since: float | None = None


class _Waiter:
    """The delivery reports of one request's records."""

    def __init__(self, count: int) -> None:
        self.results: list[str | None] = ["not delivered"] * count
        self.pending = count
        self.lock = threading.Lock()
        self.done = threading.Event()
        if count == 0:
            self.done.set()

    def report(self, index: int, error: Any) -> None:
        with self.lock:
            self.results[index] = None if error is None else str(error)
            self.pending -= 1
            if self.pending == 0:
                self.done.set()

    def give_up(self, start: int, reason: str) -> None:
        """Records from ``start`` on were never enqueued."""
        with self.lock:
            for index in range(start, len(self.results)):
                self.results[index] = reason
            self.pending -= len(self.results) - start
            if self.pending <= 0:
                self.done.set()


class KafkaSink:
    """Writes records to one topic and says which were acknowledged."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
        delivery_timeout_s: float = 10.0,
        queue_max_messages: int = QUEUE_MAX_MESSAGES,
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.delivery_timeout_s = delivery_timeout_s
        self.fatal: str | None = None
        self.closed = False
        self._kafka = SinkHealth()
        self.settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": "metering-serve",
            # The events topic's partition of a customer, as `metering produce` chooses it: a void follows its event.
            "partitioner": LIBRDKAFKA_PARTITIONER,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            # A record not acknowledged this long after it was enqueued is reported failed.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.messages": queue_max_messages,
            "error_cb": self._error,
            # librdkafka's own log lines go through logging (JSON, like the service's), not raw to stderr.
            "logger": logging.getLogger("metering.ingest.kafka"),
            **librdkafka_options(security),
        }
        self.producer = Producer(self.settings)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="metering-serve-deliveries", daemon=True)
        self._poller.start()

    def _error(self, error: Any) -> None:
        """librdkafka's error callback (its background threads): a fatal error fails the sink for good."""
        if error.fatal():
            self.fatal = str(error)
            logging.getLogger("metering.ingest").error("the producer failed", extra={"fields": {"error": str(error)}})
        elif error.code() in _UNREACHABLE_CODES:
            self._seen_kafka(str(error))

    def _seen_kafka(self, problem: str | None) -> None:
        state = "reachable" if problem is None else "unreachable"
        if self._kafka.kafka != state or self._kafka.problem != problem:
            self._kafka = SinkHealth(kafka=state, problem=problem, since=time.time())

    def failure(self) -> str | None:
        """Why this sink can never write again, or None."""
        if self.fatal is not None:
            return f"the producer failed: {self.fatal}"
        if self.closed:
            return "the producer is closed"
        return None

    def health(self) -> SinkHealth:
        kafka = self._kafka
        return SinkHealth(self.failure(), kafka.kafka, kafka.problem, kafka.since)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def queue_length(self) -> int:
        """Records enqueued and not yet acknowledged or failed."""
        return len(self.producer)

    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
        """Enqueue ``(key, value)`` records and wait for each one's report: None (acknowledged) or why not."""
        waiter = _Waiter(len(records))
        failure = self.failure()
        if failure is not None:
            waiter.give_up(0, failure)
            return waiter.results
        for index, (key, value) in enumerate(records):
            try:
                self.producer.produce(self.topic, value, key, on_delivery=lambda err, _msg, i=index: waiter.report(i, err))
            except BufferError:
                waiter.give_up(index, "the producer's queue is full")
                break
            except Exception as exc:  # KafkaException: refused before sending
                error = exc.args[0] if exc.args else None
                if getattr(error, "fatal", lambda: False)():
                    self.fatal = str(error)
                waiter.give_up(index, f"{type(exc).__name__}: {exc}")
                break
        # Every enqueued record gets a report within message.timeout.ms; the margin covers polling.
        waiter.done.wait(self.delivery_timeout_s + 5)
        with waiter.lock:
            results = list(waiter.results)
        if results and results[0] is None:
            self._seen_kafka(None)  # acknowledged: a broker is there
        return results

    def reachable(self, timeout_s: float = 2.0) -> str | None:
        """None when a broker answered for the topic within ``timeout_s``, else why not."""
        failure = self.failure()
        if failure is not None:
            return failure
        try:
            metadata = self.producer.list_topics(self.topic, timeout=timeout_s)
        except Exception as exc:  # KafkaException
            self._seen_kafka(f"Kafka unreachable: {exc}")
            return f"Kafka unreachable: {exc}"
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return f"topic {self.topic!r}: {topic.error if topic is not None else 'unknown'}"
        if not metadata.brokers:
            self._seen_kafka("no broker")
            return "no broker"
        self._seen_kafka(None)
        return None

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush what is queued (at most ``timeout_s``), stop polling; returns the records left undelivered."""
        self.closed = True  # a request arriving now is answered 503 at once, not left waiting
        left = int(self.producer.flush(timeout_s))
        self._stop.set()
        self._poller.join()
        return left
