"""Produce -> consume on the real broker, including a transactional write read with read_committed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from jobs.cli import EXIT_REJECTED, main
from jobs.produce import make_producer, produce_lines
from schemas.validate import SCHEMA_DIR


def consume_all(bootstrap: str, topic: str, *, isolation: str = "read_uncommitted", timeout_ms: int = 4000) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
        consumer_timeout_ms=timeout_ms,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_produce_sends_valid_lines_keyed_by_customer_and_counts_rejects(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("produce", partitions=3)
    valid = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "customer_id": f"cust-{i % 3}",
                "event_type": "api_call",
                "timestamp": "2026-03-01T12:00:00Z",
                "quantity": "0.1",
            }
        ).encode()
        for i in range(300)
    ]
    invalid = [b"not json", b'{"event_id": "x"}', b""]
    producer = make_producer(bootstrap)
    try:
        summary = produce_lines([*valid[:150], *invalid, *valid[150:]], producer=producer, topic=topic)
    finally:
        producer.close()
    assert (summary.sent, summary.rejected, summary.blank, summary.failed) == (300, 2, 1, 0)
    assert summary.reasons == {"malformed_json": 1, "missing_field": 1}
    records = consume_all(bootstrap, topic)
    assert sorted(r.value for r in records) == sorted(valid), "original bytes, each exactly once"
    by_key: dict[bytes, set[int]] = {}
    for record in records:
        assert record.key == json.loads(record.value)["customer_id"].encode()
        by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values()), "one customer, one partition"


def test_produce_command_on_the_corpus(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("corpus")
    examples = sorted((SCHEMA_DIR / "examples" / "v1").glob("*/*.json"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in examples))
    rejects = tmp_path / "rejects.jsonl"
    code = main(
        [
            "produce",
            str(corpus),
            "--topic",
            topic,
            "--bootstrap",
            bootstrap,
            "--rejects",
            str(rejects),
            "--format",
            "json",
        ]
    )
    assert code == EXIT_REJECTED
    summary = json.loads(capsys.readouterr().out)
    n_valid = len(list((SCHEMA_DIR / "examples" / "v1" / "valid").glob("*.json")))
    n_invalid = len(examples) - n_valid
    assert (summary["sent"], summary["rejected"]) == (n_valid, n_invalid)
    assert len(rejects.read_text().splitlines()) == n_invalid
    assert len(consume_all(bootstrap, topic)) == n_valid


def test_transactional_write_is_visible_to_read_committed_only_when_committed(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("txn")
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"test-{uuid.uuid4().hex[:8]}", acks="all")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(10):
            producer.send(topic, f"committed-{i}".encode())
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(5):
            producer.send(topic, f"aborted-{i}".encode())
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()
    committed = [r.value for r in consume_all(bootstrap, topic, isolation="read_committed")]
    assert committed == [f"committed-{i}".encode() for i in range(10)]
    uncommitted = [r.value for r in consume_all(bootstrap, topic, isolation="read_uncommitted")]
    assert len(uncommitted) == 15, "the aborted records exist in the log; read_committed hides them"
