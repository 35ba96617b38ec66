"""The loader's consumer (jobs/loader/kafka_consumer.py) on the real broker: what the loader relies on.

Committed records only (an aborted transaction in the topic, one left open), nothing committed
but what is committed after the insert (re-delivery after a failure, a restart resuming after the
committed offset), lag and caught-up on an empty and a non-empty topic, a rebalance (records read
but not committed go to the partition's next owner), and a ``consume`` that returns as soon as
records are there.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaProducer

from jobs.loader.kafka_consumer import CONSUMER_SETTINGS, ConfluentConsumer, Record

NewTopic = Callable[..., str]


@pytest.fixture
def consumers(bootstrap: str) -> Iterator[Callable[..., ConfluentConsumer]]:
    """Consumers with the loader's settings (a group per test unless named), closed at the end."""
    made: list[ConfluentConsumer] = []
    default_group = f"consumer-test-{uuid.uuid4().hex[:8]}"

    def make(topic: str, group: str | None = None) -> ConfluentConsumer:
        settings = {**CONSUMER_SETTINGS, "bootstrap.servers": bootstrap, "group.id": group or default_group}
        consumer = ConfluentConsumer([topic], settings)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    try:
        for value in values:
            producer.send(topic, value, partition=partition)
        producer.flush()
    finally:
        producer.close()


