"""Voids and amends over HTTP without Kafka (jobs/ingest/amend.py): statuses, path ids, scoping, idempotency, the record."""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.test import Client

from jobs.ingest.amend import MAX_BODY_BYTES
from jobs.ingest.app import IngestApp, Limits
from jobs.ingest.client import ApiError, amend, event_path, void
from jobs.ingest.keys import KeyStore
from jobs.ingest.limits import Buckets
from schemas.amendments import MAX_REASON, is_amendment, judge
from schemas.validate import decode
from tests.unit.test_ingest import NOW, RULES, FakeSink

#: Event ids an event may have that a path cannot carry as they are.
AWKWARD_IDS = [
    "a/b",
    "/",
    "a//b",
    "/leading",
    "trailing/",
    "x/void",
    "x/amend",
    ".",
    "..",
    "../../healthz",
    " spaced id ",
    "ünïcødé ✓ 日本",
    "?q=1&r=2#frag",
    "100%",
    "%2F",
    "+plus+",
    "e" * 128,
]


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


def make(store: KeyStore, sink: FakeSink | None = None, clock: Any = lambda: NOW, **limits: int) -> tuple[Client, IngestApp]:
    app = IngestApp(
        sink=sink or FakeSink(), keys=store, rules=RULES, limits=Limits(**limits), buckets=Buckets(1000, 1000), clock=clock
    )
    return Client(app), app


def send(
    client: Client,
    key: str | None,
    event_id: str,
    action: str,
    body: Any,
    content_type: str = "application/json",
    **headers: str,
) -> Any:
    sent = {"Content-Type": content_type, **headers}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(event_path(event_id, action), data=data, headers=sent)


def written(app: IngestApp) -> list[tuple[bytes | None, dict[str, Any]]]:
    """The records the sink got, decoded (numbers exact)."""
    return [(key, decode(value)) for key, value in app.sink.sent]  # type: ignore[attr-defined]


def valid(line: bytes) -> Any:
    document = decode(line)
    assert is_amendment(document)
    reason, message, amendment = judge(document)
    assert reason is None, message
    return amendment


# --- accepted -----------------------------------------------------------------------------------


def test_a_void_is_written_keyed_by_customer_valid_by_the_jobs_definition(store: KeyStore) -> None:
    key, entry = store.create("billing ops")
    client, app = make(store)
    response = send(client, key, "evt-9", "void", {"customer_id": "acme", "reason": "test traffic"})
    assert response.status_code == 202, response.get_json()
    answer = response.get_json()
    assert answer["status"] == "accepted" and answer["action"] == "void"
    assert (answer["event_id"], answer["customer_id"]) == ("evt-9", "acme")
    assert answer["requested_by"] == f"key:{entry.id}" and answer["requested_at"] == "2026-03-01T12:30:00.000Z"
    assert re.fullmatch(r"amd_[0-9a-f]{32}", answer["amendment_id"])
    assert "unknown_event" in answer["note"] and "already_voided" in answer["note"]
    [(kafka_key, line)] = app.sink.sent  # type: ignore[attr-defined]
    assert kafka_key == b"acme"
    assert json.loads(line) == {
        "amendment": "void",
        "amendment_id": answer["amendment_id"],
        "customer_id": "acme",
        "event_id": "evt-9",
        "requested_at": "2026-03-01T12:30:00.000Z",
        "requested_by": f"key:{entry.id}",
        "reason": "test traffic",
    }
    amendment = valid(line)
    assert (amendment.action, amendment.requested_at, amendment.quantity) == ("void", NOW, None)


@pytest.mark.parametrize(
    ("quantity", "text"),
    [("7.5", "7.5"), (b"7.50", "7.50"), (b"3", "3"), ("-2.000000001", "-2.000000001"), (b"0", "0"), ("0.10", "0.10")],
)
def test_an_amend_carries_the_quantity_exactly_as_written(store: KeyStore, quantity: str | bytes, text: str) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    # A JSON number (bytes here) keeps its text: no float on the way.
    raw = quantity.decode() if isinstance(quantity, bytes) else json.dumps(quantity)
    body = '{"customer_id": "acme", "quantity": ' + raw + ', "reason": "meter misread"}'
    response = send(client, key, "evt-9", "amend", body)
    assert response.status_code == 202, response.get_json()
    [(kafka_key, line)] = app.sink.sent  # type: ignore[attr-defined]
    assert kafka_key == b"acme"
    assert f'"quantity":"{text}"'.encode() in line
    amendment = valid(line)
    assert (amendment.action, amendment.quantity_text, amendment.quantity) == ("amend", text, Decimal(text))


