"""Every Kafka client of the pipeline against a real broker that authenticates with SASL SCRAM.

A spare KRaft broker (own home, ports from METERING_TEST_SPARE_PORT_BASE) gets a SASL_PLAINTEXT
listener with SCRAM-SHA-256 (infra/kafka.py's ``scram_listener``, the same properties the
generated compose broker uses) and one user written at format time. Its PLAINTEXT listener stays
for the readiness probe only; every client below goes through the SASL listener, configured by
``kafka.security`` exactly as a deployment would (the password from
``METERING__KAFKA__SECURITY__PASSWORD``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
import yaml

from infra import deploy
from infra.kafka import KafkaBroker, scram_credential, scram_listener
from infra.settings import LOOPBACK, StackSettings
from jobs.cli import EXIT_FAILURE, EXIT_OK, main
from jobs.config import Config, load_config
from jobs.loader.heartbeat import HeartbeatSender
from jobs.loader.loader import Loader
from jobs.topics import committed_values, ensure_topic, ensure_topics
from tests.support.spare_broker import running, spare_stack_settings

MECHANISM = deploy.KAFKA_MECHANISM  # what the generated compose broker and configuration use
USER = "metering"
PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory: pytest.TempPathFactory, stack_settings: StackSettings) -> Iterator[str]:
    """The SASL listener's bootstrap address of a broker started for this module."""
    settings = spare_stack_settings(stack_settings, tmp_path_factory.mktemp("sasl") / "home")
    sasl_port = settings.flink_rest_port  # no Flink on this stack: its port is free for the SASL listener
    plain = f"PLAINTEXT://{LOOPBACK}:{settings.kafka_port}"
    sasl = f"SASL_PLAINTEXT://{LOOPBACK}:{sasl_port}"
    broker = KafkaBroker(
        settings,
        extra_properties={
            "listeners": f"{plain},CONTROLLER://{LOOPBACK}:{settings.kafka_controller_port},{sasl}",
            "advertised.listeners": f"{plain},{sasl}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            **scram_listener("SASL_PLAINTEXT", MECHANISM),
        },
        scram_credentials=[scram_credential(MECHANISM, USER, PASSWORD)],
    )
    with running(broker):
        yield f"{LOOPBACK}:{sasl_port}"


def config_file(tmp_path: Path, bootstrap: str, **topics: str) -> Path:
    """A configuration using the SASL listener (the password is not in it: it comes from the environment)."""
    path = tmp_path / "metering.yaml"
    suffix = uuid.uuid4().hex[:8]
    names = {
        k: f"sasl-{k.replace('_', '-')}-{suffix}"
        for k in ("events", "raw", "aggregates", "finals", "corrections", "dead_letters")
    }
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "topics": {**names, **topics},
                    "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": MECHANISM, "username": USER},
                }
            }
        )
    )
    return path


def load(path: Path, password: str = PASSWORD) -> Config:
    return load_config(path, env={"METERING__KAFKA__SECURITY__PASSWORD": password}, require_meters=False)


def events(count: int) -> str:
    return "".join(
        json.dumps(
            {
                "event_id": f"e{i}",
                "customer_id": f"c{i % 3}",
                "event_type": "api_call",
                "timestamp": "2026-03-01T12:00:00Z",
                "quantity": "1",
            }
        )
        + "\n"
        for i in range(count)
    )


