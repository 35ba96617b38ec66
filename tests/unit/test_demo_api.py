"""The demo's share through the HTTP API, without Kafka: the client, the mistakes, the recomputation's skipped lines."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from jobs.cli.demo_api import ApiShare, split_workload
from jobs.config import Config, load_config
from jobs.demo import CUSTOMERS, MALFORMED, api_disagreements, client_mistakes, demo_document, generate, recompute
from jobs.ingest.client import ApiError, Verdict, post_lines
from jobs.ingest.kafka import SinkHealth
from jobs.ingest.keys import KeyStore
from jobs.ingest.limits import Buckets
from jobs.ingest.server import Service, create_app


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[str | None]:
        self.sent += [value for _, value in records]
        return [None] * len(records)

    def reachable(self, timeout_s: float = 2.0) -> str | None:
        return None

    def queue_length(self) -> int:
        return 0

    def health(self) -> SinkHealth:
        return SinkHealth(kafka="reachable")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    document = demo_document("t", "127.0.0.1:1", tmp_path / "chdb")
    document["ingest"] = {"keys": str(tmp_path / "keys")}
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={})


@pytest.fixture
def served(config: Config) -> Iterator[tuple[str, FakeSink]]:
    """The API as the demo serves it (the demo configuration's rules), writing to a fake sink."""
    sink = FakeSink()
    app = create_app(config, sink)
    app.buckets = Buckets(1, 1)  # one request a second: the second one waits out a 429
    service = Service(app, "127.0.0.1", 0)
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{service.port}/v1/events", sink
    finally:
        service.stop()
        thread.join(10)


def test_the_api_rejects_every_client_mistake_and_agrees_with_the_recomputation(
    config: Config, served: tuple[str, FakeSink], tmp_path: Path
) -> None:
    url, sink = served
    key, _ = KeyStore(config.ingest.keys).create("demo", sorted(CUSTOMERS))
    events = tmp_path / "events.jsonl"
    generate(events, 300)
    head = events.read_text().splitlines()[:40]
    mistakes = client_mistakes(head[0])
    assert set(mistakes) == {*MALFORMED, "customer_not_allowed"}
    lines = head + list(mistakes.values())
    verdicts = post_lines(url, key, lines[:30]) + post_lines(url, key, lines[30:])  # the second waits out a 429
    tail = verdicts[len(head) :]
    assert [(v.status, v.reason) for v in tail] == [("rejected", reason) for reason in mistakes]
    assert api_disagreements(lines, [(v.status, v.reason) for v in verdicts], config) == []
    assert [json.loads(b) for b in sink.sent] == [
        json.loads(head[i]) for i, v in enumerate(verdicts[: len(head)]) if v.status == "accepted"
    ]
    # A verdict the recomputation does not share is reported, with its line.
    flipped = [(v.status, v.reason) for v in verdicts]
    flipped[-1] = ("accepted", None)
    assert api_disagreements(lines, flipped, config) == [
        f"line {len(lines) - 1}: the API said accepted , the recomputation ['customer_not_allowed']"
    ]


def test_post_lines_raises_on_an_answer_it_cannot_count(served: tuple[str, FakeSink]) -> None:
    url, sink = served
    with pytest.raises(ApiError, match="401"):
        post_lines(url, "mik_nope", ['{"event_id": "x"}'])
    assert sink.sent == []


def test_post_lines_sends_gzip_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    seen: dict[str, object] = {}

    class Answer:
        status = 200

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def read(self) -> bytes:
            return json.dumps({"results": [{"status": "accepted"}, {"status": "rejected", "reason": "malformed_json"}]}).encode()

    def urlopen(request: urllib.request.Request, timeout: float) -> Answer:
        seen["headers"] = dict(request.header_items())
        seen["body"] = gzip.decompress(request.data)  # type: ignore[arg-type]
        return Answer()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert post_lines("http://x/v1/events", "k", ["{}", "{"]) == [Verdict("accepted"), Verdict("rejected", "malformed_json")]
    assert seen["body"] == b"{}\n{\n"
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-type"] == "application/x-ndjson" and headers["Content-encoding"] == "gzip"
    assert headers["Authorization"] == "Bearer k"


def _line(event_id: str, at: str, quantity: str = "1") -> str:
    return json.dumps(
        {"event_id": event_id, "customer_id": "acme", "event_type": "tokens", "timestamp": at, "quantity": quantity}
    )


def test_recompute_skips_unwritten_lines_no_dead_letter_no_watermark(config: Config, tmp_path: Path) -> None:
    """A line the API rejected never reached Kafka: not a dead letter, and its event time moves no watermark."""
    events = tmp_path / "events.jsonl"
    lines = [
        _line("a", "2026-04-05T00:00:00Z", quantity="1e9"),  # bad_quantity, but its timestamp would move the watermark
        _line("m1", "2026-03-31T12:00:00Z", "5"),  # March (acme: UTC, 48 h grace) is final at 2026-04-03T00:00Z
    ]
    events.write_text("\n".join(lines) + "\n")
    as_read = recompute(events, config)
    assert sum(as_read.dead_letters.values()) == 1 and sum(c for _, c in as_read.corrections.values()) == 1
    skipped = recompute(events, config, unwritten=frozenset({0}))
    assert sum(skipped.dead_letters.values()) == 0 and not skipped.corrections
    assert [count for _, count in skipped.finals.values()] == [1]


def test_split_workload_and_the_share_s_counts(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(f"line{i}\n" for i in range(10)))
    head = split_workload(events, 3, tmp_path / "rest.jsonl")
    assert head == ["line0", "line1", "line2"]
    assert (tmp_path / "rest.jsonl").read_text() == "".join(f"line{i}\n" for i in range(3, 10))
    share = ApiShare(
        lines=[*head, "mistake"],
        file_lines=[0, 1, 2, None],
        verdicts=[Verdict("accepted"), Verdict("rejected", "bad_quantity"), Verdict("accepted"), Verdict("rejected", "x")],
        requests=1,
        seconds=0.5,
        url="http://127.0.0.1:1/v1/events",
    )
    assert share.unwritten == frozenset({1})
    assert share.as_dict() == {
        "lines": 4,
        "from_file": 3,
        "requests": 1,
        "accepted": 2,
        "rejected": 2,
        "rejected_by_reason": {"bad_quantity": 1, "x": 1},
        "seconds": 0.5,
    }
