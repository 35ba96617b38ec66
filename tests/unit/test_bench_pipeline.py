"""The live-shaped backlog of the capacity benchmark (bench/pipeline.py) is what its figures claim."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bench.pipeline import live_shaped_lines
from schemas.validate import validate_line

END = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_backlog_holds_the_requested_distinct_events_and_about_ten_percent_retries() -> None:
    lines = list(live_shaped_lines(20_000, customers=50, nominal_rate=1000, end=END))
    events = [json.loads(line) for line in lines]
    distinct = {(e["customer_id"], e["event_id"]) for e in events}
    assert len(distinct) == 20_000
    assert 0.08 < (len(lines) - 20_000) / 20_000 < 0.12
    assert len({e["customer_id"] for e in events}) == 50
    # A retry repeats its original byte for byte: the job counts it as a plain duplicate.
    first_seen: dict[tuple[str, str], bytes] = {}
    for line, event in zip(lines, events, strict=True):
        assert first_seen.setdefault((event["customer_id"], event["event_id"]), line) == line


def test_backlog_is_valid_and_spread_at_the_nominal_rate_ending_at_end() -> None:
    lines = list(live_shaped_lines(5_000, customers=10, nominal_rate=500, end=END))
    assert all(validate_line(line).ok for line in lines)
    stamps = [datetime.fromisoformat(json.loads(line)["timestamp"]) for line in lines]
    assert max(stamps) <= END
    assert END - min(stamps) == pytest.approx(timedelta(seconds=10), abs=timedelta(milliseconds=2))
