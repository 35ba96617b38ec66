"""The job's SQL parsing gives the spec's verdict on every record, on Flink itself.

Runs jobs/sql.parse_view on hand-made records in a batch TableEnvironment (no Kafka). The spec
is schemas/validate.py (``job_reason``: the one definition of a valid event, plus what depends
on the configuration and on when Kafka received the record). tests/unit/test_event_agreement.py
holds the job's Java reader to the spec without Flink; here the whole view is checked: the SQL
around the reader, the meters' property values, the rowtime column, heartbeats and what dead
letters keep of a record.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from jobs.config import load_config
from jobs.flink import sql
from jobs.loader.heartbeat import heartbeat_record, is_heartbeat
from schemas.validate import MAX_EVENT_BYTES, SCHEMA_DIR, decode, event_time, job_reason, property_text, validate_line
from tests.support.lines import spec_example_lines
from tests.unit.test_event_agreement import BOUND_CASES, ISSUE_CASES, PROFILE_CASES, SCHEMA_CASES
from udfs.meters import Aggregation, Meter
from udfs.periods import epoch_millis

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "metering.example.yaml", env={})
#: When every record here was received by Kafka (2027-01-01T00:00:00Z), and the allowed skew.
RECEIVED = datetime(2027, 1, 1, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@pytest.fixture(scope="module")
def t_env() -> Any:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from infra.udf_jar import udf_jar
    from jobs.config import load_stack

    env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    env.get_config().set("parallelism.default", "1")
    env.get_config().set("table.local-time-zone", "UTC")
    env.get_config().set("pipeline.jars", udf_jar(load_stack()).as_uri())
    for statement in sql.function_ddl():
        env.execute_sql(statement)
    return env


def as_bytes(doc: str | bytes) -> bytes:
    return doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass")


def query_parsed(t_env: Any, docs: Sequence[str | bytes], query: str, meters: tuple[Meter, ...] = CONFIG.meters) -> list[Any]:
    """Rows of ``query`` over the view ``parsed``: ``parse_view`` of ``docs``, received at :data:`RECEIVED`.

    A record's ``kafka_offset`` is its index in ``docs``.
    """
    from pyflink.table import DataTypes

    rows = [(bytearray(as_bytes(d)), i) for i, d in enumerate(docs)]
    schema = DataTypes.ROW([DataTypes.FIELD("payload", DataTypes.BYTES()), DataTypes.FIELD("i", DataTypes.BIGINT())])
    t_env.create_temporary_view("docs", t_env.from_elements(rows, schema))
    source = f"""SELECT payload, 0 AS kafka_partition, i AS kafka_offset,
       TO_TIMESTAMP_LTZ({epoch_millis(RECEIVED)}, 3) AS kafka_ts, TO_TIMESTAMP_LTZ(0, 3) AS rowtime FROM docs"""
    t_env.create_temporary_view("src", t_env.sql_query(source))
    t_env.create_temporary_view("parsed", t_env.sql_query(sql.parse_view("src", meters, SKEW)))
    result = list(t_env.sql_query(query).execute().collect())
    for name in ("parsed", "src", "docs"):
        t_env.drop_temporary_view(name)
    return result


def parse_rows(t_env: Any, docs: list[str] | list[bytes]) -> list[Any]:
    """``(doc, reason, event_ms)`` per record, in the order of ``docs``."""
    rows = query_parsed(t_env, docs, "SELECT kafka_offset, reason, event_ms FROM parsed")
    by_index = {row[0]: row for row in rows}
    return [(doc, by_index[i][1], by_index[i][2]) for i, doc in enumerate(docs)]


def spec_reason(doc: str | bytes, meters: tuple[Meter, ...] = CONFIG.meters) -> str | None:
    return job_reason(as_bytes(doc), event_types={m.event_type for m in meters}, received=RECEIVED, future_skew=SKEW)


def corpus_docs() -> list[bytes]:
    docs = spec_example_lines()
    # Event types must be configured meters for most of them; keep a few unknown ones.
    return [d.replace(b'"credits"', b'"api_call"') for d in docs]


def test_every_record_gets_the_spec_reason(t_env: Any) -> None:
    future = RECEIVED + SKEW
    timed = [
        json.dumps({"event_id": "f", "customer_id": "c", "event_type": "api_call", "timestamp": t, "quantity": 1})
        for t in (f"{future:%Y-%m-%dT%H:%M:%S}Z", f"{future:%Y-%m-%dT%H:%M:%S}.001Z", "2099-01-01T00:00:00Z")
    ]
    docs = [*corpus_docs(), *ISSUE_CASES, *PROFILE_CASES, *SCHEMA_CASES, *BOUND_CASES, *map(as_bytes, timed)]
    rows = parse_rows(t_env, docs)
    wrong = [(doc[:200], reason, spec_reason(doc)) for doc, reason, _ in rows if reason != spec_reason(doc)]
    assert wrong == []
    reasons = {reason for _, reason, _ in rows}
    assert {None, "unknown_meter", "future_timestamp", "heartbeat", "too_large", "malformed_json"} <= reasons
    for doc, reason, event_ms in rows:
        if reason is None:
            event = validate_line(doc).event
            assert event is not None and event_ms == epoch_millis(event.timestamp), doc


def random_timestamps(count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        moment = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(0, 2_000_000_000), microseconds=rng.randrange(10**6)
        )
        offset = timedelta(minutes=15 * rng.randrange(-48, 57))
        local = moment.astimezone(timezone(offset))
        text = local.isoformat(timespec=rng.choice(["seconds", "milliseconds", "microseconds"]))
        out.append(text.replace("+00:00", "Z") if rng.random() < 0.3 else text)
    out += [
        "2024-02-29T12:00:00Z",
        "2025-02-29T12:00:00Z",
        "2026-04-31T00:00:00+02:00",
        "2026-13-01T00:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T12:00:00.123456789-09:30",
        "2000-02-29T23:59:59.999+14:00",
        "1900-02-29T00:00:00Z",
    ]
    return out


#: The schema's timestamp pattern (schemas/usage_event.v1.json), with ASCII digits only.
TIMESTAMP_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def mutated_timestamps(count: int, seed: int = 7) -> list[str]:
    """Near misses of valid timestamps: a character dropped, doubled or replaced, or text appended."""
    rng = random.Random(seed)
    bases = random_timestamps(50, seed)
    out = ["2026-03-01T12:00:00+24:00", "2026-03-01T12:00:00-23:59", "2026-03-01T12:00:00.1234567890Z", "0000-01-01T00:00:00Z"]
    for _ in range(count):
        text = rng.choice(bases)
        i = rng.randrange(len(text))
        kind = rng.randrange(4)
        if kind == 0:
            text = text[:i] + text[i + 1 :]
        elif kind == 1:
            text = text[:i] + text[i] + text[i:]
        elif kind == 2:
            text = text[:i] + rng.choice("0959:-+.TtZz x\u0663\n") + text[i + 1 :]
        else:
            text += rng.choice(["\n", " ", "Z", "0", ":00"])
        out.append(text)
    return out


def test_event_time_matches_python_for_generated_timestamps(t_env: Any) -> None:
    texts = random_timestamps(400) + mutated_timestamps(400)
    docs = [
        json.dumps({"event_id": f"e{i}", "customer_id": "c", "event_type": "api_call", "timestamp": t, "quantity": 1})
        for i, t in enumerate(texts)
    ]
    rows = {row[0]: row for row in parse_rows(t_env, docs)}
    for text, doc in zip(texts, docs, strict=True):
        try:
            expected: int | None = epoch_millis(event_time(text)) if TIMESTAMP_SHAPE.fullmatch(text) else None
        except ValueError:
            expected = None
        _, reason, event_ms = rows[doc]
        if expected is None:
            assert reason == "bad_timestamp", text
        else:
            assert event_ms == expected, (text, event_ms, expected)


def test_meters_read_property_values_as_the_spec_does(t_env: Any) -> None:
    """``props``: a property's value as written; ``gpu.type`` is one key (the schema allows dots), not a path."""
    meters = (
        Meter("gpu_seconds", "gpu_seconds", Aggregation.SUM, group_by=("gpu.type",)),
        Meter("gpu_max", "gpu_seconds", Aggregation.MAX, value="properties.gpu.load"),
    )
    event = {"event_id": "e", "customer_id": "c", "event_type": "gpu_seconds", "timestamp": "2026-12-31T10:00:00Z"}
    docs = [
        json.dumps({**event, "quantity": "1", "properties": {"gpu.type": "a100", "gpu.load": "0.5", "gpu": "x"}}),
        json.dumps({**event, "quantity": "2", "properties": {"gpu": {"type": "h100", "load": "1"}}}),  # nested: refused
        json.dumps({**event, "quantity": "3", "properties": {"gpu.type": True, "gpu.load": None}}),
        json.dumps({**event, "quantity": "4"}).replace('"4"', '4, "properties": {"gpu.load": 0.0000001, "gpu.type": -0}'),
        json.dumps({**event, "quantity": "5", "properties": {"gpu.load": "5\n"}}),
    ]
    rows = query_parsed(t_env, docs, "SELECT q_text, reason, props[1], props[2] FROM parsed", meters)
    assert sorted(tuple(r) for r in rows) == [
        ("1", None, "0.5", "a100"),
        ("2", "bad_properties", None, None),
        ("3", None, None, "true"),
        ("4", None, "0.0000001", "0"),
        ("5", None, "5\n", None),
    ]
    for doc in docs[2:]:
        properties = decode(doc)["properties"]
        assert [property_text(properties.get(n)) for n in ("gpu.load", "gpu.type")] in [[r[2], r[3]] for r in rows]
    # A value a meter refuses ("5\n" is no decimal, though REGEXP's $ matches before a line feed):
    # its meter dead letter will need the payload.
    kept = query_parsed(t_env, docs, "SELECT q_text, kept_doc IS NOT NULL FROM parsed WHERE reason IS NULL", meters)
    assert sorted(tuple(r) for r in kept) == [("1", False), ("3", True), ("4", False), ("5", True)]


