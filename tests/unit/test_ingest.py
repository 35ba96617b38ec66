"""The ingestion API without Kafka (jobs/ingest/): bodies, verdicts, keys, token buckets, statuses, OpenAPI."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from jobs.ingest.amend import openapi_path
from jobs.ingest.app import IngestApp, Limits, Rules
from jobs.ingest.bodies import API_REASONS, BodyError, decoded_body, from_cloudevent, media_format, split
from jobs.ingest.kafka import SinkHealth
from jobs.ingest.keys import KeyProblem, KeyStore, hash_key
from jobs.ingest.limits import Buckets, TokenBucket, retry_after
from jobs.ingest.openapi import document
from schemas.validate import REASONS, job_reason, validate_line
from tests.support.lines import one_line_per_reason, spec_example_lines

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
RULES = Rules(frozenset({"api_call"}), timedelta(minutes=5))
EVENT = {
    "event_id": "e1",
    "customer_id": "acme",
    "event_type": "api_call",
    "timestamp": "2026-03-01T12:00:00Z",
    "quantity": "1.50",
}


class FakeSink:
    """Records what it is given; ``fail`` makes every record undelivered (Kafka away)."""

    def __init__(self, fail: str | None = None) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.fail = fail
        self.calls = 0

    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
        self.calls += 1
        if self.fail:
            return [self.fail] * len(records)
        self.sent += records
        return [None] * len(records)

    def reachable(self, timeout_s: float = 2.0) -> str | None:
        return self.fail

    def queue_length(self) -> int:
        return 0

    def health(self) -> SinkHealth:
        return SinkHealth(kafka="reachable")


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


def make(store: KeyStore, sink: FakeSink | None = None, **limits: int) -> tuple[Client, IngestApp]:
    app = IngestApp(
        sink=sink or FakeSink(), keys=store, rules=RULES, limits=Limits(**limits), buckets=Buckets(1000, 1000), clock=lambda: NOW
    )
    return Client(app), app


def post(client: Client, key: str | None, body: bytes | str, content_type: str = "application/json", **headers: str) -> Any:
    sent = {"Content-Type": content_type, **headers}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return client.post("/v1/events", data=body, headers=sent)


# --- bodies -----------------------------------------------------------------------------------------


def test_each_format_gives_the_events_in_order_with_their_exact_bytes() -> None:
    one = b'{"quantity": 1.50, "event_id": "a"}'
    assert [i.line for i in split(b"  " + one + b"\n", "json", 10)] == [one]
    assert [i.line for i in split(b'[ {"a": 1.0} ,\n{"b":2}]', "json", 10)] == [b'{"a": 1.0}', b'{"b":2}']
    assert [i.line for i in split(b'{"a":1}\r\n\n  \n{"b"\n', "ndjson", 10)] == [b'{"a":1}', b'{"b"']
    # Elements that are no events are judged as events, not refused with the request.
    assert [i.line for i in split(b'[1, "x", {"a": NaN}]', "json", 10)] == [b"1", b'"x"', b'{"a": NaN}']


@pytest.mark.parametrize(
    ("body", "fmt", "code"),
    [
        (b"not json", "json", "malformed_body"),
        (b'[{"a": 1}', "json", "malformed_body"),
        (b'[{"a": 1}] x', "json", "malformed_body"),
        (b'{"a": 1} {"b": 2}', "json", "malformed_body"),
        (b"[]", "json", "no_events"),
        (b"\n \n", "ndjson", "no_events"),
        (b"\xff[]", "json", "malformed_body"),
        (b'{"specversion": "1.0"}', "cloudevents", "malformed_body"),
    ],
)
def test_a_body_that_is_not_what_its_type_says_is_400(body: bytes, fmt: str, code: str) -> None:
    with pytest.raises(BodyError) as caught:
        split(body, fmt, 10)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_too_many_events_is_413_in_every_format() -> None:
    for body, fmt in ((json.dumps([EVENT] * 4).encode(), "json"), (b"{}\n" * 4, "ndjson")):
        with pytest.raises(BodyError) as caught:
            split(body, fmt, 3)
        assert caught.value.status == 413
    assert len(split(b"{}\n" * 3, "ndjson", 3)) == 3


def test_content_types() -> None:
    assert media_format("application/json; charset=utf-8") == "json"
    assert media_format("Application/X-NDJSON") == "ndjson"
    assert media_format("application/cloudevents-batch+json") == "cloudevents"
    for bad in (None, "", "text/plain", "application/xml"):
        with pytest.raises(BodyError) as caught:
            media_format(bad)
        assert caught.value.status == 415


def test_gzip_bodies_bombs_and_bad_gzip() -> None:
    body = json.dumps([EVENT] * 5).encode()
    assert decoded_body(gzip.compress(body), "gzip", 10_000) == body
    assert decoded_body(gzip.compress(body[:10]) + gzip.compress(body[10:]), "gzip", 10_000) == body  # two members
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(BodyError) as caught:
        decoded_body(bomb, "gzip", 1_000_000)
    assert (caught.value.status, caught.value.code) == (413, "too_large")
    for bad in (b"not gzip", gzip.compress(body)[:-12]):
        with pytest.raises(BodyError) as caught:
            decoded_body(bad, "gzip", 10_000)
        assert (caught.value.status, caught.value.code) == (400, "bad_gzip")
    with pytest.raises(BodyError) as caught:
        decoded_body(body, "br", 10_000)
    assert caught.value.status == 415


def test_a_cloudevent_maps_to_the_usage_event_with_numbers_as_written() -> None:
    cloudevent = (
        b'{"specversion":"1.0","id":"c1","source":"/api","type":"api_call","subject":"acme",'
        b'"time":"2026-03-01T12:00:00Z","traceparent":"ignored","data":{"quantity":1.50,"properties":{"m":"x"},"region":"eu"}}'
    )
    item = from_cloudevent(cloudevent)
    assert item.line is not None
    assert json.loads(item.line) == {
        "event_id": "c1",
        "customer_id": "acme",
        "event_type": "api_call",
        "timestamp": "2026-03-01T12:00:00Z",
        "source": "/api",
        "quantity": 1.5,
        "properties": {"m": "x"},
        "region": "eu",
    }
    assert b'"quantity":1.50' in item.line
    assert validate_line(item.line).ok


@pytest.mark.parametrize(
    "cloudevent",
    [
        {"id": "c1", "source": "/a", "type": "api_call"},  # no specversion
        {"specversion": "0.3", "id": "c1", "source": "/a", "type": "api_call"},
        {"specversion": "1.0", "id": "c1", "source": "/a", "type": "api_call", "data": [1]},
        {"specversion": "1.0", "id": "c1", "source": "/a", "type": "api_call", "data_base64": "AA=="},
        {"specversion": "1.0", "id": "c1", "source": "/a", "type": "api_call", "datacontenttype": "text/plain"},
        {"specversion": "1.0", "id": "c1", "source": "/a", "type": "api_call", "data": {"event_id": "other"}},
        [1],
    ],
)
def test_what_is_no_cloudevent_is_bad_cloudevent(cloudevent: Any) -> None:
    assert from_cloudevent(json.dumps(cloudevent).encode()).reason == "bad_cloudevent"


# --- verdicts ---------------------------------------------------------------------------------------


def test_the_reason_lines_each_have_their_reason() -> None:
    lines = one_line_per_reason("api_call", NOW)
    assert set(lines) == set(REASONS)
    for reason, line in lines.items():
        assert job_reason(line, event_types={"api_call"}, received=NOW, future_skew=RULES.future_skew) == reason


def test_every_reason_code_through_the_api_in_request_order(store: KeyStore) -> None:
    key, _ = store.create("all")
    client, app = make(store)
    lines = list(one_line_per_reason("api_call", NOW).items())
    valid = json.dumps(EVENT).encode()
    body = b"\n".join([valid, *(line for _, line in lines)])
    response = post(client, key, body, "application/x-ndjson")
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["index"] for r in results] == list(range(len(lines) + 1))
    assert results[0] == {"index": 0, "status": "accepted"}
    assert [(r["status"], r["reason"]) for r in results[1:]] == [("rejected", reason) for reason, _ in lines]
    assert all(r["message"] for r in results[1:])
    assert app.sink.sent == [(b"acme", valid)]  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(spec_example_lines()), min_size=1, max_size=20))
def test_an_array_of_the_spec_examples_gets_the_jobs_verdicts(lines: list[bytes]) -> None:
    """Each element, as the array carries it, is judged as the job judges that line."""
    elements = [line for line in lines if _is_json(line)]  # a truncated one would break the array: a 400
    if not elements:
        return
    client = Client(IngestApp(sink=FakeSink(), keys=_AnyKey(), rules=RULES, clock=lambda: NOW))
    response = post(client, "k", b"[" + b",\n".join(elements) + b"]")
    assert response.status_code == 200
    expected = [job_reason(e, event_types={"api_call"}, received=NOW, future_skew=RULES.future_skew) for e in elements]
    assert [r.get("reason") for r in response.get_json()["results"]] == expected


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


class _AnyKey:
    def check(self, key: str | None) -> Any:
        from jobs.ingest.keys import ApiKey

        return ApiKey("any", "any", None, 0) if key else None


def test_a_scoped_key_cannot_send_for_another_customer(store: KeyStore) -> None:
    key, _ = store.create("acme only", ["acme"])
    client, app = make(store)
    response = post(client, key, json.dumps([EVENT, {**EVENT, "customer_id": "globex"}]))
    assert [r.get("reason") for r in response.get_json()["results"]] == [None, "customer_not_allowed"]
    assert len(app.sink.sent) == 1  # type: ignore[attr-defined]
    assert "customer_not_allowed" in API_REASONS


# --- statuses ---------------------------------------------------------------------------------------


def test_missing_unknown_and_revoked_keys_are_401_and_revocation_needs_no_restart(store: KeyStore) -> None:
    key, entry = store.create("k")
    client, _ = make(store)
    assert post(client, None, json.dumps(EVENT)).status_code == 401
    assert post(client, key[:-1] + ("A" if key[-1] != "A" else "B"), json.dumps(EVENT)).status_code == 401
    assert client.post("/v1/events", data="{}", headers={"Authorization": f"Basic {key}"}).status_code == 401
    assert post(client, key, json.dumps(EVENT)).status_code == 200
    assert KeyStore(store.folder).revoke(entry.id)  # another process: the CLI
    response = post(client, key, json.dumps(EVENT))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    later, _ = KeyStore(store.folder).create("later")  # created after the service started
    assert post(client, later, json.dumps(EVENT)).status_code == 200


def test_wrong_type_oversized_malformed_and_bad_gzip(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store, max_events=2, max_body_bytes=2000, max_decompressed_bytes=4000)
    event = json.dumps(EVENT)
    assert post(client, key, event, "text/plain").status_code == 415
    assert post(client, key, event, "application/json", **{"Content-Encoding": "br"}).status_code == 415
    assert post(client, key, "[" + ",".join([event] * 3) + "]").status_code == 413
    assert post(client, key, " " * 2001).status_code == 413
    assert post(client, key, gzip.compress(b" " * 5000), **{"Content-Encoding": "gzip"}).status_code == 413
    assert post(client, key, b"\x1f\x8b garbage", **{"Content-Encoding": "gzip"}).get_json()["error"] == "bad_gzip"
    assert post(client, key, "{").status_code == 400
    response = post(client, key, gzip.compress(event.encode()), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.get_json()["accepted"] == 1
    assert client.get("/v1/events").status_code == 405
    assert client.get("/nothing").status_code == 404
    assert app.sink.calls == 1  # type: ignore[attr-defined]


def test_the_rate_limit_is_per_key_with_retry_after(store: KeyStore) -> None:
    now = [0.0]
    first, _ = store.create("a")
    second, _ = store.create("b")
    app = IngestApp(sink=FakeSink(), keys=store, rules=RULES, buckets=Buckets(2, 3, clock=lambda: now[0]), clock=lambda: NOW)
    client = Client(app)
    assert [post(client, first, json.dumps(EVENT)).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = post(client, first, json.dumps(EVENT))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert post(client, second, json.dumps(EVENT)).status_code == 200  # its own bucket
    now[0] = 0.5  # one token back
    assert post(client, first, json.dumps(EVENT)).status_code == 200
    assert post(client, first, json.dumps(EVENT)).status_code == 429


def test_kafka_unavailable_is_503_with_retry_after_and_nothing_accepted(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store, sink=FakeSink(fail="the producer's queue is full"))
    response = post(client, key, json.dumps([EVENT, {**EVENT, "quantity": "x"}]))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == ["failed", "rejected"]
    assert (body["accepted"], body["failed"]) == (0, 1)
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    app.draining.set()
    ok_client, ok_app = make(store)
    ok_app.draining.set()
    assert post(ok_client, key, json.dumps(EVENT)).status_code == 503
    assert ok_client.get("/readyz").get_json()["status"] == "draining"


def test_metrics_count_requests_events_latency_and_queue(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, _ = make(store)
    post(client, key, json.dumps([EVENT, {**EVENT, "event_type": "x"}]))
    post(client, None, "{}")
    text = client.get("/metrics").text
    assert 'metering_ingest_requests_total{route="events",status="200"} 1' in text
    assert 'metering_ingest_requests_total{route="events",status="401"} 1' in text
    assert 'metering_ingest_events_total{verdict="accepted",reason=""} 1' in text
    assert 'metering_ingest_events_total{verdict="rejected",reason="unknown_meter"} 1' in text
    assert 'metering_ingest_request_seconds_bucket{route="events",le="+Inf"} 2' in text
    assert "metering_ingest_producer_queue 0" in text


# --- keys and buckets -------------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_scoped(store: KeyStore) -> None:
    key, entry = store.create("billing service", ["acme", "globex", "acme"])
    register = (store.folder / "keys.jsonl").read_text()
    assert key not in register and hash_key(key) in register
    assert (store.folder / "keys.jsonl").stat().st_mode & 0o777 == 0o600
    assert entry.customers == ("acme", "globex")
    checked = store.check(key)
    assert checked is not None and checked.may_send_for("acme") and not checked.may_send_for("initech")
    assert store.check("mik_" + "a" * 12 + "_" + "b" * 43) is None and store.check("x" * 5000) is None
    with pytest.raises(KeyProblem):
        store.create("x", ["not a customer"])
    with pytest.raises(KeyProblem):
        store.create("")
    assert not store.revoke("nope")
    assert [k.revoked for k in store.listed()] == [False]


def test_the_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(0.1)
    now[0] = 10.0  # refills to burst, never beyond
    assert [bucket.take() == 0 for _ in range(3)] == [True, True, False]
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=2), max_size=60), st.integers(1, 5), st.integers(1, 20))
def test_a_bucket_never_lets_more_than_burst_plus_rate_times_time(gaps: list[float], burst: int, rate: int) -> None:
    now = [0.0]
    bucket = TokenBucket(rate, burst, clock=lambda: now[0])
    granted = 0
    for gap in gaps:
        now[0] += gap
        granted += bucket.take() == 0
    assert granted <= burst + rate * now[0] + 1e-9


def test_buckets_are_thread_safe() -> None:
    buckets = Buckets(0.001, 100)
    granted: list[bool] = []

    def hammer() -> None:
        granted.extend(buckets.take("k") == 0 for _ in range(50))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 100


# --- OpenAPI ----------------------------------------------------------------------------------------


def test_the_openapi_document_matches_the_routes_and_their_statuses(store: KeyStore) -> None:
    key, _ = store.create("k")
    client, app = make(store, max_events=2)
    served = client.get("/openapi.json").get_json()
    assert served == json.loads(json.dumps(document()))
    assert served["openapi"].startswith("3.")
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.routes.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert routes == documented
    # Every status each route answers with is documented for it.
    seen: dict[tuple[str, str], set[int]] = {}

    def note(path: str, method: str, response: Any) -> None:
        seen.setdefault((path, method), set()).add(response.status_code)

    event = json.dumps(EVENT)
    for args in (
        (key, event),
        (None, event),
        (key, event, "text/plain"),
        (key, "[" + ",".join([event] * 3) + "]"),
        (key, "{"),
    ):
        note("/v1/events", "post", post(client, *args))
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        note(path, "get", client.get(path))
    limited = IngestApp(sink=FakeSink(fail="down"), keys=store, rules=RULES, buckets=Buckets(0.001, 1), clock=lambda: NOW)
    limited_client = Client(limited)
    note("/v1/events", "post", post(limited_client, key, event))  # 503
    note("/v1/events", "post", post(limited_client, key, event))  # 429
    note("/readyz", "get", limited_client.get("/readyz"))
    assert seen[("/v1/events", "post")] == {200, 400, 401, 413, 415, 429, 503}
    # Voids and amends (jobs/ingest/amend.py): every status of theirs.
    scoped, _ = store.create("acme only", ["acme"])
    for action, body in (("void", {"customer_id": "acme"}), ("amend", {"customer_id": "acme", "quantity": "1"})):
        path = f"/v1/events/{{event_id}}/{action}"
        url = f"/v1/events/a%2Fb/{action}"

        def amendment(client: Client, key: str | None, data: Any, content_type: str = "application/json", url: str = url) -> Any:
            headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
            return client.post(url, data=data if isinstance(data, str) else json.dumps(data), headers=headers)

        away = Client(
            IngestApp(sink=FakeSink(fail="down"), keys=store, rules=RULES, buckets=Buckets(0.001, 1), clock=lambda: NOW)
        )
        for response in (
            amendment(client, key, body),  # 202
            amendment(client, None, body),  # 401
            amendment(client, key, body, "text/plain"),  # 415
            amendment(client, key, " " * 70_000),  # 413
            amendment(client, key, "{"),  # 400
            amendment(client, key, {**body, "customer_id": "not a customer"}),  # 422
            amendment(client, scoped, {**body, "customer_id": "globex"}),  # 403
            amendment(away, key, body),  # 503 (Kafka away)
            amendment(away, key, body),  # 429
        ):
            note(path, "post", response)
        assert seen[(path, "post")] == {202, 400, 401, 403, 413, 415, 422, 429, 503}, action
    for (path, method), statuses in seen.items():
        assert {str(s) for s in statuses} <= set(served["paths"][path][method]["responses"]), (path, method)
    reasons = served["components"]["schemas"]["Result"]["properties"]["reason"]["enum"]
    assert set(reasons) == set(REASONS) | set(API_REASONS)


# --- configuration ----------------------------------------------------------------------------------


def test_the_ingest_section_is_read_checked_and_documented() -> None:
    from infra.settings import PROJECT_ROOT
    from jobs.config import ConfigError, IngestSettings, load_config

    example = PROJECT_ROOT / "config" / "metering.example.yaml"
    ingest = load_config(example, env={}).ingest
    defaults = IngestSettings()
    assert (ingest.host, ingest.port, ingest.max_events, ingest.rate, ingest.burst) == ("127.0.0.1", 8090, 1000, 50, 100)
    assert ingest.max_body_bytes == defaults.max_body_bytes and ingest.delivery_timeout == defaults.delivery_timeout
    assert ingest.keys == (PROJECT_ROOT / ".metering" / "ingest-keys").resolve()
    env = {
        "METERING__INGEST__PORT": "80",
        "METERING__INGEST__MAX_EVENTS": "5000",
        "METERING__INGEST__MAX_DECOMPRESSED_BYTES": "2048",
        "METERING__INGEST__DELIVERY_TIMEOUT": "1h",
        "METERING__INGEST__RATE": "fast",
        "METERING__INGEST__BRUST": "3",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(example, env=env)
    found = "\n".join(caught.value.problems)
    paths = ("ingest.port:", "ingest.max_events:", "ingest.max_decompressed_bytes:", "ingest.delivery_timeout:", "ingest.rate:")
    for path in paths:
        assert path in found, found
    assert "ingest.brust: unknown key; did you mean ingest.burst?" in found


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        [
            *spec_example_lines(),
            *one_line_per_reason("api_call", NOW).values(),
            b'{"heartbeat": true, "timestamp": "2026-03-01T12:00:00Z"}',
            b'{"heartbeat": true, "timestamp": "2026-03-09T12:00:00Z"}',
        ]
    ),
    st.sampled_from([frozenset({"api_call"}), frozenset({"tokens"}), frozenset()]),
    st.integers(-3 * 86_400, 3 * 86_400),
)
def test_job_verdict_is_job_reason(line: bytes, event_types: frozenset[str], shift_s: int) -> None:
    """The ingestion API's one-pass verdict (schemas.validate.job_verdict) is the reference's, whatever the meters and time."""
    from schemas.validate import job_verdict

    received = NOW + timedelta(seconds=shift_s)
    reason, _ = job_verdict(line, event_types=event_types, received=received, future_skew=RULES.future_skew)
    assert reason == job_reason(line, event_types=set(event_types), received=received, future_skew=RULES.future_skew)


def test_requests_beyond_max_in_flight_are_503_at_once(store: KeyStore) -> None:
    """While Kafka is slow every request holds a thread; beyond the cap the answer is an immediate 503."""
    release = threading.Event()

    class SlowSink(FakeSink):
        def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
            release.wait(10)
            return super().send(records)

    key, _ = store.create("k")
    client, app = make(store, sink=SlowSink(), max_in_flight=1)
    statuses: list[int] = []
    first = threading.Thread(target=lambda: statuses.append(post(client, key, json.dumps(EVENT)).status_code))
    first.start()
    while app.metrics.in_flight == 0:
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)
    second = post(Client(app), key, json.dumps(EVENT))
    assert second.status_code == 503 and second.get_json()["error"] == "overloaded" and second.headers["Retry-After"] == "1"
    release.set()
    first.join(10)
    assert statuses == [200]
    assert post(client, key, json.dumps(EVENT)).status_code == 200  # the slot is back


# --- the commands -----------------------------------------------------------------------------------


def test_serve_binds_beyond_loopback_only_with_public(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import EXIT_USAGE, main
    from jobs.cli.serve import binding_problem

    assert main(["serve", "--config", "config/metering.example.yaml", "--host", "0.0.0.0"]) == EXIT_USAGE
    assert "--public" in capsys.readouterr().err
    assert binding_problem("0.0.0.0", True) is None and binding_problem("127.0.0.1", False) is None
    assert binding_problem("::1", False) is None and binding_problem("10.0.0.5", False) is not None


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

    monkeypatch.setenv("METERING__INGEST__KEYS", str(tmp_path / "keys"))
    assert main(["keys", "create", "--name", "svc", "--customers", "acme,globex", "--customers", "initech"]) == EXIT_OK
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("mik_") and "shown once" in err and key not in err
    assert main(["keys", "create", "--name", "all", "--format", "json"]) == EXIT_OK
    created = json.loads(capsys.readouterr().out)
    assert created["customers"] is None and created["key"].startswith("mik_")
    assert main(["keys", "list", "--format", "json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [(k["name"], k["customers"], k["revoked"]) for k in listed] == [
        ("svc", ["acme", "globex", "initech"], False),
        ("all", None, False),
    ]
    assert key not in json.dumps(listed)
    assert main(["keys", "revoke", listed[0]["id"]]) == EXIT_OK
    assert main(["keys", "revoke", "no-such-id"]) == EXIT_FAILURE
    assert main(["keys", "create", "--name", "bad", "--customers", "a b"]) == EXIT_USAGE
    assert KeyStore(tmp_path / "keys").check(key) is None
    assert KeyStore(tmp_path / "keys").check(created["key"]) is not None


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.text(max_size=10), st.decimals(allow_nan=False, places=3)
)
_JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_JSON, min_size=1, max_size=10), st.sampled_from([None, 0, 2]))
def test_an_array_splits_into_its_elements_bytes(values: list[Any], indent: int | None) -> None:
    text = json.dumps(values, indent=indent, default=str, ensure_ascii=False)
    items = split(text.encode(), "json", 1000)
    assert [json.loads(i.line or b"") for i in items] == json.loads(text)
    lines = "\n".join(json.dumps(v, default=str) for v in values).encode()
    assert [json.loads(i.line or b"") for i in split(lines, "ndjson", 1000)] == json.loads(text)


def test_a_failed_producer_makes_healthz_503_with_its_reason_and_every_event_request_503(store: KeyStore) -> None:
    key, _ = store.create("k")

    class FailedSink(FakeSink):
        def health(self) -> SinkHealth:
            return SinkHealth(failure="the producer failed: KafkaError{FATAL,...}", kafka="reachable")

    client, _ = make(store, sink=FailedSink())
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"status": "failed", "reason": "the producer failed: KafkaError{FATAL,...}"}
    response = post(client, key, json.dumps(EVENT))
    assert response.status_code == 503 and response.get_json()["error"] == "producer_failed"
    assert int(response.headers["Retry-After"]) >= 1
    ok, _ = make(store)
    assert ok.get("/healthz").get_json() == {"status": "ok", "kafka": "reachable"}
    down = make(
        store,
        sink=type("Down", (FakeSink,), {"health": lambda self: SinkHealth(None, "unreachable", "1/1 brokers are down", 1.0)})(),
    )[0]
    assert down.get("/healthz").get_json() == {
        "status": "ok",
        "kafka": "unreachable",
        "kafka_problem": "1/1 brokers are down",
        "kafka_since": 1.0,
    }


def test_an_array_element_read_once_gets_the_verdict_of_its_line_read_alone() -> None:
    """Splitting a JSON array reads each element under the events' profile once (``decode_at``) and
    hands the value to the verdict; on the whole hostile corpus (tests/corpus) and the spec's
    examples, each element's verdict, reason and messages are those of ``validate_line`` on its bytes,
    as when the element came as a line of JSON lines."""
    from schemas.validate import NOT_DECODED, job_verdict
    from tests.corpus.generate import find_jsontestsuite, generate

    lines = [c.data for c in generate(jsontestsuite=find_jsontestsuite())] + spec_example_lines()
    judged = decoded = 0
    for line in lines:
        try:
            items = split(b"[" + line + b"]", "json", 1000)
        except BodyError:
            continue  # a body refused whole (not UTF-8, not JSON): no element to judge
        if len(items) != 1 or items[0].line != line.strip(b" \t\r\n"):
            continue  # a line that is itself several elements, or white space around it
        item = items[0]
        assert item.line is not None
        judged += 1
        decoded += item.decoded is not NOT_DECODED
        alone = job_verdict(item.line, event_types=RULES.event_types, received=NOW, future_skew=RULES.future_skew)
        once = job_verdict(
            item.line, event_types=RULES.event_types, received=NOW, future_skew=RULES.future_skew, decoded=item.decoded
        )
        assert once == alone, line[:200]
    assert judged > 5000 and 0 < decoded < judged


def test_reuse_port_lets_several_services_share_a_port_and_only_them(store: KeyStore) -> None:
    """``metering serve --reuse-port`` (SO_REUSEPORT): a second worker binds the first one's port; a
    service started without it cannot take the port, nor share it; a failed bind is the ``OSError`` that
    ``open_service`` and ``metering serve`` report (werkzeug alone would ``sys.exit(1)``)."""
    from jobs.ingest.server import Service

    _, app = make(store)
    first = Service(app, "127.0.0.1", 0, reuse_port=True)
    try:
        second = Service(app, "127.0.0.1", first.port, reuse_port=True)
        second.server.server_close()
        with pytest.raises(OSError, match="in use"):
            Service(app, "127.0.0.1", first.port)
    finally:
        first.server.server_close()
    alone = Service(app, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="in use"):
            Service(app, "127.0.0.1", alone.port, reuse_port=True)
    finally:
        alone.server.server_close()