def read_until_caught_up(consumer: ConfluentConsumer, timeout_s: float = 30) -> list[Record]:
    """Everything the consumer gets until it says it is caught up (fails the test after ``timeout_s``)."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        polled = consumer.consume(1000, 0.3)
        records += polled
        if not polled and consumer.caught_up():
            return records
    raise AssertionError(f"not caught up after {timeout_s} s ({len(records)} records read)")


def values(records: list[Record]) -> list[bytes | None]:
    return [r.value for r in records]


def test_only_committed_records_are_read_and_the_end_is_the_last_stable_offset(
    bootstrap: str, new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]
) -> None:
    topic = new_topic("consumer-txn")
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"consumer-test-{uuid.uuid4().hex[:8]}")
    producer.init_transactions()
    for prefix, count, commit in (("a", 5, True), ("b", 3, False), ("c", 2, True)):
        producer.begin_transaction()
        for n in range(count):
            producer.send(topic, f"{prefix}{n}".encode(), key=b"k", partition=0)
        producer.flush()  # the aborted records are in the log, not only dropped by the producer
        (producer.commit_transaction if commit else producer.abort_transaction)()

    consumer = consumers(topic)
    records = read_until_caught_up(consumer)
    assert values(records) == [b"a0", b"a1", b"a2", b"a3", b"a4", b"c0", b"c1"]
    first = records[0]
    assert (first.topic, first.partition, first.offset, first.key) == (topic, 0, 0, b"k")
    assert isinstance(first.timestamp, int) and abs(first.timestamp / 1000 - time.time()) < 600
    assert records[-1].offset == 11  # a0..a4, marker, b0..b2, marker, c0, c1 (then a marker at 12)
    assert consumer.lag() == 0

    # A transaction left open: its records are neither read nor waited for (the end is the last
    # stable offset); the lag counts them, as the high watermark does.
    producer.begin_transaction()
    producer.send(topic, b"open", partition=0)
    producer.flush()
    time.sleep(0.5)
    assert consumer.consume(100, 1.0) == []
    assert consumer.caught_up()
    assert consumer.lag() == 1
    producer.commit_transaction()
    producer.close()
    assert values(read_until_caught_up(consumer)) == [b"open"]


def test_records_read_but_not_committed_are_delivered_again(
    bootstrap: str, new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]
) -> None:
    topic = new_topic("consumer-redeliver")
    produce(bootstrap, topic, [f"r{n}".encode() for n in range(10)])
    first = consumers(topic)
    assert len(read_until_caught_up(first)) == 10
    first.commit()  # the first ten are stored
    produce(bootstrap, topic, [f"s{n}".encode() for n in range(5)])
    held = read_until_caught_up(first)
    assert values(held) == [f"s{n}".encode() for n in range(5)]
    first.close()  # the insert failed, the process ends: nothing committed, closing commits nothing

    second = consumers(topic)
    again = read_until_caught_up(second)
    assert [(r.offset, r.value) for r in again] == [(r.offset, r.value) for r in held]


def test_after_a_commit_a_restart_resumes_after_the_committed_offset(
    bootstrap: str, new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]
) -> None:
    topic = new_topic("consumer-restart", partitions=2)
    for partition in (0, 1):
        produce(bootstrap, topic, [f"p{partition}-{n}".encode() for n in range(6)], partition=partition)
    first = consumers(topic)
    assert len(read_until_caught_up(first)) == 12
    first.commit()
    first.commit()  # nothing new: no error (librdkafka's own commit() would raise _NO_OFFSET)
    first.close()

    second = consumers(topic)
    assert read_until_caught_up(second) == []
    produce(bootstrap, topic, [b"later"], partition=1)
    later = read_until_caught_up(second)
    assert [(r.partition, r.offset, r.value) for r in later] == [(1, 6, b"later")]


def test_lag_and_caught_up_on_an_empty_topic(new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]) -> None:
    topic = new_topic("consumer-empty", partitions=2)
    consumer = consumers(topic)
    assert not consumer.caught_up()  # nothing assigned yet: never caught up
    assert read_until_caught_up(consumer) == []
    assert consumer.lag() == 0
    consumer.commit()  # nothing read: nothing to commit, no error


def test_lag_and_caught_up_on_a_topic_with_records(
    bootstrap: str, new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]
) -> None:
    topic = new_topic("consumer-lag")
    produce(bootstrap, topic, [f"v{n}".encode() for n in range(10)])
    consumer = consumers(topic)
    first: list[Record] = []
    deadline = time.monotonic() + 30
    while not first and time.monotonic() < deadline:
        first = consumer.consume(4, 0.5)
    assert values(first) == [b"v0", b"v1", b"v2", b"v3"]
    assert not consumer.caught_up()
    assert consumer.lag() == 6
    rest = read_until_caught_up(consumer)
    assert len(rest) == 6 and consumer.lag() == 0


def test_consume_returns_once_records_are_there_not_at_its_timeout(
    bootstrap: str, new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]
) -> None:
    topic = new_topic("consumer-wait")
    consumer = consumers(topic)
    read_until_caught_up(consumer)  # assigned, nothing there
    sender = threading.Timer(1.0, produce, (bootstrap, topic, [b"one", b"two"]))
    sender.start()
    started = time.monotonic()
    records = consumer.consume(50_000, 20.0)
    waited = time.monotonic() - started
    sender.join()
    while len(records) < 2 and time.monotonic() - started < 20:
        records += consumer.consume(50_000, 1.0)
    assert values(records) == [b"one", b"two"]
    # librdkafka's batch call alone waits its whole timeout for 50,000 records (20 s here)
    assert waited < 10, f"consume waited {waited:.1f} s for records that came after 1 s"


def test_a_rebalance_hands_uncommitted_records_to_the_new_owner(
    bootstrap: str, new_topic: NewTopic, consumers: Callable[..., ConfluentConsumer]
) -> None:
    topic = new_topic("consumer-rebalance", partitions=2)
    for partition in (0, 1):
        produce(bootstrap, topic, [f"p{partition}-{n}".encode() for n in range(5)], partition=partition)
    group = f"consumer-test-{uuid.uuid4().hex[:8]}"
    first = consumers(topic, group)
    assert len(read_until_caught_up(first)) == 10  # both partitions read, nothing committed yet

    second = consumers(topic, group)
    got_second: list[Record] = []
    got_first: list[Record] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both poll until the group has given each one partition
        got_first += first.consume(1000, 0.2)
        got_second += second.consume(1000, 0.2)
        if len(got_second) == 5:
            break
    assert len(got_second) == 5, f"the second member got {len(got_second)} records"
    moved = got_second[0].partition
    assert {r.partition for r in got_second} == {moved}
    assert values(got_second) == [f"p{moved}-{n}".encode() for n in range(5)]  # from the start: never committed
    # The rebalance revoked both partitions of the first member (eager protocol) and gave one
    # back: nothing was committed, so it reads that one from the start again.
    got_first += read_until_caught_up(first)
    kept = 1 - moved
    assert values(got_first) == [f"p{kept}-{n}".encode() for n in range(5)]

    first.commit()  # only what it still owns
    second.commit()
    first.close()
    second.close()
    third = consumers(topic, group)
    assert read_until_caught_up(third) == []  # both partitions committed to their ends, by their owners
