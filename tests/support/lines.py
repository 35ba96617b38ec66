"""Event lines the tests share."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from schemas.validate import SCHEMA_DIR


def spec_example_lines() -> list[bytes]:
    """The spec's example lines (``schemas/examples/v1``, valid and invalid), in path order, without the newline."""
    return [p.read_bytes().strip() for p in sorted((SCHEMA_DIR / "examples" / "v1").glob("*/*.json"))]


def one_line_per_reason(event_type: str, now: datetime) -> dict[str, bytes]:
    """A line for every dead-letter reason code (schemas.validate.REASONS), for a job whose one meter reads
    ``event_type``, received at ``now``; each line's only fault is its reason (checked in tests/unit/test_ingest.py)."""
    base: dict[str, Any] = {
        "event_id": "r-1",
        "customer_id": "acme",
        "event_type": event_type,
        "timestamp": "2026-03-01T12:00:00Z",
        "quantity": "1",
    }

    def line(**changes: Any) -> bytes:
        event = {**base, **changes}
        return json.dumps({k: v for k, v in event.items() if v is not _DROP}).encode()

    return {
        "too_large": line(properties={"p": "x" * 70_000}),
        "malformed_json": b'{"event_id": "r-1",',
        "not_an_object": b"[1]",
        "missing_field": line(quantity=_DROP),
        "unknown_field": line(extra=1),
        "bad_schema_version": line(schema_version=2),
        "bad_event_id": line(event_id=""),
        "bad_customer_id": line(customer_id="a b"),
        "bad_event_type": line(event_type="API"),
        "bad_timestamp": line(timestamp="2026-03-01"),
        "bad_quantity": line(quantity="1e3"),
        "bad_properties": line(properties={"p": {"n": 1}}),
        "bad_resource": line(resource="r" * 300),
        "bad_user_id": line(user_id="u" * 200),
        "bad_region": line(region="g" * 100),
        "bad_source": line(source="s" * 200),
        "bad_amendment": json.dumps(
            {
                "amendment": "cancel",
                "amendment_id": "a-1",
                "customer_id": "acme",
                "event_id": "r-1",
                "requested_at": "2026-03-01T12:00:00Z",
            }
        ).encode(),
        "unknown_meter": line(event_type="no_meter_reads_this"),
        "future_timestamp": line(timestamp=(now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")),
    }


_DROP = object()
