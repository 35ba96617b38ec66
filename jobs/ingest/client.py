"""A small client of ``POST /v1/events`` (the demo's): JSON lines, gzip, the verdict of every line.

A 429 (the key's token bucket) is waited out for its ``Retry-After`` and sent again: nothing of
it was judged or written. Any other answer but 200 raises :class:`ApiError`: a 503 may have
written part of the request, and a caller that counts exactly (the demo) must not guess.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class ApiError(RuntimeError):
    """The API answered something other than 200 (or 429, waited out)."""


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
