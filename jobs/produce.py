"""Send JSON-lines usage events to Kafka: validated, keyed by customer, idempotent, acks=all.

Each line's original bytes are sent unchanged (no re-serialisation, so a
quantity's exact text survives). Invalid lines never abort the run: they are
counted per reason code, optionally written to a rejects file with their
reasons, and reported in the summary. With ``validate=False`` every line is
sent as-is (for testing the job's own dead-letter path).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from infra.kafka_security import PLAINTEXT, KafkaSecurity, kafka_python_options, refused_credentials_raise
from schemas.validate import Validation, validate_line

log = logging.getLogger("metering.kafka")
#: What JSON counts as whitespace (RFC 8259): a line of only these is blank and not sent.
JSON_WHITESPACE = b" \t\r\n"


@dataclass
class ProduceSummary:
    """What happened to each input line."""

    read: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    blank: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "sent": self.sent,
            "rejected": self.rejected,
            "failed": self.failed,
            "blank": self.blank,
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "delivery_errors": self.errors[:10],
        }


def record_key(line: bytes, validation: Validation | None) -> bytes | None:
    """The Kafka key of an events-topic record: its customer id (the job's partitioning and dedup scope).

    Every writer of the events topic keys this way (``metering produce``, ``metering serve``).
    """
    if validation is not None and validation.event is not None:
        return validation.event.customer_id.encode()
    try:
        customer = json.loads(line).get("customer_id")
        return customer.encode() if isinstance(customer, str) else None
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, nested too deep; a lone surrogate
        return None


@functools.cache
def kafka_crc32c_is_native() -> bool:
    """Whether kafka-python checks and computes record-batch CRC-32Cs in C; logs a warning once if not.

    Without the ``crc32c`` package it falls back to a pure-Python loop, and the producer needs
    about twice the CPU per record (bench/kafka_client.py, docs/benchmarks.md). The loader consumes
    with librdkafka (jobs/loader/kafka_consumer.py), which checks CRCs in C.
    """
    from kafka.record import util

    native = util.crc32c_c is not None
    if not native:
        log.warning(
            "kafka-python computes CRC-32C in pure Python: the producer uses ~2x the CPU; "
            "fix: pip install 'crc32c' (a dependency of this project: reinstall it)"
        )
    return native


def make_producer(bootstrap: str, *, security: KafkaSecurity = PLAINTEXT, **overrides: Any) -> Any:
    """An idempotent, acks=all producer tuned for batched throughput, authenticating as ``security`` says."""
    from kafka import KafkaProducer

    kafka_crc32c_is_native()

    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
        "retries": 2**31 - 1,
        "delivery_timeout_ms": 120_000,
        "client_id": "metering-produce",
    }
    options.update(overrides)
    with refused_credentials_raise(security):
        return KafkaProducer(**options, **kafka_python_options(security))


def produce_lines(
    lines: Iterable[bytes],
    *,
    producer: Any,
    topic: str,
    validate: bool = True,
    rejects: IO[str] | None = None,
    on_line: Callable[[int], None] | None = None,
) -> ProduceSummary:
    """Send every valid line to ``topic``; returns the summary after all sends are acknowledged."""
    from kafka.errors import KafkaError

    summary = ProduceSummary()
    lock = threading.Lock()

    def delivered(_: Any) -> None:
        with lock:
            summary.sent += 1

    def failed(exc: BaseException) -> None:
        with lock:
            summary.failed += 1
            summary.errors.append(f"{type(exc).__name__}: {exc}")

    for number, raw in enumerate(lines, start=1):
        if on_line is not None:
            on_line(len(raw))
        line = raw.rstrip(b"\r\n")
        if not line.strip(JSON_WHITESPACE):  # \x0b or \x0c is not blank: a line the job dead-letters
            summary.blank += 1
            continue
        summary.read += 1
        validation = validate_line(line) if validate else None
        if validation is not None and not validation.ok:
            summary.rejected += 1
            for reason in {problem.reason for problem in validation.problems}:
                summary.reasons[reason] += 1  # lines per reason, not problems
            if rejects is not None:
                record = {
                    "line": number,
                    "reasons": [p.reason for p in validation.problems],
                    "problems": [str(p) for p in validation.problems],
                    "raw": line.decode("utf-8", errors="replace"),
                }
                rejects.write(json.dumps(record) + "\n")
            continue
        try:
            future = producer.send(topic, key=record_key(line, validation), value=line)
        except KafkaError as exc:  # refused before sending, e.g. larger than the producer's max_request_size
            failed(exc)
            continue
        future.add_callback(delivered)
        future.add_errback(failed)
    producer.flush()
    return summary


@dataclass
class FileProduced:
    """What :func:`produce_file` did: the summary, and whether it had to create the topic."""

    summary: ProduceSummary
    created_topic: bool


def produce_file(
    path: str,
    *,
    bootstrap: str,
    topic: str,
    partitions: int = 4,
    validate: bool = True,
    rejects: str | None = None,
    connect_timeout_s: float = 10.0,
    progress: bool | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> FileProduced:
    """Send a JSON-lines file (``-``: standard input) to ``topic``, creating the topic if it is missing.

    ``rejects`` names a file for the refused lines with their reasons. ``progress``: a byte progress
    bar on stderr (None: only when stderr is a terminal, False: never).
    """
    import os
    import sys

    from tqdm import tqdm

    from jobs.topics import ensure_topic

    source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    total = None if path == "-" else os.path.getsize(path)
    rejects_file = open(rejects, "w") if rejects else None  # noqa: SIM115
    try:
        created = ensure_topic(bootstrap, topic, partitions=partitions, connect_timeout_s=connect_timeout_s, security=security)
        producer = make_producer(bootstrap, security=security)
        try:
            disable = None if progress is None else not progress
            with tqdm(total=total, unit="B", unit_scale=True, desc="produce", disable=disable, file=sys.stderr) as bar:
                summary = produce_lines(
                    source, producer=producer, topic=topic, validate=validate, rejects=rejects_file, on_line=bar.update
                )
        finally:
            producer.close()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        if rejects_file is not None:
            rejects_file.close()
    return FileProduced(summary, created)
