"""The evaluator's transactions on a fake broker (jobs/alerts/service.py): an aborted transaction restores and rewinds.

The fake keeps what a real broker would: the input log, the committed consumer offsets, and the
records of committed transactions on the alerts and state topics. The producer's third commit
fails with an error that requires an abort: the service must abort, restore its state from what
was committed and read again from the committed offsets, so the alerts are still each written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import jobs.alerts.service as service
from jobs.alerts.evaluator import AGGREGATE, Evaluator
from jobs.config import Config, load_config
from tests.unit.test_alert_evaluator import aggregate


class Broker:
    def __init__(self, topic: str, records: list[bytes]) -> None:
        self.topic = topic
        self.log = records
        self.committed = 0
        self.topics: dict[str, list[tuple[bytes, bytes | None]]] = {}
        self.commits = 0
        self.fail_commit = 3


class Message:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 1, 0


class FakeConsumer:
    def __init__(self, broker: Broker, stop: Any) -> None:
        self.broker, self.stop = broker, stop
        self.position_ = broker.committed

    def subscribe(self, topics: list[str]) -> None:
        assert self.broker.topic in topics

    def consume(self, count: int, timeout: float) -> list[Message]:
        batch = self.broker.log[self.position_ : self.position_ + min(count, 4)]  # small batches: several transactions
        out = [Message(self.broker.topic, self.position_ + n, v) for n, v in enumerate(batch)]
        self.position_ += len(out)
        if not out and self.broker.committed == len(self.broker.log):
            self.stop.set()
        return out

    def poll(self, timeout: float) -> None:
        return None

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.broker.topic, 0)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(self.broker.topic, 0, self.position_)]

    def consumer_group_metadata(self) -> str:
        return "group"

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.pending: list[tuple[str, bytes, bytes | None]] = []
        self.offset: int | None = None

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        self.pending, self.offset = [], None

    def produce(self, topic: str, key: bytes, value: bytes | str | None) -> None:
        self.pending.append((topic, key, value.encode() if isinstance(value, str) else value))

    def send_offsets_to_transaction(self, positions: list[TopicPartition], metadata: Any, timeout: float) -> None:
        self.offset = positions[0].offset

    def commit_transaction(self, timeout: float) -> None:
        self.broker.commits += 1
        if self.broker.commits == self.broker.fail_commit:
            raise KafkaException(KafkaError(KafkaError._STATE, "injected", txn_requires_abort=True))
        for topic, key, value in self.pending:
            self.broker.topics.setdefault(topic, []).append((key, value))
        assert self.offset is not None
        self.broker.committed = self.offset

    def abort_transaction(self, timeout: float) -> None:
        self.pending = []

    def flush(self, timeout: float) -> None:
        pass


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "metering.yaml"
    document = {
        "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "alerts": {"rules": [{"name": "calls", "kind": "usage", "meter": "api_calls", "thresholds": [10, 20, 30, 40]}]},
    }
    path.write_text(json.dumps(document))
    return load_config(path, env={})


def test_an_aborted_transaction_restores_the_state_and_rewinds(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [aggregate(1_772_323_200_000 + 60_000 * n, 1, 3) for n in range(16)]  # 3 calls a minute: 48 in all
    broker = Broker(config.kafka.topics.aggregates, [json.dumps(r).encode() for r in records])
    alert_service = service.AlertService(config)

    def state(config: Config) -> Iterator[tuple[str, bytes | None]]:
        yield from ((k.decode(), v) for k, v in broker.topics.get(service.state_topic(config), []))

    import confluent_kafka

    monkeypatch.setattr(service, "ensure_alert_topics", lambda config: None)
    monkeypatch.setattr(service, "read_state", state)
    monkeypatch.setattr(confluent_kafka, "Producer", lambda settings: FakeProducer(broker))
    monkeypatch.setattr(confluent_kafka, "Consumer", lambda settings: FakeConsumer(broker, alert_service.stop))
    stats = alert_service.run()

    assert stats.aborted == 1 and broker.committed == len(records)
    written = [json.loads(v or b"") for _, v in broker.topics[service.alerts_topic(config)]]
    oracle = Evaluator(config.alerts, config.rating)
    expected = [a for r in records for a in oracle.apply(AGGREGATE, r, arrival_ms=0, now_ms=0)]
    assert [a["id"] for a in written] == [a["id"] for a in expected] and len(expected) == 4