@pytest.mark.parametrize("event_id", AWKWARD_IDS)
def test_every_event_id_is_addressable_percent_encoded(store: KeyStore, event_id: str) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    for action, body in (("void", {"customer_id": "acme"}), ("amend", {"customer_id": "acme", "quantity": "2"})):
        response = send(client, key, event_id, action, body)
        assert response.status_code == 202, (event_id, response.get_json())
        assert response.get_json()["event_id"] == event_id
    assert [record["event_id"] for _, record in written(app)] == [event_id, event_id]
    assert [record["amendment"] for _, record in written(app)] == ["void", "amend"]


def test_slashes_may_also_be_sent_unencoded(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, _ = make(store)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({"customer_id": "acme"})
    assert client.post("/v1/events/a/b/void", data=body, headers=headers).get_json()["event_id"] == "a/b"
    assert client.post("/v1/events/x/void/void", data=body, headers=headers).get_json()["event_id"] == "x/void"
    assert client.post("/v1/events//void", data=body, headers=headers).status_code == 404  # no event id
    assert client.get("/v1/events/a/void").status_code == 405


def test_a_path_that_is_not_utf8_is_bad_event_id_and_a_control_character_too(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({"customer_id": "acme"})
    for path in ("/v1/events/%FF%FE/void", "/v1/events/a%0Ab/void", "/v1/events/" + "e" * 129 + "/void"):
        response = client.post(path, data=body, headers=headers)
        assert (response.status_code, response.get_json()["reason"]) == (422, "bad_event_id"), path
    assert app.sink.sent == []  # type: ignore[attr-defined]


# --- idempotency --------------------------------------------------------------------------------


def test_the_idempotency_key_is_the_amendment_id_and_a_retry_writes_the_same_amendment(store: KeyStore) -> None:
    key, _ = store.create("k")
    times = iter([NOW, NOW.replace(minute=31)])
    client, app = make(store, clock=lambda: next(times))
    body = {"customer_id": "acme", "quantity": "7.5", "reason": "r"}
    first = send(client, key, "evt-9", "amend", body, **{"Idempotency-Key": "fix-2026-03 ✓"})
    second = send(client, key, "evt-9", "amend", body, **{"Idempotency-Key": "fix-2026-03 ✓"})
    assert first.status_code == second.status_code == 202
    assert first.get_json()["amendment_id"] == second.get_json()["amendment_id"] == "fix-2026-03 ✓"
    (_, one), (_, two) = written(app)
    # The same amendment (the job's `repeated`: no effect the second time); only when it was asked differs.
    assert {k: v for k, v in one.items() if k != "requested_at"} == {k: v for k, v in two.items() if k != "requested_at"}
    assert (one["requested_at"], two["requested_at"]) == ("2026-03-01T12:30:00.000Z", "2026-03-01T12:31:00.000Z")


def test_without_an_idempotency_key_each_request_is_a_new_amendment(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, _ = make(store)
    ids = {send(client, key, "evt-9", "void", {"customer_id": "acme"}).get_json()["amendment_id"] for _ in range(3)}
    assert len(ids) == 3 and all(re.fullmatch(r"amd_[0-9a-f]{32}", i) for i in ids)


@pytest.mark.parametrize("header", ["", "x" * 129, "tab\there"])
def test_an_idempotency_key_outside_the_amendment_id_rule_is_422(store: KeyStore, header: str) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    response = send(client, key, "evt-9", "void", {"customer_id": "acme"}, **{"Idempotency-Key": header})
    assert response.status_code == 422
    assert response.get_json()["reason"] == "bad_amendment" and "Idempotency-Key" in response.get_json()["message"]
    assert app.sink.sent == []  # type: ignore[attr-defined]


# --- refusals -----------------------------------------------------------------------------------


def test_a_scoped_key_is_403_for_another_customer(store: KeyStore) -> None:
    key, _ = store.create("acme only", ["acme"])
    client, app = make(store)
    response = send(client, key, "evt-9", "void", {"customer_id": "globex"})
    assert response.status_code == 403
    assert response.get_json() == {
        "error": "customer_not_allowed",
        "status": "rejected",
        "reason": "customer_not_allowed",
        "message": "this API key does not send events for customer 'globex'",
    }
    assert send(client, key, "evt-9", "amend", {"customer_id": "globex", "quantity": "1"}).status_code == 403
    assert send(client, key, "evt-9", "void", {"customer_id": "acme"}).status_code == 202
    assert [k for k, _ in written(app)] == [b"acme"]


@pytest.mark.parametrize(
    ("action", "body", "reason"),
    [
        ("void", {}, "missing_field"),
        ("amend", {"customer_id": "acme"}, "missing_field"),
        ("void", {"customer_id": "acme", "quantity": "1"}, "unknown_field"),
        ("void", {"customer_id": "acme", "amendment_id": "mine"}, "unknown_field"),
        ("amend", {"customer_id": "acme", "quantity": "1", "requested_by": "me"}, "unknown_field"),
        ("void", {"customer_id": "acme", "event_id": "other"}, "unknown_field"),
        ("void", {"customer_id": "not a customer"}, "bad_customer_id"),
        ("void", {"customer_id": 7}, "bad_customer_id"),
        ("void", {"customer_id": "acme", "reason": "x" * (MAX_REASON + 1)}, "bad_amendment"),
        ("void", {"customer_id": "acme", "reason": 5}, "bad_amendment"),
        ("amend", {"customer_id": "acme", "quantity": "1e3"}, "bad_quantity"),
        ("amend", {"customer_id": "acme", "quantity": "abc"}, "bad_quantity"),
        ("amend", {"customer_id": "acme", "quantity": True}, "bad_quantity"),
        ("amend", {"customer_id": "acme", "quantity": None}, "bad_quantity"),
        ("amend", {"customer_id": "acme", "quantity": ["1"]}, "bad_quantity"),
        ("amend", {"customer_id": "acme", "quantity": "1." + "0" * 10}, "bad_quantity"),
    ],
)
def test_an_invalid_amendment_is_422_with_the_dead_letters_reason(store: KeyStore, action: str, body: Any, reason: str) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    response = send(client, key, "evt-9", action, body)
    assert response.status_code == 422, response.get_json()
    answer = response.get_json()
    assert (answer["status"], answer["reason"], answer["error"]) == ("rejected", reason, reason)
    assert answer["message"]
    assert app.sink.sent == []  # type: ignore[attr-defined]


def test_numbers_where_strings_belong_are_refused_not_turned_into_strings(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    for body, reason in (
        ('{"customer_id": 1.5}', "bad_customer_id"),
        ('{"customer_id": "acme", "reason": 1e3}', "bad_amendment"),
    ):
        response = send(client, key, "evt-9", "void", body)
        assert (response.status_code, response.get_json()["reason"]) == (422, reason), body
    amended = send(client, key, "evt-9", "amend", '{"customer_id": "acme", "quantity": 1e3}')
    assert (amended.status_code, amended.get_json()["reason"]) == (422, "bad_quantity")
    assert app.sink.sent == []  # type: ignore[attr-defined]


def test_each_refusal_status_in_the_order_of_post_v1_events(store: KeyStore) -> None:
    key, entry = store.create("k")
    client, app = make(store, max_body_bytes=1000)
    body = {"customer_id": "acme"}
    # 401: missing, unknown, revoked (before anything about the body).
    assert send(client, None, "e", "void", "garbage", "text/plain").status_code == 401
    response = send(client, "mik_nope", "e", "void", body)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    # 415: a type other than JSON (not even the event formats), an unknown encoding.
    for content_type in ("text/plain", "application/x-ndjson", "application/cloudevents+json"):
        assert send(client, key, "e", "void", body, content_type).status_code == 415
    assert send(client, key, "e", "void", body, **{"Content-Encoding": "br"}).status_code == 415
    # 413: bigger than the limit (the smaller of ingest.max_body_bytes and one record's), sent or once inflated.
    assert send(client, key, "e", "void", " " * 1001).status_code == 413
    assert send(client, key, "e", "void", gzip.compress(b" " * 2000), **{"Content-Encoding": "gzip"}).status_code == 413
    # 400: not JSON, not one object, bad gzip, empty.
    for bad in ("{", "[1]", '"acme"', "", '{"customer_id": "acme", "customer_id": "globex"}'):
        response = send(client, key, "e", "void", bad)
        assert (response.status_code, response.get_json()["error"]) == (400, "malformed_body"), bad
    assert send(client, key, "e", "void", b"\x1f\x8b nope", **{"Content-Encoding": "gzip"}).get_json()["error"] == "bad_gzip"
    gzipped = send(client, key, "e", "void", gzip.compress(json.dumps(body).encode()), **{"Content-Encoding": "gzip"})
    assert gzipped.status_code == 202
    assert app.sink.calls == 1  # type: ignore[attr-defined]
    store.revoke(entry.id)
    assert send(client, key, "e", "void", body).status_code == 401
    assert MAX_BODY_BYTES == 64 * 1024


def test_the_rate_limit_applies_before_the_body(store: KeyStore) -> None:
    key, _ = store.create("k")
    app = IngestApp(sink=FakeSink(), keys=store, rules=RULES, buckets=Buckets(0.5, 1, clock=lambda: 0.0), clock=lambda: NOW)
    client = Client(app)
    assert send(client, key, "e", "void", {"customer_id": "acme"}).status_code == 202
    limited = send(client, key, "e", "void", "garbage", "text/plain")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.get_json()["error"] == "rate_limited"


def test_kafka_unavailable_is_503_with_retry_after_and_the_amendment_id_to_retry_with(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, _ = make(store, sink=FakeSink(fail="the producer's queue is full"))
    response = send(client, key, "e", "amend", {"customer_id": "acme", "quantity": "1"}, **{"Idempotency-Key": "k-1"})
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    answer = response.get_json()
    assert answer["error"] == "unavailable" and answer["amendment_id"] == "k-1" and "Idempotency-Key: k-1" in answer["message"]
    generated = send(client, key, "e", "void", {"customer_id": "acme"}).get_json()["amendment_id"]
    assert generated.startswith("amd_")


def test_draining_is_503_before_the_key(store: KeyStore) -> None:
    client, app = make(store)
    app.draining.set()
    response = send(client, None, "e", "void", {"customer_id": "acme"})
    assert response.status_code == 503 and response.get_json()["error"] == "shutting_down" and response.headers["Retry-After"]


def test_amendments_share_the_in_flight_cap(store: KeyStore) -> None:
    release = threading.Event()

    class SlowSink(FakeSink):
        def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
            release.wait(10)
            return super().send(records)

    key, _ = store.create("k")
    client, app = make(store, sink=SlowSink(), max_in_flight=1)
    statuses: list[int] = []
    first = threading.Thread(target=lambda: statuses.append(send(client, key, "e", "void", {"customer_id": "acme"}).status_code))
    first.start()
    while app.metrics.in_flight == 0:
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)
    second = send(Client(app), key, "e", "void", {"customer_id": "acme"})
    assert second.status_code == 503 and second.get_json()["error"] == "overloaded"
    release.set()
    first.join(10)
    assert statuses == [202]


def test_metrics_and_the_log_line(store: KeyStore, caplog: pytest.LogCaptureFixture) -> None:
    key, entry = store.create("k", ["acme"])
    client, _ = make(store)
    with caplog.at_level(logging.INFO, logger="metering.ingest"):
        send(client, key, "e/1", "void", {"customer_id": "acme"}, **{"Idempotency-Key": "v-1"})
        send(client, key, "e", "amend", {"customer_id": "acme", "quantity": "x"})
        send(client, key, "e", "amend", {"customer_id": "globex", "quantity": "1"})
    text = client.get("/metrics").text
    assert 'metering_ingest_amendments_total{action="void",status="accepted",reason=""} 1' in text
    assert 'metering_ingest_amendments_total{action="amend",status="rejected",reason="bad_quantity"} 1' in text
    assert 'metering_ingest_amendments_total{action="amend",status="rejected",reason="customer_not_allowed"} 1' in text
    assert 'metering_ingest_requests_total{route="void",status="202"} 1' in text
    assert 'metering_ingest_requests_total{route="amend",status="422"} 1' in text
    assert 'metering_ingest_requests_total{route="amend",status="403"} 1' in text
    logged = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "request"]
    assert logged[0] | {"ms": 0} == {
        "method": "POST",
        "path": "/v1/events/e/1/void",
        "status": 202,
        "ms": 0,
        "key": entry.id,
        "action": "void",
        "amendment_id": "v-1",
        "verdict": "accepted",
    }
    assert (logged[1]["verdict"], logged[1]["reason"]) == ("rejected", "bad_quantity")


def test_events_still_refuses_amendment_records(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    line = {
        "amendment": "void",
        "amendment_id": "a",
        "customer_id": "acme",
        "event_id": "e",
        "requested_at": "2026-03-01T00:00:00Z",
    }
    response = client.post("/v1/events", json=line, headers={"Authorization": f"Bearer {key}"})
    [result] = response.get_json()["results"]
    assert result["reason"] == "amendment" and "/void" in result["message"]
    assert app.sink.sent == []  # type: ignore[attr-defined]


# --- the Python client --------------------------------------------------------------------------


class FlakySink(FakeSink):
    """Kafka away for the first ``failures`` sends."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts: list[bytes] = []

    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
        self.attempts += [value for _, value in records]
        if self.failures > 0:
            self.failures -= 1
            return ["Kafka away"] * len(records)
        return super().send(records)


@pytest.fixture
def served(store: KeyStore) -> Iterator[tuple[str, IngestApp]]:
    app = IngestApp(sink=FlakySink(1), keys=store, rules=RULES, buckets=Buckets(1000, 1000), clock=lambda: NOW)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", app
    finally:
        server.shutdown()
        thread.join(10)


def test_the_client_voids_and_amends_retrying_a_503_with_the_same_idempotency_key(
    served: tuple[str, IngestApp], store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobs.ingest.client.time.sleep", lambda s: None)
    url, app = served
    key, entry = store.create("client", ["acme"])
    receipt = void(url + "/", key, "a/b ü", "acme", reason="duplicate order")
    sink: FlakySink = app.sink  # type: ignore[assignment]
    first, second = (json.loads(v) for v in sink.attempts)
    assert first["amendment_id"] == second["amendment_id"] == receipt.amendment_id  # the retry is the same amendment
    assert (receipt.action, receipt.event_id, receipt.customer_id, receipt.requested_by) == (
        "void",
        "a/b ü",
        "acme",
        f"key:{entry.id}",
    )
    amended = amend(url, key, "..", "acme", Decimal("7.50"), reason="fix", idempotency_key="fix-1")
    assert (amended.amendment_id, amended.event_id) == ("fix-1", "..")
    assert json.loads(sink.sent[-1][1])["quantity"] == "7.50"
    with pytest.raises(ApiError) as caught:
        void(url, key, "e", "globex")
    assert (caught.value.status, caught.value.reason) == (403, "customer_not_allowed")
    with pytest.raises(ApiError) as caught:
        amend(url, key, "e", "acme", "1e3")
    assert (caught.value.status, caught.value.reason) == (422, "bad_quantity")
    with pytest.raises(TypeError):
        amend(url, key, "e", "acme", 1.5)  # type: ignore[arg-type]
    assert event_path(".", "void") == "/v1/events/%2E/void" and event_path("a/b", "amend") == "/v1/events/a%2Fb/amend"


def test_a_record_written_is_what_the_answer_says(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store)
    answer = send(client, key, "evt", "amend", {"customer_id": "acme", "quantity": "2.5"}).get_json()
    [(_, record)] = written(app)
    for name in ("amendment_id", "event_id", "customer_id", "requested_at", "requested_by"):
        assert record[name] == answer[name]
    assert record["amendment"] == answer["action"] and datetime.fromisoformat(record["requested_at"]) == NOW.astimezone(UTC)
