"""The loader's offset commit: a failed commit means re-delivery, never the loader's end."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from jobs.loader.kafka_consumer import CONSUMER_SETTINGS, ConfluentConsumer, ConsumerError
from jobs.loader.loader import Loader


class FailingClient:
    """confluent-kafka's Consumer whose commit fails as it does on a rebalance, a broker down, no coordinator."""

    def __init__(self, error: KafkaException) -> None:
        self.error = error

    def subscribe(self, topics: list[str], **callbacks: object) -> None:
        pass

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", 0)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("t", 0, 42)]

    def commit(self, **kwargs: object) -> None:
        raise self.error


@pytest.mark.parametrize(
    "code",
    [KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError._TRANSPORT, KafkaError._TIMED_OUT],
)
def test_a_commit_that_fails_is_logged_and_loading_goes_on(code: int, caplog: pytest.LogCaptureFixture) -> None:
    error = KafkaException(KafkaError(code))
    consumer = ConfluentConsumer(["t"], {**CONSUMER_SETTINGS, "group.id": "g"}, client=FailingClient(error))
    with caplog.at_level(logging.WARNING, logger="metering.loader"):
        Loader._commit(consumer)  # the broker down (kill soak), or a rebalance: no exception
    assert "records will be re-delivered" in caplog.text
    assert ConsumerError.__name__ in caplog.text and KafkaError(code).name() in caplog.text
