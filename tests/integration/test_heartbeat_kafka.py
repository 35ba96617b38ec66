"""Heartbeats on the real broker: every partition gets one per round; a missing topic is reported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from infra.settings import PROJECT_ROOT
from jobs.cli import EXIT_FAILURE, EXIT_OK, main
from jobs.heartbeat import HeartbeatSender, is_heartbeat
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
