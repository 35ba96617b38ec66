"""Refusals in ClickHouse: dead letters keep the bytes; the replay refuses values by the spec's rule."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from clickhouse.client import open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import run_query, sql_of
from clickhouse.tables import COLUMNS, RAW_COLUMNS
from jobs.loader.loader import JSON_LINE_SETTINGS, dead_letter_row
from jobs.replay import _meter_parameters
from schemas.validate import raw_event_line
from udfs.meters import Aggregation, Meter


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


def test_the_replay_decides_numbers_as_the_job_wrote_them(storage_settings: Any) -> None:
    """Quantities and property values written as JSON numbers reach the replay's decision as written.

    ClickHouse's JSON functions re-write numbers (0.000000001 → 1e-9): the replay's examine step used to
    drop such valid events (no row, no refusal) and refuse such property values as bad_value. Here raw
    rows are what the job writes (the reference raw lines, inserted as the loader inserts them), and every
    event is valid: each must be counted, with its exact value, and none refused.
    """
    numbers = ["0.000000001", "99999999999999999999999999999.999999999", "1.50", "-0", "12345678901234567.5"]
    lines = [
        f'{{"event_id":"q{n}","customer_id":"acme","event_type":"api_call","timestamp":"2026-02-10T12:00:00Z",'
        f'"quantity":{number},"properties":{{"bytes":{number},"quantity":7}}}}'.encode()
        for n, number in enumerate(numbers)
    ]
    received_ms = int(datetime(2026, 2, 10, 12, 0, 1, tzinfo=UTC).timestamp() * 1000)
    raw = [raw_event_line(line, topic="usage-events", offset=n, received_ms=received_ms) for n, line in enumerate(lines)]
    assert all(r is not None for r in raw), "every line is a valid event"
    meters = [
        Meter("calls", "api_call", Aggregation.SUM),
        Meter("distinct_quantities", "api_call", Aggregation.UNIQUE_COUNT),
        Meter("bytes", "api_call", Aggregation.MAX, value="properties.bytes", allow_negative=True),
    ]
    with open_storage(storage_settings) as storage:
        migrate(storage)
        storage.client.raw_insert(
            "raw_events", RAW_COLUMNS, b"\n".join(r[1] for r in raw if r), fmt="JSONEachRow", settings=JSON_LINE_SETTINGS
        )
        storage.command(
            sql_of("replay_examine"),
            parameters={
                "revision": 7, "topic": "usage-events", "skew_ms": 300_000,
                "customers": ["acme"],
                "scope_from": [datetime(2026, 2, 1, tzinfo=UTC)], "scope_to": [datetime(2026, 3, 1, tzinfo=UTC)],
                "cut_partitions": [0], "cut_offsets": [len(lines)], **_meter_parameters(meters),
            },
        )  # fmt: skip
        decided = storage.query_rows(
            "SELECT event_id, meter, toString(value), distinct_value, refusal FROM replay_events WHERE revision = 7"
        )
    by = {(event_id, meter): (value, distinct, refusal) for event_id, meter, value, distinct, refusal in decided}
    for n, number in enumerate(numbers):
        assert by[(f"q{n}", "calls")][2] == "" and Decimal(by[(f"q{n}", "calls")][0]) == Decimal(number), n
        assert by[(f"q{n}", "distinct_quantities")][1:] == (number, ""), n  # the text as written; not refused
        assert by[(f"q{n}", "bytes")][2] == "" and Decimal(by[(f"q{n}", "bytes")][0]) == Decimal(number), n
    assert len(by) == 3 * len(numbers)
