"""The HTTP API of ``metering serve``: a WSGI application (werkzeug), docs/ingest.md.

``POST /v1/events`` goes, in order: the API key (401), its token bucket (429), the content type
and encoding (415), the body's size (413), its form (400), the number of events (413); then each
event is judged by the job's definition (``schemas.validate.job_reason``, the dead letters' reason
codes) and the key's customers (``customer_not_allowed``); the accepted ones are written to Kafka
and the answer waits for Kafka's acknowledgement of every one of them. If any was not
acknowledged (Kafka unreachable, the producer's queue full) the answer is 503 with
``Retry-After`` and the whole request may be sent again: the job drops the duplicates.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from jobs.ingest import amend
from jobs.ingest.bodies import BodyError, Item, decoded_body, media_format, split
from jobs.ingest.kafka import SinkHealth
from jobs.ingest.keys import ApiKey
from jobs.ingest.limits import Buckets, retry_after
from jobs.ingest.metrics import Metrics
from jobs.ingest.openapi import document
from jobs.produce import record_key
from schemas.amendments import VERDICT as AMENDMENT_VERDICT
from schemas.amendments import is_amendment
from schemas.amendments import judge as judge_amendment
from schemas.validate import Validation, decode, job_verdict

log = logging.getLogger("metering.ingest")
#: Retry-After of a 503 (Kafka unavailable, queue full, shutting down).
UNAVAILABLE_RETRY_S = 5


class Sink(Protocol):
    """Where accepted events go (jobs/ingest/kafka.py's KafkaSink; tests use fakes)."""

    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]: ...

    def reachable(self, timeout_s: float = 2.0) -> str | None: ...

    def queue_length(self) -> int: ...

    def health(self) -> SinkHealth: ...


class Keys(Protocol):
    def check(self, key: str | None) -> ApiKey | None: ...


@dataclass(frozen=True)
class Limits:
    max_events: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    max_decompressed_bytes: int = 16 * 1024 * 1024
    max_in_flight: int = 64


@dataclass(frozen=True)
class Rules:
    """What the job's judgement depends on: the meters' event types and the allowed future skew."""

    event_types: frozenset[str]
    future_skew: timedelta


def verdict(item: Item, key: ApiKey, rules: Rules, received: datetime) -> tuple[str | None, str, bytes | None]:
    """(reason, message, Kafka key) of one event: reason None when it may be written, with its record's
    key (``record_key`` of the validated event: no second parse of the line)."""
    if item.line is None:
        return item.reason or "malformed_json", item.message, None
    reason, validation = job_verdict(
        item.line, event_types=rules.event_types, received=received, future_skew=rules.future_skew, decoded=item.decoded
    )
    if reason == "heartbeat":
        return "heartbeat", "heartbeats are the loader's, not the API's: send usage events", None
    if reason == "unknown_meter":
        return reason, "no meter of the configuration reads this event_type", None
    if reason == "future_timestamp":
        return reason, f"the timestamp is more than {rules.future_skew} after the request was received", None
    if reason == AMENDMENT_VERDICT:
        return reason, "an amendment is not an event: send it to POST /v1/events/{event_id}/void or /amend", None
    if reason is not None or validation.event is None:
        return reason, _message(item.line, reason, validation), None
    customer = validation.event.customer_id
    if not key.may_send_for(customer):
        return "customer_not_allowed", f"this API key does not send events for customer {customer!r}", None
    return None, "", record_key(item.line, validation)


