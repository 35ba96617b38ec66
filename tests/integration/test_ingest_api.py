"""The ingestion API (``metering serve``) over real HTTP into a real broker.

The spare KRaft broker (tests/integration/conftest.py's ``spare_broker``) that the tests may stop
and start again; the service runs in this process (jobs/ingest/server.py, as ``metering serve``
builds it) on a free port, or as the ``metering serve`` command itself for the graceful stop.
What reaches the topic is read back with the loader's consumer.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.kafka import KafkaBroker
from infra.settings import LOOPBACK, PROJECT_ROOT
from jobs.config import Config, load_config
from jobs.ingest.kafka import KafkaSink
from jobs.ingest.keys import KeyStore
from jobs.ingest.server import Service, create_app
from jobs.loader.kafka_consumer import CONSUMER_SETTINGS, ConfluentConsumer, Record
from jobs.topics import ensure_topic
from tests.support.lines import one_line_per_reason


@pytest.fixture
def config(spare_broker: KafkaBroker, tmp_path: Path) -> Config:
    path = tmp_path / "metering.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": spare_broker.settings.bootstrap_servers,
                    "topics": {"events": f"ingest-{uuid.uuid4().hex[:10]}"},
                },
                "ingest": {"keys": str(tmp_path / "keys"), "delivery_timeout": "3s", "rate": 1000, "burst": 1000},
                "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
            }
        )
    )
    return load_config(path, env={})


@dataclass
class Running:
    config: Config
    service: Service
    sink: KafkaSink
    keys: KeyStore

    @property
    def port(self) -> int:
        return self.service.port

    def post(
        self, key: str | None, body: bytes, content_type: str = "application/json", **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        return request(self.port, "POST", "/v1/events", body, {"Content-Type": content_type, **_auth(key), **headers})


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        content_type = response.getheader("Content-Type", "")
        parsed = json.loads(data) if content_type.startswith("application/json") else data.decode()
        return response.status, dict(response.getheaders()), parsed
    finally:
        connection.close()


@pytest.fixture
def running(config: Config) -> Iterator[Running]:
    kafka = config.kafka
    ensure_topic(kafka.bootstrap_servers, kafka.topics.events, partitions=2, security=kafka.security)
    sink = KafkaSink(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security, delivery_timeout_s=3)
    keys = KeyStore(config.ingest.keys)
    service = Service(create_app(config, sink, keys), LOOPBACK, 0)
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    try:
        yield Running(config, service, sink, keys)
    finally:
        service.stop()
        thread.join(30)
        sink.close(10)


def read_topic(config: Config, expected: int, timeout_s: float = 30) -> list[Record]:
    """Every record of the events topic: at least ``expected`` of them, and then until caught up."""
    settings = {
        **CONSUMER_SETTINGS,
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "group.id": f"ingest-{uuid.uuid4().hex[:8]}",
    }
    consumer = ConfluentConsumer([config.kafka.topics.events], settings)
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            polled = consumer.consume(1000, 0.3)
            records += polled
            if not polled and len(records) >= expected and consumer.caught_up():
                return records
        raise AssertionError(f"{len(records)} records after {timeout_s} s, expected {expected}")
    finally:
        consumer.close()


def event_id_of(record: Record) -> str:
    assert record.value is not None
    event_id: str = json.loads(record.value)["event_id"]
    return event_id


def event(event_id: str, customer: str = "acme", quantity: str = "1.50") -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "event_type": "api_call",
            "timestamp": "2026-03-01T12:00:00Z",
            "quantity": quantity,
        }
    ).encode()


def test_every_reason_code_and_the_accepted_events_in_the_topic_exactly_once(running: Running) -> None:
    key, _ = running.keys.create("everything")
    reasons = one_line_per_reason("api_call", datetime.now(UTC))
    valid = [event(f"ok-{n}", customer) for n, customer in enumerate(("acme", "globex", "initech"))]
    lines = [valid[0], *reasons.values(), valid[1], valid[2]]
    status, _, body = running.post(key, b"\n".join(lines), "application/x-ndjson")
    assert status == 200, body
    verdicts = [(r["status"], r.get("reason")) for r in body["results"]]
    assert verdicts == [("accepted", None), *(("rejected", reason) for reason in reasons), ("accepted", None), ("accepted", None)]
    assert (body["accepted"], body["rejected"], body["failed"]) == (3, len(reasons), 0)
    # Accepted means acknowledged: the records are there already, each once, keyed by customer, as sent.
    records = read_topic(running.config, 3)
    assert sorted((r.key, r.value) for r in records) == sorted((json.loads(v)["customer_id"].encode(), v) for v in valid)
    # A JSON array and CloudEvents take the same path.
    cloudevents = [
        {
            "specversion": "1.0",
            "id": "ce-1",
            "source": "/svc",
            "type": "api_call",
            "subject": "acme",
            "time": "2026-03-01T12:00:00Z",
            "data": {"quantity": "2"},
        },
        {"specversion": "1.0", "id": "ce-2", "source": "/svc", "type": "api_call", "subject": "acme", "data": {"quantity": "2"}},
    ]
    status, _, body = running.post(key, json.dumps(cloudevents).encode(), "application/cloudevents-batch+json")
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [("accepted", None), ("rejected", "missing_field")]
    status, _, body = running.post(key, b"[" + event("arr-1") + b"," + event("arr-2") + b"]")
    assert body["accepted"] == 2
    ids = [event_id_of(r) for r in read_topic(running.config, 6)]
    assert sorted(ids) == ["arr-1", "arr-2", "ce-1", "ok-0", "ok-1", "ok-2"]


def test_a_scoped_key_cannot_send_for_another_customer(running: Running) -> None:
    key, _ = running.keys.create("acme app", ["acme"])
    status, _, body = running.post(key, b"[" + event("s-1") + b"," + event("s-2", "globex") + b"]")
    assert status == 200
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [("accepted", None), ("rejected", "customer_not_allowed")]
    assert [event_id_of(r) for r in read_topic(running.config, 1)] == ["s-1"]


def test_keys_the_rate_limit_and_refused_requests(config: Config) -> None:
    limited = replace(
        config, ingest=replace(config.ingest, rate=1, burst=2, max_events=3, max_body_bytes=4096, max_decompressed_bytes=8192)
    )
    kafka = config.kafka
    ensure_topic(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security)
    sink = KafkaSink(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security, delivery_timeout_s=3)
    keys = KeyStore(config.ingest.keys)
    service = Service(create_app(limited, sink, keys), LOOPBACK, 0)
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    try:
        run = Running(limited, service, sink, keys)
        key, entry = keys.create("limited")
        assert run.post(None, event("x"))[0] == 401
        assert run.post("mik_nope", event("x"))[0] == 401
        statuses = [run.post(key, event(f"r-{n}"))[0] for n in range(3)]
        assert statuses[:2] == [200, 200] and statuses[2] == 429
        status, headers, body = run.post(key, event("r-3"))
        assert status == 429 and int(headers["Retry-After"]) >= 1 and body["error"] == "rate_limited"

        # Refused requests (each of a key of its own: its own bucket): wrong type, too many, too large, malformed, bad gzip.
        def fresh() -> str:
            return keys.create("another")[0]

        assert run.post(fresh(), event("x"), "text/plain")[0] == 415
        assert run.post(fresh(), b"[" + b",".join([event("x")] * 4) + b"]")[0] == 413
        assert run.post(fresh(), b" " * 5000)[0] == 413
        assert run.post(fresh(), b"[" + event("x"))[0] == 400
        assert run.post(fresh(), b"\x1f\x8b\x08 not gzip", **{"Content-Encoding": "gzip"})[2]["error"] == "bad_gzip"
        assert run.post(fresh(), gzip.compress(b" " * 10_000), **{"Content-Encoding": "gzip"})[0] == 413
        status, _, body = run.post(fresh(), gzip.compress(event("gz-1")), **{"Content-Encoding": "gzip"})
        assert (status, body["accepted"]) == (200, 1)
        # Revoked without a restart.
        assert keys.revoke(entry.id)
        assert run.post(key, event("r-4"))[0] == 401  # before its bucket: a revoked key is no key
        metrics = request(run.port, "GET", "/metrics")[2]
        assert 'metering_ingest_requests_total{route="events",status="429"}' in metrics
        assert "metering_ingest_producer_queue 0" in metrics
        ids = sorted(event_id_of(r) for r in read_topic(config, 3))
        assert ids == ["gz-1", "r-0", "r-1"]
    finally:
        service.stop()
        thread.join(30)
        sink.close(10)


def test_a_request_while_the_broker_is_away_is_503_and_its_retry_counts_once(running: Running, spare_broker: KafkaBroker) -> None:
    key, _ = running.keys.create("retrying client")
    batch = b"\n".join(event(f"b-{n}", ("acme", "globex")[n % 2]) for n in range(20))
    status, _, body = running.post(key, batch, "application/x-ndjson")
    assert status == 200 and body["accepted"] == 20
    assert request(running.port, "GET", "/readyz")[0] == 200
    spare_broker.stop()
    try:
        second = b"\n".join(event(f"c-{n}") for n in range(20))
        status, headers, body = running.post(key, second, "application/x-ndjson")
        assert status == 503, body
        assert int(headers["Retry-After"]) >= 1 and body["accepted"] == 0 and body["failed"] == 20
        assert request(running.port, "GET", "/readyz")[0] == 503
        assert request(running.port, "GET", "/healthz")[0] == 200
    finally:
        spare_broker.start()
    # The client retries both requests (it cannot tell which one failed): every event at least once.
    deadline = time.monotonic() + 60
    while True:
        status, _, body = running.post(key, second, "application/x-ndjson")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200 and body["accepted"] == 20
    assert running.post(key, batch, "application/x-ndjson")[0] == 200
    records = read_topic(running.config, 60)
    seen = [(r.key, event_id_of(r)) for r in records]
    expected = {(c.encode(), f"b-{n}") for n, c in ((n, ("acme", "globex")[n % 2]) for n in range(20))}
    expected |= {(b"acme", f"c-{n}") for n in range(20)}
    assert set(seen) == expected  # every event, nothing else
    # Duplicates are the job's to drop: keyed by (customer, event_id), each counts once.
    assert len({(customer, event_id) for customer, event_id in seen}) == 40 and len(seen) >= 60


def test_metering_serve_drains_a_request_in_flight_on_sigterm(config: Config, tmp_path: Path) -> None:
    """The command itself: a client still sending its body when SIGTERM comes gets its verdicts, then it exits 0."""
    path = tmp_path / "serve.yaml"
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    document = {
        "kafka": {"bootstrap_servers": config.kafka.bootstrap_servers, "topics": {"events": config.kafka.topics.events}},
        "ingest": {"keys": str(config.ingest.keys), "port": port},
        "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
    }
    path.write_text(yaml.safe_dump(document))
    key, _ = KeyStore(config.ingest.keys).create("drain")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "serve", "--config", str(path)],
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # ready: the process answers /readyz
            try:
                if request(port, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "metering serve did not become ready"
            time.sleep(0.2)
        body = b"\n".join(event(f"d-{n}") for n in range(10))
        with socket.create_connection((LOOPBACK, port), timeout=30) as client:
            head = (
                f"POST /v1/events HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            client.sendall(head.encode() + body[:20])
            time.sleep(0.5)  # the request is in flight
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            client.sendall(body[20:])
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert b" 200 " in status_line, answer
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["accepted"] == 10
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    logs = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")] if process.stderr else []
    messages = [entry["message"] for entry in logs]
    assert "listening" in messages and "stopping" in messages and messages[-1] == "stopped"
    assert any(entry.get("path") == "/v1/events" and entry.get("status") == 200 and entry.get("accepted") == 10 for entry in logs)
    assert sorted(event_id_of(r) for r in read_topic(config, 10)) == sorted(f"d-{n}" for n in range(10))


def test_serving_in_process_as_the_demo_does_writes_the_accepted_lines_in_request_order(config: Config) -> None:
    """jobs.ingest.server.serving + jobs.ingest.client.post_lines (the demo's share): ready, verdicts, a clean stop."""
    from jobs.ingest.client import post_lines
    from jobs.ingest.server import serving

    kafka = config.kafka
    ensure_topic(kafka.bootstrap_servers, kafka.topics.events, partitions=1, security=kafka.security)
    key, _ = KeyStore(config.ingest.keys).create("demo", ["acme"])
    lines = [
        json.dumps(
            {
                "event_id": f"d{i}",
                "customer_id": "acme",
                "event_type": "api_call",
                "timestamp": "2026-03-01T12:00:00Z",
                "quantity": "1",
            }
        )
        for i in range(5)
    ]
    sent = [*lines[:2], "{not json", lines[2], lines[2], json.dumps({**json.loads(lines[3]), "customer_id": "globex"}), lines[4]]
    with serving(config) as service:
        url = f"http://{LOOPBACK}:{service.port}/v1/events"
        verdicts = post_lines(url, key, sent[:4]) + post_lines(url, key, sent[4:])
    assert [(v.status, v.reason) for v in verdicts] == [
        ("accepted", None),
        ("accepted", None),
        ("rejected", "malformed_json"),
        ("accepted", None),
        ("accepted", None),  # a duplicate is the job's to drop
        ("rejected", "customer_not_allowed"),
        ("accepted", None),
    ]
    with pytest.raises(OSError):  # stopped: the port is closed
        request(service.port, "GET", "/healthz")
    records = read_topic(config, 5)
    assert [(r.value or b"").decode() for r in records] == [lines[0], lines[1], lines[2], lines[2], lines[4]]


def test_voids_and_amends_reach_the_topic_after_their_events_in_the_same_partition(running: Running) -> None:
    """POST an event, void it and amend another through the HTTP API: the exact records, each after its event."""
    from urllib.parse import quote

    from schemas.amendments import judge
    from schemas.validate import decode

    key, entry = running.keys.create("billing ops", ["acme", "globex"])
    voided, amended, other = "order/42 ü", "..", "g-1"  # ids a path cannot carry as they are
    lines = [event(voided), event(amended, quantity="3"), event(other, "globex", quantity="2")]
    status, _, body = running.post(key, b"\n".join(lines), "application/x-ndjson")
    assert (status, body["accepted"]) == (200, 3), body

    def send(event_id: str, action: str, payload: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], Any]:
        segment = quote(event_id, safe="").replace(".", "%2E")
        return request(
            running.port,
            "POST",
            f"/v1/events/{segment}/{action}",
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **_auth(key), **headers},
        )

    status, _, void_answer = send(voided, "void", {"customer_id": "acme", "reason": "duplicate order"})
    assert status == 202, void_answer
    status, _, amend_answer = send(
        amended, "amend", {"customer_id": "acme", "quantity": "7.50", "reason": "meter misread"}, **{"Idempotency-Key": "fix-1"}
    )
    assert status == 202, amend_answer
    status, _, repeat = send(amended, "amend", {"customer_id": "acme", "quantity": "7.50"}, **{"Idempotency-Key": "fix-1"})
    assert (status, repeat["amendment_id"]) == (202, "fix-1")  # the job's `repeated`: no second effect
    status, _, refused = send(other, "void", {"customer_id": "initech"})
    assert (status, refused["reason"]) == (403, "customer_not_allowed")

    records = read_topic(running.config, 6)
    assert len(records) == 6
    documents = [decode(r.value or b"") for r in records]
    amendments = [(r, d) for r, d in zip(records, documents, strict=True) if "amendment" in d]
    assert [r.key for r, _ in amendments] == [b"acme"] * 3
    void_record, amend_record, repeat_record = (d for _, d in amendments)
    assert void_record == {
        "amendment": "void",
        "amendment_id": void_answer["amendment_id"],
        "customer_id": "acme",
        "event_id": voided,
        "requested_at": void_answer["requested_at"],
        "requested_by": f"key:{entry.id}",
        "reason": "duplicate order",
    }
    assert amend_record == {
        "amendment": "amend",
        "amendment_id": "fix-1",
        "customer_id": "acme",
        "event_id": amended,
        "quantity": "7.50",
        "requested_at": amend_answer["requested_at"],
        "requested_by": f"key:{entry.id}",
        "reason": "meter misread",
    }
    assert {k: v for k, v in repeat_record.items() if k not in ("requested_at", "reason")} == {
        k: v for k, v in amend_record.items() if k not in ("requested_at", "reason")
    }
    for document in (void_record, amend_record, repeat_record):
        assert judge(document)[0] is None
    # Each amendment is in its event's partition, after it (the same customer key; the event was accepted first).
    position = {
        (r.key, d.get("event_id")): (r.partition, r.offset)
        for r, d in zip(records, documents, strict=True)
        if "amendment" not in d
    }
    for record, document in amendments:
        partition, offset = position[(record.key, document["event_id"])]
        assert record.partition == partition and record.offset > offset, document
    # The request order within the partition: event, event, void, amend, amend again.
    acme = sorted(
        (r.offset, d.get("amendment"), d["event_id"]) for r, d in zip(records, documents, strict=True) if r.key == b"acme"
    )
    assert [(a, e) for _, a, e in acme] == [
        (None, voided),
        (None, amended),
        ("void", voided),
        ("amend", amended),
        ("amend", amended),
    ]
    metrics = request(running.port, "GET", "/metrics")[2]
    assert 'metering_ingest_amendments_total{action="amend",status="accepted",reason=""} 2' in metrics
    assert 'metering_ingest_amendments_total{action="void",status="rejected",reason="customer_not_allowed"} 1' in metrics


