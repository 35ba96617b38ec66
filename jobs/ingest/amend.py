"""``POST /v1/events/{event_id}/void`` and ``/amend``: amendments over HTTP (docs/ingest.md, "Voids and amendments").

A request names the event by the path (percent-decoded: any event id is addressable) and its
customer by the body; the service adds who (``requested_by``: ``key:`` and the API key's id), when
(``requested_at``: the server's clock) and the amendment's id (the ``Idempotency-Key`` header, or a
new ``amd_`` + 128 random bits), builds the record as a dict, serialises it and judges the bytes it
will write with :func:`schemas.amendments.judge`, the definition the job applies. A valid one of a
customer the key may send for is written to the events topic keyed by ``customer_id`` (as events
are, so it follows its event in the same partition) and answered 202 once Kafka acknowledged it.

What then happens is the job's: it applies the amendment, or refuses it as a dead letter
(``unknown_event``, ``not_amendable``, ``already_voided``); an ``amendment_id`` it has already
processed for that event is a silent no-op, so a retry with the same ``Idempotency-Key`` is safe.

The checks run in the order of ``POST /v1/events``: shutting down (503), the API key (401), its
token bucket (429), the requests in flight (503), the content type (415), the body's size (413), its
form (400); then the amendment's own: a refused record is 422 with the dead letters' reason code,
a customer the key does not send for is 403 ``customer_not_allowed``; Kafka not acknowledging is
503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from werkzeug.routing import BaseConverter, Rule

from jobs.ingest.bodies import BodyError, decoded_body, media_format
from schemas.amendments import AMEND as AMEND
from schemas.amendments import BAD_AMENDMENT, is_amendment, judge
from schemas.amendments import VOID as VOID
from schemas.validate import MAX_EVENT_BYTES, decode, string_rule

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

    from jobs.ingest.app import IngestApp
    from jobs.ingest.keys import ApiKey

#: The routes' endpoints are the actions: ``void`` and ``amend``.
ACTIONS = (VOID, AMEND)
#: What a request body may hold, per action; the record's other members are the service's.
BODY_FIELDS = {VOID: ("customer_id", "reason"), AMEND: ("customer_id", "quantity", "reason")}
#: An amendment body is one small object: at most what the job takes as one record.
MAX_BODY_BYTES = MAX_EVENT_BYTES
#: The prefix of a generated amendment id.
ID_PREFIX = "amd_"
#: ``requested_by``: this prefix and the API key's id (``metering keys list`` names it).
REQUESTED_BY_PREFIX = "key:"
#: What a 202 means (also in the OpenAPI document).
NOTE = (
    "accepted: the amendment is in the events topic, keyed by its customer like the events (behind its event, when "
    "that was accepted first); the metering job decides its outcome: applied (to the open period, or as a "
    "correction of a final one), or a dead letter with "
    "reason unknown_event, not_amendable or already_voided. An amendment_id already processed for this event "
    "has no effect: retry with the same Idempotency-Key."
)


class EventIdConverter(BaseConverter):
    """The event id of a path: any text of one character or more, ``/`` included (the route's end decides)."""

    regex = r"[\s\S]+?"
    part_isolating = False


def rules() -> list[Rule]:
    """The two routes; ``merge_slashes`` off so an event id like ``a//b`` (or ``/``) reaches its route."""
    return [
        Rule(f"/v1/events/<event_id:event_id>/{action}", endpoint=action, methods=["POST"], merge_slashes=False)
        for action in ACTIONS
    ]


def openapi_path(rule: str) -> str:
    """A route's rule as an OpenAPI path template (``<event_id:event_id>`` -> ``{event_id}``)."""
    return rule.replace("<event_id:event_id>", "{event_id}")


def path_event_id(environ: Mapping[str, Any], action: str, routed: str) -> str | None:
    """The event id as the client percent-encoded it, from the raw request URI when the server gives one.

    PATH_INFO is already decoded (werkzeug replaces bytes that are not UTF-8); the raw URI (``RAW_URI``,
    ``REQUEST_URI``) is decoded here strictly: None when its percent-encoding is not UTF-8. Without a
    raw URI (or one that is not plain ASCII), the routed value.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw.isascii():
        return routed
    path = urlsplit(raw).path if "://" in raw.partition("?")[0] else raw.partition("?")[0]
    start = path.find("/v1/events/")
    suffix = f"/{action}"
    if start < 0 or not path.endswith(suffix) or len(path) <= start + len("/v1/events/") + len(suffix):
        return routed
    try:
        return unquote(path[start + len("/v1/events/") : -len(suffix)], errors="strict")
    except UnicodeDecodeError:
        return None


def new_amendment_id() -> str:
    return ID_PREFIX + secrets.token_hex(16)


def header_text(value: str | None) -> str | None:
    """A header's text: WSGI gives its bytes as latin-1 characters, read here as UTF-8 (None when not UTF-8)."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:  # already text beyond latin-1 (a WSGI server that decoded it)
        return value
    except UnicodeDecodeError:
        return None


def requested_by(key: ApiKey) -> str:
    return REQUESTED_BY_PREFIX + key.id


def rfc3339(when: datetime) -> str:
    """UTC, milliseconds, ``Z``: ``2026-03-02T08:00:00.123Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_record(
    action: str, event_id: str, body: Mapping[str, Any], amendment_id: str, who: str, when: datetime
) -> dict[str, Any]:
    """The amendment record of a request (members of the body only as given: an absent one is the judge's ``missing_field``).

    A quantity that is a JSON number is written as its text, a string (judged by the same rule);
    anything else is passed on for the judge to refuse.
    """
    record: dict[str, Any] = {"amendment": action, "amendment_id": amendment_id}
    if "customer_id" in body:
        record["customer_id"] = body["customer_id"]
    record["event_id"] = event_id
    if "quantity" in body:
        quantity = body["quantity"]
        text = getattr(quantity, "text", None)
        if isinstance(text, str):  # schemas.validate.JsonNumber
            quantity = text
        elif isinstance(quantity, int) and not isinstance(quantity, bool):
            quantity = str(quantity)
        record["quantity"] = quantity
    record["requested_at"] = rfc3339(when)
    record["requested_by"] = who
    if "reason" in body:
        record["reason"] = body["reason"]
    return record


def serialise(record: Mapping[str, Any]) -> bytes:
    """One JSON line, UTF-8, no float anywhere (numbers were made strings by :func:`build_record`)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_refuse).encode("utf-8")


def _refuse(value: Any) -> None:
    """A decoded JSON number where only a string is valid (``customer_id``, ``reason``, inside a list): null.

    Still no string, so the judge refuses the member as it would have refused the number; it is never written.
    """
    return None


def judged(line: bytes) -> tuple[str | None, str]:
    """(reason, message) of the bytes to be written, as the job will judge them: reason None when valid."""
    document = decode(line)
    if not is_amendment(document):  # cannot happen: build_record always sets the member
        return BAD_AMENDMENT, "not an amendment"
    reason, message, _ = judge(document)
    return reason, message


def handle(app: IngestApp, request: Request, key: ApiKey, fields: dict[str, Any], action: str) -> Response:
    """One void or amend request, once admitted through the gates of every write (``IngestApp.admit``)."""
    from jobs.ingest.app import UNAVAILABLE_RETRY_S, _json, _problem

    limit = min(MAX_BODY_BYTES, app.limits.max_body_bytes)
    try:
        if media_format(request.headers.get("Content-Type")) != "json":
            raise BodyError(415, "unsupported_media_type", "an amendment is one JSON object: Content-Type application/json")
        length = request.content_length
        if length is not None and length > limit:
            raise BodyError(413, "too_large", f"the body is {length} bytes; an amendment's is at most {limit}")
        raw = request.stream.read(limit + 1)
        if len(raw) > limit:
            raise BodyError(413, "too_large", f"the body is more than {limit} bytes; an amendment's is at most {limit}")
        body_bytes = decoded_body(raw, request.headers.get("Content-Encoding"), limit)
        try:
            body = decode(body_bytes)
        except (ValueError, UnicodeError) as exc:
            raise BodyError(400, "malformed_body", f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BodyError(400, "malformed_body", f"the body is one JSON object ({', '.join(BODY_FIELDS[action])})")
    except BodyError as exc:
        return _problem(exc.status, exc.code, str(exc))

    def rejected(status: int, reason: str, message: str) -> Response:
        fields.update(verdict="rejected", reason=reason)
        app.metrics.amendment(action, "rejected", reason)
        return _json(status, {"error": reason, "status": "rejected", "reason": reason, "message": message})

    _, values = app.routes.bind_to_environ(request.environ).match()
    event_id = path_event_id(request.environ, action, str(values["event_id"]))
    if event_id is None:
        return rejected(422, "bad_event_id", "the event id of the path is not percent-encoded UTF-8")
    header = request.headers.get("Idempotency-Key")
    amendment_id = header_text(header) if header is not None else new_amendment_id()
    if amendment_id is None or (header is not None and string_rule("event_id").problem(amendment_id) is not None):
        return rejected(
            422,
            BAD_AMENDMENT,
            "Idempotency-Key becomes the amendment_id, which follows an event id's rule: "
            "1-128 characters of UTF-8, no control character",
        )
    fields["amendment_id"] = amendment_id
    if unknown := [name for name in body if name not in BODY_FIELDS[action]]:
        return rejected(
            422,
            "unknown_field",
            f"a {action} request's body has no member {', '.join(map(repr, unknown))}: it takes "
            f"{', '.join(BODY_FIELDS[action])} (the event id is the path's, the amendment id the Idempotency-Key's)",
        )
    record = build_record(action, event_id, body, amendment_id, requested_by(key), app.clock())
    line = serialise(record)
    reason, message = judged(line)
    if reason is not None:
        return rejected(422, reason, message)
    customer = record["customer_id"]
    if not key.may_send_for(customer):
        return rejected(403, "customer_not_allowed", f"this API key does not send events for customer {customer!r}")
    failures = app.sink.send([(customer.encode("utf-8"), line)])
    if failures and failures[0] is not None:
        fields["verdict"] = "failed"
        app.metrics.amendment(action, "failed")
        answer = {
            "error": "unavailable",
            "message": f"Kafka did not acknowledge the amendment ({failures[0]}): send the request again with "
            f"Idempotency-Key: {amendment_id}",
            "amendment_id": amendment_id,
        }
        return _json(503, answer, {"Retry-After": str(UNAVAILABLE_RETRY_S)})
    fields["verdict"] = "accepted"
    app.metrics.amendment(action, "accepted")
    return _json(
        202,
        {
            "status": "accepted",
            "action": action,
            "amendment_id": amendment_id,
            "event_id": event_id,
            "customer_id": customer,
            "requested_at": record["requested_at"],
            "requested_by": record["requested_by"],
            "note": NOTE,
        },
    )
