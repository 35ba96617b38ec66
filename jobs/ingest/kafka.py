"""The service's producer: librdkafka (confluent-kafka), idempotent, ``acks=all``, waited for per request.

Why librdkafka and not ``metering produce``'s kafka-python: a request thread must learn quickly
whether each of its events is acknowledged, the queue length is a metric, and a full queue must be
refused at once (``BufferError``) rather than block; librdkafka gives all three, in C.

:meth:`KafkaSink.send` enqueues a request's records and waits for every delivery report (a
background thread polls them): a record is ``None`` (acknowledged by all in-sync replicas) or the
error that kept it out. Nothing is reported acknowledged before Kafka said so; a record that timed
out may still have been written (librdkafka's "possibly persisted"), which is why a client's retry
is safe only because the job drops duplicates (docs/ingest.md, "Retries").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from infra.kafka_security import PLAINTEXT, KafkaSecurity, librdkafka_options

#: librdkafka's queue bound (messages); a request finding it full is answered 503.
QUEUE_MAX_MESSAGES = 200_000


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
        self.settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": "metering-serve",
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
        if error.fatal():
            self.fatal = str(error)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def queue_length(self) -> int:
        """Records enqueued and not yet acknowledged or failed."""
        return len(self.producer)

    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
        """Enqueue ``(key, value)`` records and wait for each one's report: None (acknowledged) or why not."""
        waiter = _Waiter(len(records))
        if self.fatal is not None:
            waiter.give_up(0, f"the producer failed: {self.fatal}")
            return waiter.results
        for index, (key, value) in enumerate(records):
            try:
                self.producer.produce(self.topic, value, key, on_delivery=lambda err, _msg, i=index: waiter.report(i, err))
            except BufferError:
                waiter.give_up(index, "the producer's queue is full")
                break
            except Exception as exc:  # KafkaException: refused before sending
                waiter.give_up(index, f"{type(exc).__name__}: {exc}")
                break
        # Every enqueued record gets a report within message.timeout.ms; the margin covers polling.
        waiter.done.wait(self.delivery_timeout_s + 5)
        with waiter.lock:
            return list(waiter.results)

    def reachable(self, timeout_s: float = 2.0) -> str | None:
        """None when a broker answered for the topic within ``timeout_s``, else why not."""
        if self.fatal is not None:
            return f"the producer failed: {self.fatal}"
        try:
            metadata = self.producer.list_topics(self.topic, timeout=timeout_s)
        except Exception as exc:  # KafkaException
            return f"Kafka unreachable: {exc}"
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            return f"topic {self.topic!r}: {topic.error if topic is not None else 'unknown'}"
        if not metadata.brokers:
            return "no broker"
        return None

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush what is queued (at most ``timeout_s``), stop polling; returns the records left undelivered."""
        left = int(self.producer.flush(timeout_s))
        self._stop.set()
        self._poller.join()
        return left
