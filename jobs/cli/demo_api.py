"""The demo's share through the HTTP ingestion API (`metering demo`, step 4): a key, the service, the requests.

The first few percent of the generated lines go through the HTTP ingestion API (``metering
serve`` in a thread of the demo, over loopback HTTP with an API key made for the run), in
batches, each answered after Kafka acknowledged its accepted events; the rest then go to Kafka
directly. So the topic holds the file's order (minus what the API rejected), which the
recomputation's watermark assumes. What the API rejected was never written: it is no dead
letter, and the recomputation skips those lines (the API's verdicts are checked against the
recomputation's judgement of the same lines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.ingest.client import Verdict

#: The share of the generated lines (the first ones) the demo sends through the HTTP API.
API_SHARE = 0.03
#: Lines per API request (at most ingest.max_events, 1,000).
API_BATCH = 500


@dataclass(frozen=True)
class ApiShare:
    """What the demo sent through the HTTP API, their verdicts, how long it took.

    ``lines``: the file's first lines, then a few client mistakes of the demo's own
    (jobs.demo.client_mistakes); ``file_lines`` gives each sent line's number in the file (None
    for a mistake, which is in no file).
    """

    lines: list[str]
    file_lines: list[int | None]
    verdicts: list[Verdict]  # one per line
    requests: int
    seconds: float
    url: str

    @property
    def rejected(self) -> dict[int, str]:
        """Sent line (index in ``lines``) -> reason, for the lines the API rejected (never written to Kafka)."""
        return {i: v.reason or "" for i, v in enumerate(self.verdicts) if v.status != "accepted"}

    @property
    def from_file(self) -> list[int]:
        """The file's line numbers that were sent (the mistakes excluded)."""
        return [n for n in self.file_lines if n is not None]

    @property
    def unwritten(self) -> frozenset[int]:
        """The file's lines (numbers) the API rejected: never written, so the recomputation skips them."""
        return frozenset(n for i in self.rejected if (n := self.file_lines[i]) is not None)

    def as_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for reason in self.rejected.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return {
            "lines": len(self.lines),
            "from_file": len(self.from_file),
            "requests": self.requests,
            "accepted": len(self.lines) - len(self.rejected),
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(sorted(reasons.items())),
            "seconds": round(self.seconds, 2),
        }


def split_workload(events_file: Path, first: int, rest_file: Path) -> list[str]:
    """The file's first ``first`` lines (returned), and the others copied to ``rest_file``."""
    import shutil

    with events_file.open("rb") as source:
        head = [source.readline().decode("utf-8").rstrip("\n") for _ in range(first)]
        with rest_file.open("wb") as rest:
            shutil.copyfileobj(source, rest, 1 << 20)
    return head


def send_through_api(config: Any, run_id: str, head: list[str], log_file: Path) -> ApiShare:
    """Create an API key for the run, serve the API in this process, POST ``head`` (and mistakes) in batches, revoke the key.

    Batches go one after another, each answered once Kafka acknowledged its accepted events, so the
    events topic receives them in the file's order. The key sends for the demo's customers only.
    The service's JSON logs (a line per request, librdkafka's messages) go to ``log_file``.
    """
    from jobs.demo import CUSTOMERS, client_mistakes
    from jobs.ingest.client import post_lines
    from jobs.ingest.keys import KeyStore
    from jobs.ingest.server import logging_to, serving
    from jobs.topics import ensure_topic
    from schemas.validate import validate_line

    first_valid = next((line for line in head if validate_line(line).ok), None)
    mistakes = list(client_mistakes(first_valid).values()) if first_valid is not None else []
    lines = head + mistakes
    file_lines: list[int | None] = [*range(len(head)), *([None] * len(mistakes))]
    kafka = config.kafka
    ensure_topic(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security)  # as `metering serve` does
    store = KeyStore(config.ingest.keys)
    key, entry = store.create(f"demo {run_id}", sorted(CUSTOMERS))
    started = time.monotonic()
    verdicts: list[Verdict] = []
    requests = 0
    try:
        with logging_to(log_file), serving(config) as service:
            url = f"http://127.0.0.1:{service.port}/v1/events"
            for start in range(0, len(lines), API_BATCH):
                verdicts += post_lines(url, key, lines[start : start + API_BATCH])
                requests += 1
    finally:
        store.revoke(entry.id)
    return ApiShare(lines, file_lines, verdicts, requests, time.monotonic() - started, url)
