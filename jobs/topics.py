"""Create and list Kafka topics (admin client)."""

from __future__ import annotations

from typing import Any

from infra.kafka_security import PLAINTEXT, KafkaSecurity, kafka_python_options, refused_credentials_raise
from jobs.config import ALERTS_STATE_SUFFIX, ALERTS_SUFFIX, COSTS_SUFFIX, CREDIT_LEDGER_SUFFIX


def ensure_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: int = 4,
    config: dict[str, str] | None = None,
    connect_timeout_s: float = 10.0,
    security: KafkaSecurity = PLAINTEXT,
) -> bool:
    """Create ``topic`` unless it exists. True if it was created. Fails after ``connect_timeout_s`` if unreachable,
    with :class:`~infra.kafka_security.KafkaAuthenticationError` if the brokers refused the credentials."""
    with refused_credentials_raise(security):
        return _ensure_topic(bootstrap, topic, partitions, config, connect_timeout_s, security)


def _ensure_topic(
    bootstrap: str, topic: str, partitions: int, config: dict[str, str] | None, connect_timeout_s: float, security: KafkaSecurity
) -> bool:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="metering-admin",
        bootstrap_timeout_ms=int(connect_timeout_s * 1000),
        **kafka_python_options(security),
    )
    try:
        if topic in admin.list_topics():
            return False
        try:
            admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config or {})])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


def committed_values(bootstrap: str, topic: str, timeout_s: float = 120, *, security: KafkaSecurity = PLAINTEXT) -> list[bytes]:
    """Every record value a ``read_committed`` reader sees in ``topic``, from the start to the end offsets.

    Raises ``TimeoutError`` when the end is not reached within ``timeout_s``.
    """
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        **kafka_python_options(security),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {ends} within {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(record.value for record in records)
        return values
    finally:
        consumer.close()


def alerts_topic(config: Any) -> str:
    """Where ``metering alerts run`` writes alert events (``alerts.topic``, default ``<events>-alerts``)."""
    return str(config.alerts.topic or config.kafka.topics.events + ALERTS_SUFFIX)


def alerts_state_topic(config: Any) -> str:
    """The evaluator's compacted state topic (``alerts.state_topic``, default ``<events>-alerts-state``)."""
    return str(config.alerts.state_topic or config.kafka.topics.events + ALERTS_STATE_SUFFIX)


def costs_topic(config: Any) -> str:
    """Where ``metering alerts run`` writes cost records (``alerts.costs``): ``<events>-costs``, keyed by customer."""
    return str(config.kafka.topics.events + COSTS_SUFFIX)


def credit_ledger_topic(config: Any) -> str:
    """Where ``metering credits grant|void`` record ledger rows (the ledger itself; the loader and the alert evaluator
    read it): ``<events>-credit-ledger``."""
    return str(config.kafka.topics.events + CREDIT_LEDGER_SUFFIX)


#: The ledger topic keeps every row (one partition: a customer's rows stay in order; never deleted: the ledger is append-only).
CREDIT_LEDGER_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def ensure_credit_ledger_topic(config: Any) -> str:
    """The credit ledger topic (one partition, kept forever: the ledger is append-only), created unless it exists."""
    kafka, topic = config.kafka, credit_ledger_topic(config)
    ensure_topic(kafka.bootstrap_servers, topic, partitions=1, config=CREDIT_LEDGER_CONFIG, security=kafka.security)
    return topic


def ensure_topics(config: Any, partitions: int = 4) -> list[str]:
    """Create every topic the pipeline uses (idempotent); returns those created."""
    from jobs.flink.metering_job import all_topics

    kafka = config.kafka
    return [
        topic
        for topic in all_topics(config)
        if ensure_topic(kafka.bootstrap_servers, topic, partitions=partitions, security=kafka.security)
    ]