class IngestApp:
    """The WSGI application; ``draining`` set refuses new event requests (503) while in-flight ones finish."""

    def __init__(
        self,
        *,
        sink: Sink,
        keys: Keys,
        rules: Rules,
        limits: Limits = Limits(),
        buckets: Buckets | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.rules = rules
        self.limits = limits
        self.buckets = buckets or Buckets(50, 100)
        self.metrics = metrics or Metrics(sink.queue_length)
        self.clock = clock
        self.draining = threading.Event()
        self.routes = Map(
            [
                Rule("/v1/events", endpoint="events", methods=["POST"]),
                Rule("/healthz", endpoint="healthz", methods=["GET"]),
                Rule("/readyz", endpoint="readyz", methods=["GET"]),
                Rule("/metrics", endpoint="metrics", methods=["GET"]),
                Rule("/openapi.json", endpoint="openapi", methods=["GET"]),
            ]
        )
        # POST /v1/events/{event_id}/void and /amend (jobs/ingest/amend.py).
        self.routes.converters["event_id"] = amend.EventIdConverter
        for rule in amend.rules():
            self.routes.add(rule)
        self._in_flight_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_in_flight)

    # --- WSGI -----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        started = time.monotonic()
        with self._in_flight_lock:
            self.metrics.in_flight += 1
        route = "unknown"
        fields: dict[str, Any] = {}
        try:
            try:
                endpoint, _ = self.routes.bind_to_environ(environ).match()
                route = str(endpoint)
                response = getattr(self, f"on_{endpoint}")(request, fields)
            except (NotFound, MethodNotAllowed) as exc:
                response = _problem(
                    exc.code or 404, "not_found" if exc.code == 404 else "method_not_allowed", exc.description or ""
                )
                if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
                    response.headers["Allow"] = ", ".join(exc.valid_methods)
            except HTTPException as exc:  # werkzeug's own, e.g. a body it cannot read
                response = _problem(exc.code or 400, "bad_request", exc.description or "")
            except Exception:
                log.exception("request failed")
                response = _problem(500, "internal_error", "the service failed on this request; it is logged")
        finally:
            with self._in_flight_lock:
                self.metrics.in_flight -= 1
        seconds = time.monotonic() - started
        self.metrics.request(route, response.status_code, seconds)
        log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 2),
                    **fields,
                }
            },
        )
        answer: Iterable[bytes] = response(environ, start_response)
        return answer

    # --- routes ---------------------------------------------------------------------------------

    def on_healthz(self, request: Request, fields: dict[str, Any]) -> Response:
        """Liveness: 503 once the sink can never write again (a restart is the cure); 200 otherwise, with
        Kafka as last seen (an outage of Kafka is readiness's, ``/readyz``: a restart would not help)."""
        health = self.sink.health()
        if health.failure is not None:
            return _json(503, {"status": "failed", "reason": health.failure})
        body: dict[str, Any] = {"status": "ok", "kafka": health.kafka}
        if health.problem is not None:
            body |= {"kafka_problem": health.problem, "kafka_since": health.since}
        return _json(200, body)

    def on_readyz(self, request: Request, fields: dict[str, Any]) -> Response:
        if self.draining.is_set():
            return _json(503, {"status": "draining"}, {"Retry-After": str(UNAVAILABLE_RETRY_S)})
        problem = self.sink.reachable()
        if problem is not None:
            return _json(503, {"status": "unavailable", "reason": problem}, {"Retry-After": str(UNAVAILABLE_RETRY_S)})
        return _json(200, {"status": "ready"})

    def on_metrics(self, request: Request, fields: dict[str, Any]) -> Response:
        return Response(self.metrics.render(), 200, content_type="text/plain; version=0.0.4; charset=utf-8")

    def on_openapi(self, request: Request, fields: dict[str, Any]) -> Response:
        return _json(200, document())

    def on_events(self, request: Request, fields: dict[str, Any]) -> Response:
        return self.admit(request, fields, self._events)

    def on_void(self, request: Request, fields: dict[str, Any]) -> Response:
        fields["action"] = amend.VOID
        return self.admit(request, fields, lambda r, key, f: amend.handle(self, r, key, f, amend.VOID))

    def on_amend(self, request: Request, fields: dict[str, Any]) -> Response:
        fields["action"] = amend.AMEND
        return self.admit(request, fields, lambda r, key, f: amend.handle(self, r, key, f, amend.AMEND))

    def admit(
        self, request: Request, fields: dict[str, Any], handler: Callable[[Request, ApiKey, dict[str, Any]], Response]
    ) -> Response:
        """The gates every write passes, in order, before ``handler`` runs: draining, the producer, the key, its rate, a slot."""
        if self.draining.is_set():
            return _problem(503, "shutting_down", "the service is shutting down: retry", UNAVAILABLE_RETRY_S)
        if (failure := self.sink.health().failure) is not None:
            return _problem(503, "producer_failed", f"{failure}: the service must be restarted", UNAVAILABLE_RETRY_S)
        key = self.keys.check(_bearer(request.headers.get("Authorization")))
        if key is None:
            response = _problem(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metering"'
            return response
        fields["key"] = key.id
        wait = self.buckets.take(key.id)
        if wait > 0:
            return _problem(429, "rate_limited", f"this key's rate limit is exceeded: retry in {wait:.2f} s", retry_after(wait))
        if not self._slots.acquire(blocking=False):
            return _problem(503, "overloaded", f"{self.limits.max_in_flight} requests are being handled: retry", 1)
        try:
            return handler(request, key, fields)
        finally:
            self._slots.release()

    def _events(self, request: Request, key: ApiKey, fields: dict[str, Any]) -> Response:
        try:
            fmt = media_format(request.headers.get("Content-Type"))
            length = request.content_length
            if length is not None and length > self.limits.max_body_bytes:
                raise BodyError(413, "too_large", f"the body is {length} bytes; at most {self.limits.max_body_bytes}")
            raw = request.stream.read(self.limits.max_body_bytes + 1)
            if len(raw) > self.limits.max_body_bytes:
                raise BodyError(413, "too_large", f"the body is more than {self.limits.max_body_bytes} bytes")
            body = decoded_body(raw, request.headers.get("Content-Encoding"), self.limits.max_decompressed_bytes)
            items = split(body, fmt, self.limits.max_events)
        except BodyError as exc:
            return _problem(exc.status, exc.code, str(exc))
        received = self.clock()
        verdicts = [verdict(item, key, self.rules, received) for item in items]
        to_send = [(i, items[i].line, kafka_key) for i, (reason, _, kafka_key) in enumerate(verdicts) if reason is None]
        records = [(kafka_key, line) for _, line, kafka_key in to_send if line is not None]
        failures = self.sink.send(records) if records else []
        failed = {index: error for (index, _, _), error in zip(to_send, failures, strict=True) if error is not None}
        results: list[dict[str, Any]] = []
        counts: Counter[tuple[str, str]] = Counter()  # the metric's, added once per request
        for index, (reason, message, _) in enumerate(verdicts):
            if reason is not None:
                results.append({"index": index, "status": "rejected", "reason": reason, "message": message})
                counts["rejected", reason] += 1
            elif index in failed:
                results.append({"index": index, "status": "failed", "message": failed[index]})
                counts["failed", ""] += 1
            else:
                results.append({"index": index, "status": "accepted"})
                counts["accepted", ""] += 1
        for (outcome, reason), count in counts.items():
            self.metrics.event(outcome, reason, count)
        accepted = counts["accepted", ""]
        summary = {"accepted": accepted, "rejected": len(results) - accepted - len(failed), "failed": len(failed)}
        fields |= {"events": len(items), **summary}
        if failed:
            first = next(iter(failed.values()))
            body_out = {
                "error": "unavailable",
                "message": f"Kafka did not acknowledge {len(failed)} event(s) ({first}): send the request again",
                **summary,
                "results": results,
            }
            return _json(503, body_out, {"Retry-After": str(UNAVAILABLE_RETRY_S)})
        return _json(200, {**summary, "results": results})


def _message(line: bytes, reason: str | None, validation: Validation) -> str:
    """Why the line was refused: its problems of that reason, or an amendment's own message."""
    message = "; ".join(str(p) for p in validation.problems if p.reason == reason)
    if message or reason in (None, "too_large", "malformed_json", "not_an_object"):
        return message
    document = decode(line)
    return judge_amendment(document)[1] if is_amendment(document) else message


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status, headers=headers, content_type="application/json")


def _problem(status: int, code: str, message: str, retry: int | str | None = None) -> Response:
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return _json(status, {"error": code, "message": message}, headers)
