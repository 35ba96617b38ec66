"""The alerts' Kafka clients outside the evaluation loop: client settings, the credit ledger topic, topics read whole.

``metering credits grant|void`` publish to the ledger topic and check against it (read to its end);
the service restores its state from the compacted state topic; the demo and the tests read the
alerts and costs topics back. Each reads ``read_committed``: only what a transaction committed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from infra.kafka_security import LIBRDKAFKA_PARTITIONER, librdkafka_options
from jobs import topics
from jobs.config import Config

log = logging.getLogger("metering.alerts")

#: The consumer group of the evaluator (its offsets are committed in its transactions); readers use it as a prefix.
GROUP = "metering-alerts"

alerts_topic = topics.alerts_topic
state_topic = topics.alerts_state_topic
costs_topic = topics.costs_topic


def _base(config: Config) -> dict[str, Any]:
    return {"bootstrap.servers": config.kafka.bootstrap_servers, **librdkafka_options(config.kafka.security)}


def _producer_base(config: Config) -> dict[str, Any]:
    """A producer's settings: keyed records partitioned as every other writer of the project's topics does."""
    return {**_base(config), "partitioner": LIBRDKAFKA_PARTITIONER}


def ensure_ledger_topic(config: Config) -> str:
    """The credit ledger topic (one partition, kept forever: the ledger is append-only), created unless it exists."""
    return topics.ensure_credit_ledger_topic(config)


def publish_ledger(config: Config, records: Sequence[dict[str, Any]], timeout_s: float = 30.0) -> str | None:
    """Publish ledger records (schemas/records.py ``CREDIT_LEDGER``) in order, each acknowledged by every in-sync
    replica (``acks=all``, idempotent) before it returns; the reason they were not (None: all acknowledged)."""
    from confluent_kafka import Producer

    try:
        topic = ensure_ledger_topic(config)
    except Exception as exc:  # unreachable brokers, refused credentials: say which topic
        return f"the ledger topic {topics.credit_ledger_topic(config)} is not reachable: {exc}"
    producer = Producer(
        {**_producer_base(config), "acks": "all", "enable.idempotence": True, "message.timeout.ms": int(timeout_s * 1000)}
    )
    errors: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(str(error))

    for record in records:
        value = json.dumps(record, separators=(",", ":"))
        producer.produce(topic, key=str(record["customer_id"]).encode(), value=value, on_delivery=delivered)
    left = producer.flush(timeout_s + 5)
    if errors or left:
        return f"the ledger topic {topic} did not acknowledge the row: {errors[0] if errors else 'timed out'}"
    return None


class LedgerUnavailable(RuntimeError):
    """The ledger topic could not be read to its end (brokers unreachable, refused credentials, a timeout)."""


def read_ledger(config: Config, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every record of the credit ledger topic, oldest first: the ledger as recorded (created empty unless it exists).

    One partition, kept forever and small (a row per grant and per void), so it is read whole.
    Raises :class:`LedgerUnavailable`.
    """
    topic = topics.credit_ledger_topic(config)
    try:
        ensure_ledger_topic(config)
        return [json.loads(value) for _, value in read_to_end(config, topic, f"{GROUP}-ledger-read", timeout_s) if value]
    except Exception as exc:  # unreachable brokers, refused credentials, a timeout: say which topic
        raise LedgerUnavailable(f"the ledger topic {topic} could not be read: {exc}") from exc


def read_state(config: Config, timeout_s: float = 60.0) -> Iterable[tuple[str, bytes | None]]:
    """Every committed record of the state topic, oldest first (the latest per key wins)."""
    return read_to_end(config, state_topic(config), f"{GROUP}-restore", timeout_s)


def read_alerts(config: Config, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every committed alert event on the alerts topic (a repeated one would appear twice)."""
    return [json.loads(value) for _, value in read_to_end(config, alerts_topic(config), f"{GROUP}-read", timeout_s) if value]


def read_costs(config: Config, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every committed cost record on the costs topic, oldest first per partition."""
    return [json.loads(value) for _, value in read_to_end(config, costs_topic(config), f"{GROUP}-read-costs", timeout_s) if value]


def read_to_end(config: Config, topic: str, group: str, timeout_s: float) -> Iterable[tuple[str, bytes | None]]:
    """``(key, value)`` of every committed record of ``topic``, each partition from its start to its end."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **_base(config),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in sorted(metadata.partitions)]
        consumer.assign(partitions)
        pending = {tp.partition for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the topic {topic} to its end in {timeout_s:.0f} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                log.warning("%s: %s", topic, message.error())
                continue
            yield (message.key() or b"").decode(), message.value()
    finally:
        consumer.close()
