"""Heartbeat records: their shape, the rule that tells them from events, and the loader skipping them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.loader.heartbeat import HeartbeatSender, heartbeat_record, is_heartbeat
from schemas.validate import parse_timestamp, raw_event_row, validate_line


def record(value: bytes) -> SimpleNamespace:
    return SimpleNamespace(value=value, topic="usage-events", partition=0, offset=7, timestamp=1_800_000_000_000)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)))
def test_the_timestamp_is_the_instant_to_the_millisecond(at: datetime) -> None:
    document = json.loads(heartbeat_record(at))
    assert set(document) == {"heartbeat", "timestamp"} and document["heartbeat"] is True
    parsed = parse_timestamp(document["timestamp"])  # the producer schema's RFC 3339 rules
    assert parsed == at.replace(microsecond=at.microsecond // 1000 * 1000)
    assert document["timestamp"].endswith("Z")


def test_an_offset_instant_is_written_in_utc() -> None:
    at = datetime(2026, 3, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert json.loads(heartbeat_record(at))["timestamp"] == "2026-03-01T12:00:00.000Z"


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        heartbeat_record(datetime(2026, 3, 1))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"heartbeat": True, "timestamp": "2026-03-01T00:00:00Z"}, True),
        ({"heartbeat": "true"}, True),  # the job reads the scalar's text, as JSON_VALUE does
        ({"heartbeat": False, "timestamp": "2026-03-01T00:00:00Z"}, False),
        ({"heartbeat": 1}, False),
        ({"timestamp": "2026-03-01T00:00:00Z"}, False),
        # An event id makes it an event, whatever else it carries: no event is swallowed as a heartbeat.
        ({"heartbeat": True, "event_id": "e-1", "customer_id": "c", "event_type": "api_call"}, False),
    ],
)
def test_what_counts_as_a_heartbeat(document: dict[str, object], expected: bool) -> None:
    assert is_heartbeat(document) is expected


def test_a_heartbeat_is_not_a_valid_event_for_producers() -> None:
    """`metering produce` refuses it: heartbeats come from `metering heartbeat` or the loader."""
    assert not validate_line(heartbeat_record(datetime(2026, 3, 1, tzinfo=UTC))).ok


def test_heartbeats_get_no_raw_events_row() -> None:
    """The job writes raw rows by this reference (tests/unit/test_event_agreement.py holds it to it)."""

    def raw_row(line: bytes) -> dict[str, object] | None:
        return raw_event_row(line, "usage-events", 0, 7, 0)

    assert raw_row(heartbeat_record(datetime(2026, 3, 1, tzinfo=UTC))) is None
    event = {
        "heartbeat": True,  # an unknown field on an event: an event, which the job refuses (unknown_field)
        "event_id": "e-1",
        "customer_id": "acme",
        "event_type": "api_call",
        "timestamp": "2026-03-01T00:00:00Z",
        "quantity": "1",
    }
    assert raw_row(json.dumps(event).encode()) is None
    del event["heartbeat"]
    converted = raw_row(json.dumps(event).encode())
    assert converted is not None and (converted["event_id"], converted["customer_id"]) == ("e-1", "acme")


def test_an_interval_must_be_positive() -> None:
    sender = HeartbeatSender("127.0.0.1:1", "usage-events")
    with pytest.raises(ValueError, match="longer than zero"):
        sender.start(timedelta(0))
    with pytest.raises(ValueError, match="longer than zero"):
        sender.run(timedelta(seconds=-1))
