"""The raw topic's records for tests that run the loader without the job: what the job would write.

The job writes each valid event's ``raw_events`` row as one JSON line (``udfs/jvm``
EventRules.rawRow), keyed by the event time in epoch milliseconds; tests/unit/test_event_agreement.py
holds those lines to :func:`schemas.validate.raw_event_row`. This writes the same lines from that
reference, so loader tests need no Flink.
"""

from __future__ import annotations

import json

from schemas.validate import raw_event_row
from udfs.periods import from_epoch_millis


def _utc_text(millis: int) -> str:
    return from_epoch_millis(millis).strftime("%Y-%m-%d %H:%M:%S.") + f"{millis % 1000:03d}"


def raw_record(
    line: bytes, *, topic: str = "usage-events", partition: int = 0, offset: int = 0, received_ms: int = 1_767_225_600_000
) -> tuple[bytes, bytes] | None:
    """``(key, value)`` of the raw topic's record for an events-topic ``line``; None for a line that is no valid event."""
    row = raw_event_row(line, topic, partition, offset, received_ms)
    if row is None:
        return None
    value = {
        **row,
        "event_time": _utc_text(row["event_time"]),
        "quantity": str(row["quantity"]),
        "received_at": _utc_text(received_ms),
        "payload": line.decode("utf-8"),
    }
    return str(row["event_time"]).encode(), json.dumps(value, ensure_ascii=False).encode()
