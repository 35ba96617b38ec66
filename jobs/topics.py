"""Create and list Kafka topics (admin client)."""

from __future__ import annotations


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