def test_produce_cli_delivers_and_the_loaders_consumer_reads_it_all(
    sasl_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, sasl_bootstrap)
    monkeypatch.setenv("METERING__KAFKA__SECURITY__PASSWORD", PASSWORD)
    config = load(path)
    source = tmp_path / "events.jsonl"
    source.write_text(events(50))
    # `metering produce` into the topic the loader reads raw events from: created over SASL, then sent.
    code = main(["produce", str(source), "--config", str(path), "--topic", config.kafka.topics.raw, "--format", "json"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["sent"] == 50
    assert PASSWORD not in capsys.readouterr().err

    loader = Loader(config, MagicMock(), group_id=f"sasl-{uuid.uuid4().hex[:8]}")
    assert loader.consumer_settings["sasl.password"] == PASSWORD  # through infra.kafka_security.librdkafka_options
    consumer = loader._consumer()
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < 50 and time.monotonic() < deadline:
            values.extend(r.value for r in consumer.consume(500, 1.0) if r.topic == config.kafka.topics.raw)
        assert sorted(values) == sorted(line.encode() for line in events(50).splitlines())
        assert consumer.caught_up()  # its admin client (end offsets) authenticates too
        consumer.commit()
    finally:
        consumer.close()


def test_topic_admin_committed_reads_and_heartbeats_authenticate(sasl_bootstrap: str, tmp_path: Path) -> None:
    config = load(config_file(tmp_path, sasl_bootstrap))
    kafka = config.kafka
    created = ensure_topics(config, partitions=2)
    assert len(created) == 8  # every topic of the pipeline, duplicates and amendments included
    assert ensure_topic(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security) is False
    sender = HeartbeatSender(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security)
    try:
        assert sender.send_once() == 2
    finally:
        sender.stop()
    assert len(committed_values(kafka.bootstrap_servers, kafka.topics.events, 60, security=kafka.security)) == 2


def test_a_wrong_password_fails_clearly_and_soon(
    sasl_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, sasl_bootstrap)
    source = tmp_path / "events.jsonl"
    source.write_text(events(1))
    monkeypatch.setenv("METERING__KAFKA__SECURITY__PASSWORD", "not-the-password")
    started = time.monotonic()
    code = main(["produce", str(source), "--config", str(path), "--connect-timeout", "10"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE
    assert elapsed < 30, f"took {elapsed:.0f}s"
    assert "kafka.security" in err and "METERING__KAFKA__SECURITY__PASSWORD" in err, err
    assert "refused" in err, err
    assert "not-the-password" not in err


def test_the_loaders_consumer_stops_on_a_wrong_password(sasl_bootstrap: str, tmp_path: Path) -> None:
    from infra.kafka_security import KafkaAuthenticationError

    good = load(config_file(tmp_path, sasl_bootstrap))
    ensure_topics(good, partitions=1)
    config = load(config_file(tmp_path, sasl_bootstrap, **{k: getattr(good.kafka.topics, k) for k in ("events", "raw")}), "wrong")
    consumer: Any = Loader(config, MagicMock(), group_id=f"sasl-{uuid.uuid4().hex[:8]}")._consumer()
    started = time.monotonic()
    try:
        with pytest.raises(KafkaAuthenticationError, match=r"kafka\.security"):
            while time.monotonic() - started < 60:
                consumer.consume(10, 1.0)
    finally:
        consumer.close()
    assert time.monotonic() - started < 30


def test_the_metering_job_reads_and_writes_through_scram(
    sasl_bootstrap: str, tmp_path: Path, stack_settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's Kafka tables (source, exactly-once sinks, upsert sink) log in with the relocated SCRAM module."""
    from jobs.produce import make_producer, produce_lines
    from tests.e2e.harness import run_bounded_job

    path = config_file(tmp_path, sasl_bootstrap)
    document = yaml.safe_load(path.read_text())
    document["meters"] = [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}]
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("METERING__KAFKA__SECURITY__PASSWORD", PASSWORD)  # the job's subprocess reads it
    config = load_config(path)
    kafka = config.kafka
    ensure_topics(config, partitions=1)
    producer = make_producer(kafka.bootstrap_servers, security=kafka.security, linger_ms=0)
    try:
        lines = [line.encode() for line in events(20).splitlines()] + [b"not json"]
        summary = produce_lines(lines, producer=producer, topic=kafka.topics.events, validate=False)
    finally:
        producer.close()
    assert summary.sent == 21
    run_bounded_job(path, stack_settings, f"sasl-{uuid.uuid4().hex[:6]}")
    read = {
        name: committed_values(kafka.bootstrap_servers, getattr(kafka.topics, name), 60, security=kafka.security)
        for name in ("raw", "dead_letters", "aggregates")
    }
    assert len(read["raw"]) == 20
    assert [json.loads(v)["reason"] for v in read["dead_letters"]] == ["malformed_json"]
    assert read["aggregates"], "the finalization's sink wrote nothing"
