"""Refusals in ClickHouse: dead letters keep the bytes; the replay refuses values by the spec's rule."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

from clickhouse.client import open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import run_query
from jobs.loader import COLUMNS, dead_letter_row


def record(offset: int, **fields: Any) -> SimpleNamespace:
    value = {"reason": "malformed_json", "meter": None, "customer_id": None, "event_id": None, "kafka_partition": 0}
    value.update(kafka_offset=offset, kafka_ts="2026-12-06 10:00:00.000Z", **fields)
    return SimpleNamespace(topic="dead-letters", partition=0, offset=offset, timestamp=0, key=None, value=json.dumps(value))


def test_bytes_truncation_and_old_dead_letters_survive_the_loader(storage_settings: Any) -> None:
    not_utf8 = b'{"a":"\xff\xfe"}'
    head = b'{"x":"' + b"\x01" * 100
    records = [
        record(1, payload_base64=base64.b64encode(not_utf8).decode(), payload_size=len(not_utf8)),
        record(2, reason="too_large", payload_base64=base64.b64encode(head).decode(), payload_size=200_000),
        record(3, payload="written before payload_base64"),  # a dead letter from an earlier version
    ]
    rows = [dead_letter_row(r)[1] for r in records]
    with open_storage(storage_settings) as storage:
        migrate(storage)
        storage.client.insert("dead_letters", rows, column_names=COLUMNS["dead_letters"])
        stored = storage.query_rows(
            "SELECT source_offset, hex(payload), payload_size, payload_truncated FROM dead_letters FINAL ORDER BY source_offset"
        )
        shown = [r["payload"] for r in run_query(storage, "dead_letters", {"customer": ""})]
    assert stored == [
        (1, not_utf8.hex().upper(), len(not_utf8), False),
        (2, head.hex().upper(), 200_000, True),
        (3, b"written before payload_base64".hex().upper(), 29, False),
    ]
    assert shown == ["base64:" + base64.b64encode(not_utf8).decode(), head.decode(), "written before payload_base64"]


def test_the_replays_value_rule_is_the_spec_quantity_rule(storage_settings: Any) -> None:
    """replay_examine.sql refuses a meter's value (bad_value) exactly when the spec refuses such a quantity.

    The rule's third copy (after schemas/validate.py and the job's EventRules, which
    tests/unit/test_event_agreement.py ties together) is ClickHouse's `metering_decimal_text_ok_v1`
    (clickhouse/migrations/0009), which the replay calls.
    """
    from clickhouse.queries import sql_of
    from schemas.validate import _QUANTITY

    assert "NOT metering_decimal_text_ok_v1(prop_text), 'bad_value'" in sql_of("replay_examine")
    values = [
        *("0", "-0", "1", "-1", "01", "1.", ".5", "+1", "1.5", "1e9", "1E+9", "0.000000001", "0.0000000001"),
        *("9" * 29, "9" * 30, "9" * 29 + "." + "9" * 9, "5\n", "5 ", " 5", "\u0665", "1_000", "", "-", "0x10", "NaN"),
    ]
    with open_storage(storage_settings) as storage:
        migrate(storage)
        [(matched,)] = storage.query_rows(
            "SELECT arrayMap(x -> metering_decimal_text_ok_v1(x), {values:Array(String)})", {"values": values}
        )
    assert {v: bool(m) for v, m in zip(values, matched, strict=True)} == {v: bool(_QUANTITY.fullmatch(v)) for v in values}
