"""Heartbeats on the real broker: every partition gets one per round; a missing topic is reported."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from infra.settings import PROJECT_ROOT
from jobs.cli import EXIT_FAILURE, EXIT_OK, main
from jobs.config import Config, KafkaSettings, Topics
from jobs.loader.heartbeat import HeartbeatSender, is_heartbeat
from jobs.loader.loader import Loader
from jobs.produce import make_producer
from jobs.topics import ensure_topics
from schemas.validate import raw_event_line
from tests.integration.test_kafka_roundtrip import consume_all

FIXED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_one_round_reaches_every_partition(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("heartbeat", partitions=3)
    sender = HeartbeatSender(bootstrap, topic, clock=lambda: FIXED)
    try:
        assert sender.send_once() == 3
    finally:
        sender.stop()
    records = consume_all(bootstrap, topic)
    assert sorted(r.partition for r in records) == [0, 1, 2]
    for r in records:
        document = json.loads(r.value)
        assert is_heartbeat(document) and document["timestamp"] == "2026-03-01T12:00:00.000Z"


def test_the_thread_sends_every_interval_until_stopped(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("heartbeat", partitions=2)
    sender = HeartbeatSender(bootstrap, topic).start(timedelta(milliseconds=200))
    deadline = time.monotonic() + 30
    while sender.stats.rounds < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    sender.stop()
    rounds = sender.stats.rounds
    assert rounds >= 3 and sender.stats.failures == 0
    time.sleep(0.5)
    assert sender.stats.rounds == rounds  # stopped means stopped
    assert len(consume_all(bootstrap, topic)) == 2 * rounds


def test_a_missing_topic_is_retried_and_reported(bootstrap: str) -> None:
    sender = HeartbeatSender(bootstrap, "no-such-topic-heartbeat", metadata_timeout_s=0.5).start(timedelta(milliseconds=100))
    deadline = time.monotonic() + 30
    while sender.stats.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    sender.stop()
    assert sender.stats.failures >= 2 and sender.stats.rounds == 0
    assert "no-such-topic-heartbeat" in (sender.stats.last_error or "")


def test_the_command_sends_one_round(
    bootstrap: str, new_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("heartbeat", partitions=2)
    monkeypatch.setenv("METERING__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("METERING__KAFKA__TOPICS__EVENTS", topic)
    example = str(PROJECT_ROOT / "config" / "metering.example.yaml")
    assert main(["heartbeat", "--once", "--config", example]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"topic": topic, "partitions": 2}
    assert len(consume_all(bootstrap, topic)) == 2
    monkeypatch.setenv("METERING__KAFKA__TOPICS__EVENTS", "no-such-topic-heartbeat")
    assert main(["heartbeat", "--once", "--config", example]) == EXIT_FAILURE
    assert "does it exist?" in capsys.readouterr().err


def test_the_loader_loads_no_heartbeat_and_records_no_batch_for_them(bootstrap: str, storage_settings: StorageSettings) -> None:
    prefix = f"hb-load-{uuid.uuid4().hex[:8]}"
    topics = Topics(*(f"{prefix}-{name}" for name in ("events", "raw", "aggregates", "finals", "corrections", "dead-letters")))
    config = Config(kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=topics), storage=storage_settings)
    ensure_topics(config, partitions=2)
    event = {"event_id": "e-1", "customer_id": "acme", "event_type": "api_call", "timestamp": "2026-03-01T00:00:00Z"}
    event["quantity"] = "1"
    producer = make_producer(bootstrap)
    try:
        # the loader reads the job's raw rows (schemas.validate.raw_event_line), never the events topic
        key, value = raw_event_line(json.dumps(event).encode()) or (b"", b"")
        producer.send(topics.raw, key=key, value=value).get(timeout=30)
    finally:
        producer.close()
    (event_record,) = consume_all(bootstrap, topics.raw)
    time.sleep(0.05)  # the heartbeats' Kafka timestamps are later than the event's
    sender = HeartbeatSender(bootstrap, topics.events)
    try:
        sender.send_once()
        with open_storage(storage_settings) as storage:
            migrate(storage)
            first = Loader(config, storage, group_id=f"{prefix}-loader").run(until_idle=True, idle_s=1)
            sender.send_once()  # heartbeats only: nothing to load, no batch to record
            second = Loader(config, storage, group_id=f"{prefix}-loader").run(until_idle=True, idle_s=1)
            raw = storage.query_rows("SELECT event_id FROM raw_events")
            batches = storage.query_rows("SELECT count(), max(newest_source_time) FROM loader_batches")
    finally:
        sender.stop()
    assert (dict(first.rows), first.batches, dict(second.rows), second.batches) == ({"raw_events": 1}, 1, {}, 0)
    assert raw == [("e-1",)]
    assert batches[0][0] == 1 and int(batches[0][1].timestamp() * 1000) == event_record.timestamp
