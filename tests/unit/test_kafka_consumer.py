"""The loader's consumer adapter (jobs/loader/kafka_consumer.py) over a stand-in for confluent-kafka's Consumer.

The broker's side is in tests/integration/test_kafka_consumer.py; this pins what the adapter
itself decides: the first record waited for and the rest taken as they are, error events kept
out of the records, what is committed (positions, only new ones, never an unknown one), and the
client's exceptions turned into ConsumerError.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from jobs.loader.kafka_consumer import CONSUMER_SETTINGS, ConfluentConsumer, ConsumerError, Record


class Message:
    def __init__(self, offset: int, value: bytes | None = b"v", error: KafkaError | None = None, partition: int = 0) -> None:
        self._offset, self._value, self._error, self._partition = offset, value, error, partition

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_772_323_200_000 + self._offset)

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error


class Client:
    """Answers as confluent-kafka's Consumer does; records the calls made."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.batches: list[list[Message]] = []
        self.polled: Message | None = None
        self.positions: dict[int, int] = {}
        self.committed_offsets: list[list[tuple[int, int]]] = []
        self.commit_error: KafkaException | None = None

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.calls.append(("subscribe", topics, sorted(callbacks)))

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.calls.append(("consume", num_messages, timeout))
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout: float) -> Message | None:
        self.calls.append(("poll", timeout))
        return self.polled

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", p) for p in sorted(self.positions)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions[tp.partition]) for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        if self.commit_error is not None:
            raise self.commit_error
        self.committed_offsets.append([(tp.partition, tp.offset) for tp in offsets])
        return offsets

    def close(self) -> None:
        self.calls.append(("close",))


def adapter(client: Client) -> ConfluentConsumer:
    return ConfluentConsumer(["t"], {**CONSUMER_SETTINGS, "group.id": "g"}, client=client)


def test_the_settings_read_committed_records_and_commit_nothing_by_themselves() -> None:
    assert CONSUMER_SETTINGS["isolation.level"] == "read_committed"
    assert CONSUMER_SETTINGS["enable.auto.commit"] is False
    assert CONSUMER_SETTINGS["enable.auto.offset.store"] is False
    assert CONSUMER_SETTINGS["auto.offset.reset"] == "earliest"
    assert CONSUMER_SETTINGS["check.crcs"] is True


def test_records_carry_what_the_row_functions_read() -> None:
    record = Record(Message(7, b"payload"))
    assert (record.topic, record.partition, record.offset, record.timestamp, record.key, record.value) == (
        "t",
        0,
        7,
        1_772_323_200_007,
        b"k",
        b"payload",
    )


def test_subscribing_registers_every_rebalance_callback() -> None:
    client = Client()
    adapter(client)
    assert client.calls == [("subscribe", ["t"], ["on_assign", "on_lost", "on_revoke"])]


def test_records_already_fetched_are_returned_without_waiting() -> None:
    client = Client()
    client.batches = [[Message(0), Message(1)]]
    records = adapter(client).consume(50_000, 0.5)
    assert [r.offset for r in records] == [0, 1]
    assert [c for c in client.calls if c[0] != "subscribe"] == [("consume", 50_000, 0)]


def test_only_the_first_record_is_waited_for() -> None:
    client = Client()
    client.polled = Message(0)
    client.batches = [[], [Message(1), Message(2)]]
    records = adapter(client).consume(50_000, 0.5)
    assert [r.offset for r in records] == [0, 1, 2]
    assert [c for c in client.calls if c[0] != "subscribe"] == [("consume", 50_000, 0), ("poll", 0.5), ("consume", 49_999, 0)]


def test_nothing_there_after_the_timeout_is_an_empty_list() -> None:
    client = Client()
    assert adapter(client).consume(10, 0.2) == []


def test_error_events_are_logged_not_returned(caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    client.batches = [[Message(0), Message(-1, None, KafkaError(KafkaError._TRANSPORT)), Message(1)]]
    with caplog.at_level(logging.WARNING, logger="metering.loader.kafka"):
        records = adapter(client).consume(100, 0)
    assert [r.offset for r in records] == [0, 1]
    assert "_TRANSPORT" in caplog.text


def test_only_error_events_fetched_still_waits_for_the_first_record() -> None:
    client = Client()
    client.batches = [[Message(-1, None, KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))], []]
    client.polled = Message(0)
    records = adapter(client).consume(10, 0.5)  # not an immediate empty answer: the loop would spin
    assert [r.offset for r in records] == [0]
    assert ("poll", 0.5) in client.calls


def test_a_client_exception_while_consuming_is_a_consumer_error() -> None:
    class Failing(Client):
        def consume(self, num_messages: int, timeout: float) -> list[Message]:
            raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))

    with pytest.raises(ConsumerError, match="_ALL_BROKERS_DOWN"):
        adapter(Failing()).consume(100, 0.5)


def test_commit_sends_the_positions_read_and_only_new_ones() -> None:
    client = Client()
    consumer = adapter(client)
    client.positions = {0: 12, 1: -1001}  # partition 1: nothing read yet, no position to commit
    consumer.commit()
    consumer.commit()  # nothing new: no request (librdkafka's own commit() would raise _NO_OFFSET)
    client.positions = {0: 12, 1: 3}
    consumer.commit()
    assert client.committed_offsets == [[(0, 12)], [(1, 3)]]


def test_a_revoked_partition_is_committed_afresh_once_assigned_again() -> None:
    client = Client()
    consumer = adapter(client)
    client.positions = {0: 5}
    consumer.commit()
    consumer._on_revoke(client, [TopicPartition("t", 0)])
    consumer._on_assign(client, [TopicPartition("t", 0)])
    consumer.commit()  # another member may have committed since: ours is sent again
    assert client.committed_offsets == [[(0, 5)], [(0, 5)]]


@pytest.mark.parametrize("code", [KafkaError.REBALANCE_IN_PROGRESS, KafkaError._TRANSPORT, KafkaError._TIMED_OUT])
def test_a_failed_commit_is_a_consumer_error(code: int) -> None:
    client = Client()
    consumer = adapter(client)
    client.positions = {0: 5}
    client.commit_error = KafkaException(KafkaError(code))
    with pytest.raises(ConsumerError, match="offset commit failed"):
        consumer.commit()
    client.commit_error = None
    consumer.commit()  # not remembered as committed: the next commit sends it
    assert client.committed_offsets == [[(0, 5)]]


def test_a_partition_the_commit_failed_for_is_a_consumer_error() -> None:
    class PartlyFailing(Client):
        def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
            refused = SimpleNamespace(topic="t", partition=1, offset=7, error=KafkaError(KafkaError.ILLEGAL_GENERATION))
            return [SimpleNamespace(topic="t", partition=0, offset=5, error=None), refused]

    client = PartlyFailing()
    consumer = adapter(client)
    client.positions = {0: 5, 1: 7}
    with pytest.raises(ConsumerError, match=r"t\[1\]"):
        consumer.commit()


def test_close_is_once() -> None:
    client = Client()
    consumer = adapter(client)
    consumer.close()
    consumer.close()
    assert client.calls.count(("close",)) == 1
