"""One definition of a valid event: the job's Java reading agrees with the Python spec, line for line.

schemas/validate.py is the definition; the job reads records with ``udfs/jvm``'s
``EventRules`` (``metering_read_event``, ``metering_event_millis``). Both get the same lines (the
schema corpus, the failures issues reported, every bound at and past its edge, and lines
hypothesis generates) and must give the same verdict and reason code, and for valid events the
same fields: event time, quantity as written, property values and the properties object.

The Java side runs outside Flink (``dev.metering.udfs.EventVerdicts``, one JVM for the module),
so this stays in the fast tier.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.amendments import FIELDS as AMENDMENT_MEMBERS
from schemas.amendments import VERDICT as AMENDMENT_VERDICT
from schemas.validate import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_EXPONENT_DIGITS,
    MAX_NUMBER_CHARS,
    QUANTITY_INTEGER_DIGITS,
    REASONS,
    decode,
    property_text,
    raw_event_row,
    record_verdict,
    validate_line,
)
from tests.jvm import JavaProcess
from tests.support.lines import spec_example_lines
from udfs.periods import epoch_millis

#: Properties whose values the comparison reads (as the job's meters would).
PROPERTY_NAMES = ("model", "tokens", "region", "gpu.type", "u")


class JavaReader(JavaProcess):
    """A running ``EventVerdicts``: one record in, one JSON array out."""

    def __init__(self) -> None:
        super().__init__("dev.metering.udfs.EventVerdicts", *PROPERTY_NAMES, jvm_options=("-Xss4m",))

    def read(self, lines: list[bytes]) -> list[list[Any]]:
        return self.exchange(b"".join(struct.pack(">i", len(line)) + line for line in lines), len(lines))


@pytest.fixture(scope="module")
def java() -> Iterator[JavaReader]:
    reader = JavaReader()
    yield reader
    reader.close()


#: The Kafka coordinates the Java side writes every raw line with (EventVerdicts.RAW_*).
RAW_AT = ("usage-events", 3, 42, 1_767_225_600_123)


def python_reading(line: bytes) -> list[Any]:
    """What the Java side returns, from the spec: verdict, fields, properties, event time, raw_events row.

    For a valid amendment: its target (event id, customer), quantity, action and id.
    """
    verdict = record_verdict(line)
    if verdict == AMENDMENT_VERDICT:
        document = decode(line)
        return [
            verdict,
            document["event_id"],
            document["customer_id"],
            property_text(document.get("quantity")),
            document["amendment"],
            document["amendment_id"],
            None,
        ]
    if verdict is not None and verdict != "heartbeat":
        return [verdict, None]
    document = decode(line)
    if verdict == "heartbeat":
        return [verdict, None, None, None, document["timestamp"], None]
    event = validate_line(line).event
    assert event is not None
    properties = document.get("properties")
    return [
        None,
        event.event_id,
        event.customer_id,
        event.event_type,
        document["timestamp"],
        property_text(document["quantity"]),
        properties,
        None,  # an amendment's action
        None,  # and id
        *(property_text(properties.get(n)) if properties else None for n in PROPERTY_NAMES),
        epoch_millis(event.timestamp),
        raw_event_row(line, *RAW_AT),
    ]


def raw_line_values(text: str) -> dict[str, Any]:
    """A raw_events line's values: times (UTC text) in epoch ms, the quantity as Decimal, the payload's bytes."""
    row = json.loads(text)
    for column in ("event_time", "received_at"):
        assert len(row[column]) == 23, row[column]
        row[column] = epoch_millis(datetime.fromisoformat(row[column]).replace(tzinfo=UTC))
    row["quantity"] = Decimal(row["quantity"])
    row["payload"] = row["payload"].encode("utf-8")
    return dict(row)


def java_comparable(row: list[Any]) -> list[Any]:
    verdict = row[0]
    raw = None if row[-1] is None else raw_line_values(row[-1])
    if verdict == AMENDMENT_VERDICT:
        return [verdict, row[1], row[2], row[5], row[7], row[8], raw]
    if verdict is not None and verdict != "heartbeat":
        return [verdict, raw]
    if verdict == "heartbeat":
        return [verdict, None, None, None, row[4], raw]
    properties = None if row[6] is None else decode(row[6])
    return [*row[:6], properties, *row[7:-1], raw]


def disagreements(java: JavaReader, lines: list[bytes]) -> list[tuple[bytes, list[Any], list[Any]]]:
    found = []
    for line, row in zip(lines, java.read(lines), strict=True):
        ours, theirs = python_reading(line), java_comparable(row)
        if ours != theirs:
            found.append((line[:300], ours, theirs))
    return found


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "customer_id": "acme",
        "event_type": "api_call",
        "timestamp": "2026-03-01T12:00:00Z",
        "quantity": "1",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def line(**fields: Any) -> bytes:
    return json.dumps(event(**fields), ensure_ascii=False).encode("utf-8", "surrogatepass")


def with_raw(name: str, raw: str, **fields: Any) -> bytes:
    """A valid event whose field ``name`` is the JSON text ``raw``, written as is."""
    document = json.dumps(event(**{name: "\u0000PLACEHOLDER"}, **fields))
    return document.replace('"\\u0000PLACEHOLDER"', raw).encode("utf-8", "surrogatepass")


VALID = line()
ISSUE_CASES = [
    # from the issue: each stopped the job or the loader, or the judges disagreed
    with_raw("properties", '{"a":' * 1500 + "1" + "}" * 1500),
    with_raw("quantity", "1" + "0" * 39),
    line(quantity="1" + "0" * 39),
    with_raw("customer_id", '"\\ud800"'),
    with_raw("properties", '{"u":"u4\\ud800"}'),
    line(timestamp="0001-01-01T00:00:00Z"),
    line(timestamp="0001-01-01T00:30:00+01:00"),
    line(properties={"x": "\u0001" * 200_000}),
    line(properties={"x": "\u0001" * 10_000}),
    line(timestamp="1969-12-31T23:59:30Z"),
    line(customer_id="acme\n"),
    with_raw("quantity", "1e9"),
    with_raw("properties", '{"x":NaN}'),
    with_raw("properties", '{"x":' + "9" * 2000 + "}"),
    VALID[:-2] + b'\xff"}',
    line(timestamp="9999-12-31T23:59:59Z"),
]
PROFILE_CASES = [
    b"\xef\xbb\xbf" + VALID,
    VALID + b" x",
    VALID + b" {}",
    b" \t\r\n" + VALID + b" \n",
    b"",
    b"   ",
    b"null",
    b"[]",
    b'"text"',
    b"\x00",
    VALID.decode().encode("utf-16-le"),
    VALID.decode().encode("utf-16"),  # with its byte-order mark
    VALID.decode().encode("utf-32-be"),
    VALID.replace(b'"e-1"', b'"e\xed\xa0\x80"'),  # an encoded surrogate
    VALID.replace(b'"e-1"', b'"e\xc0\xaf"'),  # an overlong form
    VALID.replace(b'"e-1"', b'"e\xf4\x90\x80\x80"'),  # beyond U+10FFFF
    VALID.replace(b'"e-1"', b'"\xf0\x9f\x98\x80"'),  # a real emoji
    VALID.replace(b'"e-1"', b'"\\ud83d\\ude00"'),  # an escaped pair
    VALID.replace(b'"e-1"', b'"\\ude00\\ud83d"'),  # a reversed pair
    VALID.replace(b'"e-1"', b'"\\\\ud800"'),  # an escaped backslash, not a surrogate
    VALID.replace(b'"e-1"', b'"\\ud83d\xf0\x9f\x98\x80"'),  # a lone escape before a real pair
    VALID.replace(b'"e-1"', b'"a\tb"'),  # a raw control character
    VALID.replace(b'"e-1"', b'"a\\tb"'),  # an escaped one
    VALID.replace(b'"e-1"', b'"\\x41"'),  # not an escape
    VALID[:-1] + b',"event_id":"e-2"}',  # a duplicate name
    VALID[:-1] + b',"Quantity":"2"}',  # names differing by case
    VALID.replace(b'"quantity"', b'"Quantity"'),
    with_raw("properties", '{"a":1,"a":2}'),
    with_raw("properties", '{"a\\ud800":1}'),
    with_raw("properties", "{'a':1}"),
    with_raw("quantity", "Infinity"),
    with_raw("quantity", "-Infinity"),
    with_raw("quantity", "01"),
    with_raw("quantity", "1."),
    with_raw("quantity", ".5"),
    with_raw("quantity", "+1"),
    with_raw("quantity", "-0"),
    with_raw("quantity", "-0.0"),
    with_raw("quantity", "0.0000001"),
    with_raw("quantity", "1E2"),
    with_raw("quantity", "1.5"),
    with_raw("quantity", "true"),
    with_raw("quantity", "null"),
    with_raw("quantity", "[1]"),
    VALID.replace(b'"1"', b'"1 "'),
    VALID.replace(b'"1"', b'"1\\n"'),
    VALID.replace(b'"1"', b'"\xd9\xa5"'),  # an Arabic-Indic digit
    VALID.replace(b'"1"', b'"1_000"'),
]
SCHEMA_CASES = [
    line(event_id=...),
    line(event_id=None),
    line(event_id=""),
    line(event_id="e" * 128),
    line(event_id="e" * 129),
    line(event_id="\U0001f600" * 128),  # 128 code points, 256 UTF-16 units
    line(event_id="\U0001f600" * 129),
    line(event_id="a\u007f"),
    line(event_id="a\u0085"),  # a C1 control: allowed
    line(event_id="e 1 "),
    line(event_id=7),
    line(customer_id=" acme"),
    line(customer_id="acme "),
    line(customer_id="a" * 128),
    line(customer_id="a" * 129),
    line(customer_id="_acme"),
    line(customer_id="ac:me@x.y-z_"),
    line(customer_id="ACME"),
    line(customer_id="acmé"),
    line(event_type="API_CALL"),
    line(event_type="a" * 64),
    line(event_type="a" * 65),
    line(event_type="api_call\n"),
    line(event_type="unconfigured.type"),
    line(schema_version=1),
    line(schema_version="1"),
    line(schema_version=2),
    line(schema_version=True),
    with_raw("schema_version", "1.0"),
    with_raw("schema_version", "1e0"),
    line(extra=1),
    line(context={}),
    line(heartbeat=False),
    line(properties=None),
    line(properties=[]),
    line(properties={}),
    line(properties={"a": {"b": 1}}),
    line(properties={"a": [1]}),
    line(properties={"a b": 1}),
    line(properties={"1a": 1}),
    line(properties={"a" * 64: 1}),
    line(properties={"a" * 65: 1}),
    line(properties={f"p{i}": i for i in range(64)}),
    line(properties={f"p{i}": i for i in range(65)}),
    line(properties={"model": "m", "tokens": 12, "region": None, "gpu.type": True, "u": "u\u0000"}),
    with_raw("properties", '{"tokens":0.0000001,"model":-0,"u":1E+400}'),
    with_raw("properties", '{"tokens":1e9999999999}'),
    line(resource="r" * 256),
    line(resource="r" * 257),
    line(user_id="u" * 129),
    line(region="r" * 65),
    line(source=None),
    line(source=12),
    line(timestamp="2026-03-01T12:00:00.123456789Z"),
    line(timestamp="2026-03-01t12:00:00z"),
    line(timestamp="2026-03-01 12:00:00+05:30"),
    line(timestamp="2026-03-01T12:00:00+14:00"),
    line(timestamp="2026-03-01T12:00:00-14:00"),
    line(timestamp="2026-03-01T12:00:00+23:59"),
    line(timestamp="2026-03-01T12:00:00+24:00"),
    line(timestamp="2026-03-01T12:00:00+05:60"),
    line(timestamp="2026-02-29T12:00:00Z"),
    line(timestamp="2028-02-29T12:00:00Z"),
    line(timestamp="2026-06-30T23:59:60Z"),
    line(timestamp="2026-03-01T12:00:00"),
    line(timestamp="2026-03-01T12:00:00.Z"),
    line(timestamp="2026-03-01T12:00:00.1234567890Z"),
    line(timestamp="2026-03-01T12:00:00Z\n"),
    line(timestamp="２０２６-03-01T12:00:00Z"),
    line(timestamp="1970-01-01T00:00:00Z"),
    line(timestamp="1969-12-31T23:59:59.999Z"),
    line(timestamp="1969-12-31T23:59:59.9999999Z"),
    line(timestamp="1970-01-01T01:00:00+01:00"),
    line(timestamp="1970-01-01T00:59:59.999+01:00"),
    line(timestamp="2099-12-31T23:59:59.999Z"),
    line(timestamp="2099-12-31T23:59:59.9999999Z"),
    line(timestamp="2100-01-01T00:00:00Z"),
    line(timestamp="2100-01-01T00:30:00+01:00"),
    line(timestamp=1772366400),
    line(heartbeat=True, event_id=..., customer_id=..., event_type=..., quantity=...),
    line(heartbeat="true", event_id=None),
    line(heartbeat=True, event_id=..., timestamp=...),
    line(heartbeat=True, event_id=..., timestamp="yesterday"),
    line(heartbeat=True, event_id=..., timestamp=12),
    line(heartbeat=True, event_id=..., timestamp="1960-01-01T00:00:00Z"),
    line(heartbeat=True),  # an event id: an event, with an unknown field
]


def amendment(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "amendment": "void",
        "amendment_id": "amd-1",
        "customer_id": "acme",
        "event_id": "e-1",
        "requested_at": "2026-03-02T08:00:00Z",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}, ensure_ascii=False).encode("utf-8", "surrogatepass")


AMENDMENT_CASES = [
    amendment(),
    amendment(requested_by="key:ops", reason="test traffic", schema_version=1),
    amendment(amendment="amend", quantity="7.5"),
    amendment(amendment="amend", quantity=7),
    amendment(amendment="amend", quantity=-0),
    amendment(amendment="amend", quantity="1e3"),
    amendment(amendment="amend", quantity=True),
    amendment(amendment="amend"),  # no quantity
    amendment(quantity="1"),  # a void with a quantity
    amendment(amendment="cancel"),
    amendment(amendment=None),
    amendment(amendment=True),
    amendment(amendment_id=...),
    amendment(amendment_id=""),
    amendment(amendment_id="a\n"),
    amendment(amendment_id=7),
    amendment(event_id=...),
    amendment(event_id=""),
    amendment(customer_id="acme corp"),
    amendment(customer_id=None),
    amendment(requested_at=...),
    amendment(requested_at="2026-03-02"),
    amendment(requested_at="2026-02-30T00:00:00Z"),
    amendment(requested_by=5),
    amendment(requested_by="x" * 128),
    amendment(requested_by="x" * 129),
    amendment(reason="\u00e9" * 1024),
    amendment(reason="\u00e9" * 1025),
    amendment(reason=None),
    amendment(event_type="api_call"),
    amendment(timestamp="2026-03-02T08:00:00Z"),
    amendment(properties={}),
    amendment(heartbeat=True),
    amendment(extra=1),
    amendment(schema_version=2),
    amendment(schema_version="1"),
    # an event carrying an amendment's member is an event with an unknown field
    line(amendment_id="amd-1"),
    line(requested_at="2026-03-02T08:00:00Z"),
    line(reason="x"),
    line(requested_by="x"),
    # a heartbeat with an amendment member is an amendment
    json.dumps({"heartbeat": True, "timestamp": "2026-03-02T08:00:00Z", "amendment": "void"}).encode(),
]


def nested(depth: int) -> str:
    """A property value whose nesting, counted from the event, is ``depth``."""
    return '{"a":' + "[" * (depth - 2) + "1" + "]" * (depth - 2) + "}"


def sized(total: int) -> bytes:
    """A valid event of exactly ``total`` bytes."""
    short = line(properties={"x": ""})
    return line(properties={"x": "a" * (total - len(short))})


BOUND_CASES = [
    sized(MAX_EVENT_BYTES),
    sized(MAX_EVENT_BYTES + 1),
    with_raw("properties", nested(MAX_DEPTH)),
    with_raw("properties", nested(MAX_DEPTH + 1)),
    with_raw("properties", '{"n":' + "1" * MAX_NUMBER_CHARS + "}"),
    with_raw("properties", '{"n":' + "1" * (MAX_NUMBER_CHARS + 1) + "}"),
    with_raw("properties", '{"n":-' + "1" * (MAX_NUMBER_CHARS - 1) + "}"),
    with_raw("properties", '{"n":-' + "1" * MAX_NUMBER_CHARS + "}"),
    with_raw("properties", '{"n":0.' + "1" * (MAX_NUMBER_CHARS - 2) + "}"),
    with_raw("properties", '{"n":0.' + "1" * (MAX_NUMBER_CHARS - 1) + "}"),
    with_raw("properties", '{"n":1e' + "1" * (MAX_NUMBER_CHARS - 2) + "}"),
    with_raw("properties", '{"n":1e' + "9" * MAX_EXPONENT_DIGITS + "}"),
    with_raw("properties", '{"n":-1.5E-' + "9" * MAX_EXPONENT_DIGITS + "}"),
    with_raw("properties", '{"n":1e' + "9" * (MAX_EXPONENT_DIGITS + 1) + "}"),
    with_raw("properties", '{"n":1E+0' + "9" * MAX_EXPONENT_DIGITS + "}"),
    with_raw("quantity", "9" * QUANTITY_INTEGER_DIGITS + "." + "9" * 9),
    with_raw("quantity", "9" * (QUANTITY_INTEGER_DIGITS + 1)),
    with_raw("quantity", "-" + "9" * QUANTITY_INTEGER_DIGITS),
    with_raw("quantity", "1" + "0" * QUANTITY_INTEGER_DIGITS),
    with_raw("quantity", "0." + "0" * 9),
    with_raw("quantity", "0." + "0" * 10),
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b"[" * 100_000,
    b"[" * 40 + b"x",
    b"x" + b"[" * 40,
]


@pytest.mark.parametrize(
    "cases",
    [spec_example_lines(), ISSUE_CASES, PROFILE_CASES, SCHEMA_CASES, BOUND_CASES, AMENDMENT_CASES],
    ids=["corpus", "issue", "profile", "schema", "bounds", "amendments"],
)
def test_the_job_reads_every_line_as_the_spec_does(java: JavaReader, cases: list[bytes]) -> None:
    assert disagreements(java, cases) == []


def test_the_cases_reach_every_reason_and_both_sides_of_each_bound() -> None:
    cases = spec_example_lines() + ISSUE_CASES + PROFILE_CASES + SCHEMA_CASES + BOUND_CASES + AMENDMENT_CASES
    verdicts = [record_verdict(c) for c in cases]
    assert AMENDMENT_VERDICT in verdicts
    config_dependent = {"unknown_meter", "future_timestamp"}
    assert set(REASONS) - config_dependent <= set(verdicts)
    assert None in verdicts and "heartbeat" in verdicts
    assert [record_verdict(c) for c in BOUND_CASES[:4]] == [None, "too_large", "bad_properties", "malformed_json"]
    assert record_verdict(ISSUE_CASES[0]) == "malformed_json"


def test_no_line_makes_either_side_throw(java: JavaReader) -> None:
    """Whatever the bytes, a verdict: the spec never raises, the Java side never says processing_error."""
    lines = ISSUE_CASES + PROFILE_CASES + SCHEMA_CASES + BOUND_CASES + AMENDMENT_CASES
    assert all(row[0] != "processing_error" for row in java.read(lines))


# Generated lines: valid events with one field replaced by generated JSON, and byte-level
# mutations of valid events. One JVM serves all examples.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**70), max_value=10**70)
    | st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: d)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "event_id",
    "customer_id",
    "event_type",
    "timestamp",
    "quantity",
    "properties",
    "schema_version",
    "resource",
    "heartbeat",
    "extra",
    "amendment_id",
]
INTERESTING = [
    b"\\",
    b'"',
    b"\\u",
    b"\\ud800",
    b"\xff",
    b"\xed\xa0\x80",
    b"\x00",
    b"\n",
    b"e",
    b"E",
    b"-",
    b".",
    b"{",
    b"[",
    b"}",
    b"]",
    b",",
    b":",
    b"0",
    b"9",
]


def _number_json(value: Any) -> str:
    return str(value) if not isinstance(value, bool) else json.dumps(value)


def encode_value(value: Any) -> str:
    """JSON text for a generated value; Decimals written as Python prints them (exponents included)."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(encode_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + encode_value(v) for k, v in value.items()) + "}"
    return json.dumps(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_generated_field_values_agree(java: JavaReader, field: str, value: Any) -> None:
    others = {"properties": {"model": "m"}} if field != "properties" else {}
    generated = with_raw(field, encode_value(value), **others)
    assert disagreements(java, [generated]) == []


AMENDMENT_FIELDS = [*AMENDMENT_MEMBERS, "event_type", "timestamp", "properties", "heartbeat", "extra"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(AMENDMENT_FIELDS), value=json_values, action=st.sampled_from(["void", "amend"]))
def test_generated_amendment_values_agree(java: JavaReader, field: str, value: Any, action: str) -> None:
    others = {"quantity": "2"} if action == "amend" and field != "quantity" else {}
    document = json.dumps(json.loads(amendment(amendment=action, **others)) | {field: "\u0000PLACEHOLDER"})
    generated = document.replace('"\\u0000PLACEHOLDER"', encode_value(value)).encode("utf-8", "surrogatepass")
    assert disagreements(java, [generated]) == []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_events_agree(java: JavaReader, data: st.DataObject) -> None:
    base = data.draw(
        st.sampled_from([VALID, line(properties={"model": "m", "tokens": 1.5}), line(quantity=12, schema_version=1)])
    )
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated)))
        piece = data.draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=3))
        cut = data.draw(st.integers(0, 2))
        mutated[at : at + cut] = piece
    assert disagreements(java, [bytes(mutated)]) == []


def test_hostile_corpus_agrees(java: JavaReader) -> None:
    """The hostile corpus (tests/corpus/generate.py), every line."""
    from tests.corpus.generate import generate

    lines = [entry.data for entry in generate()]
    found = disagreements(java, lines)
    assert found == [], f"{len(found)} of {len(lines)} lines disagree; first: {found[:3]}"
