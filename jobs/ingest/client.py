"""A small client of ``POST /v1/events`` (the demo's): JSON lines, gzip, the verdict of every line.

A 429 (the key's token bucket) is waited out for its ``Retry-After`` and sent again: nothing of
it was judged or written. Any other answer but 200 raises :class:`ApiError`: a 503 may have
written part of the request, and a caller that counts exactly (the demo) must not guess.

:func:`void` and :func:`amend` send an amendment (``POST /v1/events/{event_id}/void|amend``,
docs/ingest.md "Voids and amendments") with an ``Idempotency-Key`` (the caller's, or one made
here), so their own retries of a 429 or a 503 are safe: the job ignores an amendment id it has
already processed for the event. A 202 is a :class:`Receipt`; a refusal raises :class:`ApiError`
with the status and the reason code.
"""

from __future__ import annotations

import gzip
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote


class ApiError(RuntimeError):
    """The API answered something other than 200 (or 429, waited out); ``status`` and ``reason`` when known."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Verdict:
    """One line's verdict: ``accepted`` or ``rejected`` (with the reason code)."""

    status: str
    reason: str | None = None


def post_lines(url: str, key: str, lines: Sequence[str], *, timeout_s: float = 60.0, max_waits: int = 20) -> list[Verdict]:
    """Send ``lines`` (one JSON event each, as written) as one gzip JSON-lines request; their verdicts in order."""
    body = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), compresslevel=1)
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "gzip",
    }
    for _ in range(max_waits + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                document: dict[str, Any] = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", errors="replace")
            if exc.code == 429:
                time.sleep(float(exc.headers.get("Retry-After") or 1))
                continue
            raise ApiError(f"POST {url}: {exc.code} {text[:300]}") from exc
        results = document["results"]
        if len(results) != len(lines):
            raise ApiError(f"POST {url}: {len(results)} verdicts for {len(lines)} lines")
        return [Verdict(r["status"], r.get("reason")) for r in results]
    raise ApiError(f"POST {url}: still rate limited after {max_waits} waits")


@dataclass(frozen=True)
class Receipt:
    """A 202: the amendment is in Kafka; the job decides its outcome (dead letters name a refusal)."""

    action: str
    amendment_id: str
    event_id: str
    customer_id: str
    requested_at: str
    requested_by: str


def event_path(event_id: str, action: str) -> str:
    """``/v1/events/{event_id}/{action}``, the id percent-encoded as one segment (``.`` and ``..`` too: no dot segment)."""
    segment = quote(event_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/v1/events/{segment}/{action}"


def void(
    url: str,
    key: str,
    event_id: str,
    customer_id: str,
    *,
    reason: str | None = None,
    idempotency_key: str | None = None,
    timeout_s: float = 30.0,
    max_waits: int = 20,
) -> Receipt:
    """Void ``event_id`` of ``customer_id`` through the service at ``url`` (its base URL, e.g. http://127.0.0.1:8090)."""
    body: dict[str, Any] = {"customer_id": customer_id}
    if reason is not None:
        body["reason"] = reason
    return _amendment(url, key, event_id, "void", body, idempotency_key, timeout_s, max_waits)


def amend(
    url: str,
    key: str,
    event_id: str,
    customer_id: str,
    quantity: str | Decimal | int,
    *,
    reason: str | None = None,
    idempotency_key: str | None = None,
    timeout_s: float = 30.0,
    max_waits: int = 20,
) -> Receipt:
    """Set the quantity of ``event_id`` of ``customer_id`` to ``quantity`` (exact: a decimal string, Decimal or int)."""
    if isinstance(quantity, bool) or not isinstance(quantity, str | Decimal | int):
        raise TypeError(f"quantity must be a decimal string, a Decimal or an int, not {type(quantity).__name__}")
    body: dict[str, Any] = {"customer_id": customer_id, "quantity": str(quantity)}
    if reason is not None:
        body["reason"] = reason
    return _amendment(url, key, event_id, "amend", body, idempotency_key, timeout_s, max_waits)


def _amendment(
    url: str,
    key: str,
    event_id: str,
    action: str,
    body: dict[str, Any],
    idempotency_key: str | None,
    timeout_s: float,
    max_waits: int,
) -> Receipt:
    """POST one amendment; 429 and 503 are waited out and sent again with the same Idempotency-Key."""
    target = url.rstrip("/") + event_path(event_id, action)
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key or "amd_" + secrets.token_hex(16),
    }
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    for _ in range(max_waits + 1):
        request = urllib.request.Request(target, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                document: dict[str, Any] = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", errors="replace")
            if exc.code in (429, 503):
                time.sleep(float(exc.headers.get("Retry-After") or 1))
                continue
            try:
                problem = json.loads(text)
            except ValueError:
                problem = {}
            reason = problem.get("reason") or problem.get("error") if isinstance(problem, dict) else None
            raise ApiError(f"POST {target}: {exc.code} {text[:300]}", exc.code, reason) from exc
        return Receipt(
            action=document["action"],
            amendment_id=document["amendment_id"],
            event_id=document["event_id"],
            customer_id=document["customer_id"],
            requested_at=document["requested_at"],
            requested_by=document["requested_by"],
        )
    raise ApiError(f"POST {target}: still rate limited or unavailable after {max_waits} waits", 503)