def test_concurrent_clients_lose_nothing_when_the_broker_is_killed_mid_request(
    running: Running, spare_broker: KafkaBroker
) -> None:
    """The broker process is SIGKILLed while several clients' requests are in flight, then restarted.

    Each client sends its batches in turn and retries every request that did not get a full
    accepted verdict (a 503, or a dropped connection) with the same event ids, as docs/ingest.md
    tells clients to. Afterwards: every event ever answered ``accepted`` is in the topic, and by
    (customer_id, event_id) the topic holds exactly the events sent (duplicates of one id are the
    job's to drop). While the broker is away ``/readyz`` is 503 and ``/healthz`` names the outage
    (still 200: a restart of the service would not bring the broker back); both recover after.
    """
    key, _ = running.keys.create("killed broker")
    clients, batches, size = 4, 12, 50
    customers = ("acme", "globex", "initech")

    def batch_lines(client: int, batch: int) -> list[tuple[str, str, bytes]]:
        out = []
        for n in range(size):
            customer = customers[(client + n) % len(customers)]
            event_id = f"k{client}-{batch}-{n}"
            out.append((customer, event_id, event(event_id, customer)))
        return out

    lock = threading.Lock()
    accepted: set[tuple[str, str]] = set()
    outcomes: list[str] = []  # per attempt: "200", "503", or the connection error
    sent_batches = [0]
    errors: list[str] = []
    stop_at = time.monotonic() + 180

    def client(number: int) -> None:
        for batch in range(batches):
            lines = batch_lines(number, batch)
            body = b"\n".join(line for _, _, line in lines)
            while True:
                assert time.monotonic() < stop_at, f"client {number} gave up on batch {batch}"
                try:
                    status, _, answer = running.post(key, body, "application/x-ndjson")
                except OSError as exc:
                    with lock:
                        outcomes.append(type(exc).__name__)
                    time.sleep(0.2)
                    continue
                if status in (200, 503) and isinstance(answer, dict) and "results" in answer:
                    got = {(lines[r["index"]][0], lines[r["index"]][1]) for r in answer["results"] if r["status"] == "accepted"}
                    rejected = [r for r in answer["results"] if r["status"] == "rejected"]
                    with lock:
                        accepted.update(got)
                        outcomes.append(str(status))
                        if rejected:
                            errors.append(f"rejected: {rejected[:2]}")
                else:
                    with lock:
                        outcomes.append(str(status))
                if status == 200 and answer["accepted"] == size:
                    break
                time.sleep(0.5)  # Retry-After says 5 s; a shorter wait keeps the test short and is as correct
            with lock:
                sent_batches[0] += 1

    def run(number: int) -> None:
        try:
            client(number)
        except BaseException as exc:  # reported by the main thread
            with lock:
                errors.append(f"client {number}: {exc!r}")

    threads = [threading.Thread(target=run, args=(n,), name=f"client-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    try:
        # Kill once some batches are through and requests are in flight (waiting for Kafka).
        deadline = time.monotonic() + 60
        while not (sent_batches[0] >= clients and running.service.app.metrics.in_flight > 0):
            assert time.monotonic() < deadline, "the clients did not get going"
            time.sleep(0.005)
        in_flight = running.service.app.metrics.in_flight
        spare_broker.process.kill()
        killed_after = sent_batches[0]
        # The outage, as the probes show it: readiness refused, health names it.
        deadline = time.monotonic() + 20
        while True:
            ready = request(running.port, "GET", "/readyz")
            health = request(running.port, "GET", "/healthz")
            if ready[0] == 503 and health[2].get("kafka") != "reachable":
                break
            assert time.monotonic() < deadline, (ready, health)
            time.sleep(0.2)
        assert ready[2]["status"] == "unavailable" and ready[2]["reason"]
        assert health[0] == 200 and health[2]["status"] == "ok", health
        time.sleep(4)  # longer than the delivery timeout (3 s): the requests in flight get their 503
    finally:
        spare_broker.start()
    for thread in threads:
        thread.join(200)
    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads)
    assert in_flight > 0 and killed_after < clients * batches
    assert "503" in outcomes, outcomes  # some requests did meet the outage
    deadline = time.monotonic() + 30
    while (ready := request(running.port, "GET", "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, ready
        time.sleep(0.5)
    health = request(running.port, "GET", "/healthz")
    assert health[0] == 200 and health[2] == {"status": "ok", "kafka": "reachable"}, health

    sent = {(customer, event_id) for c in range(clients) for b in range(batches) for customer, event_id, _ in batch_lines(c, b)}
    records = read_topic(running.config, len(sent), timeout_s=60)
    in_topic = [((r.key or b"").decode(), event_id_of(r)) for r in records]
    assert accepted <= set(in_topic), f"{len(accepted - set(in_topic))} accepted events missing"
    assert set(in_topic) == sent, (len(set(in_topic) - sent), len(sent - set(in_topic)))
    assert len(in_topic) >= len(sent)


def test_a_fatal_producer_error_turns_health_red_and_every_request_503(running: Running) -> None:
    """A fatal (non-retriable) producer error: ``/healthz`` 503 with the reason, events 503 ``producer_failed``.

    librdkafka's fatal errors (an idempotent producer's broken sequence after a broker lost
    acknowledged records, a fenced producer) cannot be caused on demand with one loopback broker,
    and confluent-kafka exposes no way to raise one: the error is injected at the narrowest seam,
    the error callback librdkafka calls (``KafkaSink._error``), with the ``KafkaError`` it would
    pass (``fatal=True``). The sink, its producer, the broker, the service and HTTP are real.
    """
    from confluent_kafka import KafkaError

    key, _ = running.keys.create("fatal")
    assert running.post(key, event("f-1"))[0] == 200
    assert request(running.port, "GET", "/healthz")[:1] == (200,)
    fatal = KafkaError(
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "Fatal idempotent producer error: lost acknowledged records", fatal=True
    )
    running.sink._error(fatal)
    status, _, health = request(running.port, "GET", "/healthz")
    assert status == 503 and health["status"] == "failed", health
    assert "the producer failed" in health["reason"] and "OUT_OF_ORDER_SEQUENCE_NUMBER" in health["reason"]
    status, _, ready = request(running.port, "GET", "/readyz")
    assert status == 503 and "the producer failed" in ready["reason"]
    status, headers, body = running.post(key, event("f-2"))
    assert status == 503 and body["error"] == "producer_failed" and int(headers["Retry-After"]) >= 1, body
    assert "OUT_OF_ORDER_SEQUENCE_NUMBER" in body["message"]
    for action, payload in (("void", {}), ("amend", {"quantity": "2"})):  # every write passes the same gates
        status, _, body = request(
            running.port,
            "POST",
            f"/v1/events/f-1/{action}",
            json.dumps({"customer_id": "acme", "reason": "test", **payload}).encode(),
            {"Content-Type": "application/json", **_auth(key)},
        )
        assert status == 503 and body["error"] == "producer_failed", (action, body)
    assert [event_id_of(r) for r in read_topic(running.config, 1)] == ["f-1"]


def test_a_closed_producer_turns_health_red_and_every_request_503(running: Running) -> None:
    """The real sink closed under a running service (its producer flushed, its delivery poller stopped)."""
    key, _ = running.keys.create("closed")
    assert running.post(key, event("z-1"))[0] == 200
    running.sink.close(5)
    status, _, health = request(running.port, "GET", "/healthz")
    assert (status, health) == (503, {"status": "failed", "reason": "the producer is closed"})
    started = time.monotonic()
    status, _, body = running.post(key, event("z-2"))
    assert status == 503 and body["error"] == "producer_failed", body
    assert time.monotonic() - started < 2  # at once, not after the delivery timeout
    assert [event_id_of(r) for r in read_topic(running.config, 1)] == ["z-1"]


def test_the_api_and_metering_produce_put_a_customer_in_the_same_partition(running: Running) -> None:
    """Every writer of the events topic partitions by the customer key the same way (Java's murmur2).

    A void sent through the API follows its event only when both are in one partition, whichever
    writer sent the event; so do a customer's duplicates, whose first copy is the one counted.
    """
    from jobs.produce import make_producer, produce_lines

    kafka = running.config.kafka
    customers = [f"c{n}" for n in range(24)]
    key, _ = running.keys.create("partitions", customers)
    lines = [event(f"api-{c}", c) for c in customers]
    status, _, body = running.post(key, b"\n".join(lines), "application/x-ndjson")
    assert (status, body["accepted"]) == (200, len(customers)), body
    producer = make_producer(kafka.bootstrap_servers)
    try:
        produce_lines([event(f"produce-{c}", c) for c in customers], producer=producer, topic=kafka.topics.events)
    finally:
        producer.close()
    records = read_topic(running.config, 2 * len(customers))
    partitions: dict[str, set[int]] = {}
    for record in records:
        assert record.key is not None
        partitions.setdefault(record.key.decode(), set()).add(record.partition)
    split = sorted(c for c, found in partitions.items() if len(found) > 1)
    assert not split, f"customers whose records the two writers put in different partitions: {split}"