def test_rowtime_column_is_a_valid_events_time_or_the_epoch(t_env: Any) -> None:
    from pyflink.table import DataTypes

    (rowtime_expr,) = (expr for name, expr in sql.source_schema_columns(timedelta(minutes=5), ()) if name == "rowtime")
    received = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def event(timestamp: str, quantity: str = "1") -> bytes:
        return json.dumps(
            {"event_id": "e", "customer_id": "c", "event_type": "t", "timestamp": timestamp, "quantity": quantity}
        ).encode()

    cases = {
        event("2026-03-01T11:59:59.250Z"): epoch_millis(datetime(2026, 3, 1, 11, 59, 59, 250000, tzinfo=UTC)),
        event("2026-03-01T14:05:00+02:00"): epoch_millis(datetime(2026, 3, 1, 12, 5, tzinfo=UTC)),  # exactly received + skew
        event("2026-03-01T12:05:00.001Z"): 0,  # beyond the allowed skew: never advances the watermark
        event("2026-02-30T12:00:00Z"): 0,  # not a real date
        event("2026-03-01T11:00:00Z", quantity="1e9"): 0,  # a refused event moves nothing
        event("2026-03-01T11:00:00Z") + b" trailing": 0,
        heartbeat_record(datetime(2026, 3, 1, 11, 30, tzinfo=UTC)): epoch_millis(datetime(2026, 3, 1, 11, 30, tzinfo=UTC)),
        b'{"no": "timestamp"}': 0,
        b"\xff": 0,
    }
    table = t_env.from_elements(
        [(bytearray(d), received) for d in cases],
        DataTypes.ROW([DataTypes.FIELD("payload", DataTypes.BYTES()), DataTypes.FIELD("kafka_ts", DataTypes.TIMESTAMP_LTZ(3))]),
    )
    t_env.create_temporary_view("received", table)
    as_text = f"DATE_FORMAT({rowtime_expr}, 'yyyy-MM-dd''T''HH:mm:ss.SSS')"  # collect() cannot return TIMESTAMP_LTZ
    rows = list(t_env.sql_query(f"SELECT payload, {as_text} FROM received").execute().collect())
    t_env.drop_temporary_view("received")
    got = {bytes(doc): epoch_millis(datetime.fromisoformat(text + "+00:00")) for doc, text in rows}
    assert got == cases


