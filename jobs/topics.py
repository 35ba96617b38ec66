"""Create and list Kafka topics (admin client)."""

from __future__ import annotations

from typing import Any


def ensure_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: int = 4,
    config: dict[str, str] | None = None,
    connect_timeout_s: float = 10.0,
) -> bool:
    """Create ``topic`` unless it exists. True if it was created. Fails after ``connect_timeout_s`` if unreachable."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="metering-admin", bootstrap_timeout_ms=int(connect_timeout_s * 1000)
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


def committed_values(bootstrap: str, topic: str, timeout_s: float = 120) -> list[bytes]:
    """Every record value a ``read_committed`` reader sees in ``topic``, from the start to the end offsets.

    Raises ``TimeoutError`` when the end is not reached within ``timeout_s``.
    """
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
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


def ensure_topics(config: Any, partitions: int = 4) -> list[str]:
    """Create every topic the pipeline uses (idempotent); returns those created."""
    from jobs.flink.metering_job import all_topics

    return [t for t in all_topics(config) if ensure_topic(config.kafka.bootstrap_servers, t, partitions=partitions)]