def test_heartbeats_are_neither_events_nor_dead_letters(t_env: Any) -> None:
    """A heartbeat gets the internal reason ``heartbeat`` (dropped), unless its timestamp is bad or future."""
    event = json.loads(next(iter(sorted((SCHEMA_DIR / "examples" / "v1" / "valid").glob("*.json")))).read_text())
    cases = {
        heartbeat_record(RECEIVED - timedelta(seconds=1)).decode(): sql.HEARTBEAT,
        heartbeat_record(RECEIVED + SKEW).decode(): sql.HEARTBEAT,  # exactly the allowed skew
        heartbeat_record(RECEIVED + SKEW + timedelta(milliseconds=1)).decode(): "future_timestamp",
        '{"heartbeat": true, "timestamp": "2026-02-30T00:00:00Z"}': "bad_timestamp",
        '{"heartbeat": true}': "missing_field",
        '{"heartbeat": false, "timestamp": "2026-03-01T00:00:00Z"}': "missing_field",  # not a heartbeat
        '{"heartbeat": 1, "timestamp": "2026-03-01T00:00:00Z"}': "missing_field",
        json.dumps({**event, "heartbeat": True}): "unknown_field",  # an event id makes it an event
    }
    rows = parse_rows(t_env, list(cases))
    assert {doc: reason for doc, reason, _ in rows} == cases
    assert all(spec_reason(doc) == reason for doc, reason in cases.items())
    # The loader's rule (jobs/loader/heartbeat.py) picks the same records; a bad heartbeat is a dead letter.
    heartbeats = {doc for doc in cases if is_heartbeat(json.loads(doc))}
    assert {doc for doc, reason in cases.items() if reason == sql.HEARTBEAT} <= heartbeats
    assert {cases[doc] for doc in heartbeats} == {sql.HEARTBEAT, "future_timestamp", "bad_timestamp", "missing_field"}


def test_dead_letters_keep_the_records_bytes_up_to_the_cap(t_env: Any) -> None:
    """The payload exactly as read (invalid UTF-8 included), its first bytes when too large, and its size; no heartbeats."""
    too_large = b'{"x":"' + b"\x01" * (MAX_EVENT_BYTES * 3) + b'"}'
    docs = [
        heartbeat_record(datetime(2026, 12, 31, tzinfo=UTC)),
        b"not json",
        b'{"heartbeat": true}',
        b'{"a":"\xff\xfe"}',
        too_large,
    ]
    # what metering_first_seen adds for records with a reason (not an amendment): sign 0, no outcome
    first_seen_input = sql.first_seen_input_view("parsed", timedelta(0), ())
    first_seen = f"(SELECT *, 0 AS sign, CAST(NULL AS STRING) AS a_outcome FROM ({first_seen_input}))"
    view = sql.dead_letters_view(f"{first_seen} AS i")
    rows = query_parsed(t_env, docs, f"SELECT reason, payload_base64, payload_size FROM ({view})")
    got = sorted((reason, base64.b64decode(payload), size) for reason, payload, size in rows)
    assert got == [
        ("malformed_json", b"not json", 8),
        ("malformed_json", b'{"a":"\xff\xfe"}', 10),
        ("missing_field", b'{"heartbeat": true}', 19),
        ("too_large", too_large[:MAX_EVENT_BYTES], len(too_large)),
    ]
