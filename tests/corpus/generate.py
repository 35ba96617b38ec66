"""The hostile corpus (issue #27): >= 10,000 JSON lines a careless or hostile producer could send.

``python -m tests.corpus.generate --out PATH [--seed N] [--lines N] [--jsontestsuite DIR]`` writes
the corpus as bytes, one record a line (lines may be invalid UTF-8; none contains a raw ``\\n``).
The same arguments give the same bytes.

What it holds (each :class:`CorpusLine` carries its ``category`` and a ``variant`` naming the
case):

* ``valid``: events of the configured meters (config/metering.example.yaml) for four customers,
  spread over 400 days in event-time order, with exact retries, changed retries (same id, other
  quantity) and a few events late beyond their period's grace;
* one category per hostile kind in :data:`HOSTILE`: each line is an otherwise valid event with one
  thing wrong (deep nesting, huge/tiny numbers, exponents, NaN/Infinity, lone surrogates, invalid
  UTF-8, BOMs, NUL and control characters, 10 MB lines, empty and whitespace lines, duplicate
  keys, keys differing by case, ids with trailing whitespace, extreme timestamps, ~200 KB strings
  of U+0001, 40- and 2000-digit quantities);
* ``json_syntax``: small documents on the edges of RFC 8259 written for this corpus, whole and
  embedded into events;
* ``jsontestsuite`` / ``jsontestsuite_embedded``: when a JSONTestSuite ``test_parsing`` folder is
  given (tests/corpus/README.md says where it comes from), each of its files as a whole line and
  embedded into an event as a property value, the quantity (number files) or the customer id
  (string files).

No expected verdicts are stored: the spec (``schemas.validate.validate_line``) computes them at
test time. This module depends on nothing of the project, the validator least of all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_SEED = 27
DEFAULT_LINES = 10_000
#: Valid events span this many days of event time, from :data:`START`.
SPAN_DAYS = 400
START = datetime(2025, 6, 1, tzinfo=UTC)
#: Customers of the valid events: acme (plan enterprise-eu: Berlin, anchor 15, 72 h grace), bharat-ai
#: (Kolkata), nightly-tests (daily periods) in config/metering.example.yaml; globex has the defaults.
CUSTOMERS = ("acme", "bharat-ai", "nightly-tests", "globex")
MODELS = ("small-1", "medium-2", "large-3")
GPUS = ("a100", "h100")
#: Where a JSONTestSuite ``test_parsing`` folder is looked for when none is given (first that exists).
JSONTESTSUITE_ENV = "METERING_JSONTESTSUITE"
_HERE = Path(__file__).resolve().parent
JSONTESTSUITE_CANDIDATES = (
    _HERE / "jsontestsuite" / "test_parsing",
    _HERE.parents[2] / "shared" / "jsontestsuite" / "test_parsing",
)

HOSTILE = (
    "deep_nesting",
    "huge_tiny_numbers",
    "exponents",
    "nan_infinity",
    "lone_surrogates",
    "invalid_utf8",
    "bom",
    "nul_control",
    "huge_line",
    "empty_whitespace",
    "duplicate_keys",
    "key_case",
    "id_whitespace",
    "timestamps",
    "control_string_200k",
    "big_quantity",
    "json_syntax",
)
CATEGORIES = ("valid", *HOSTILE)
JSONTESTSUITE_CATEGORIES = ("jsontestsuite", "jsontestsuite_embedded")

_SPLICE = "__corpus_splice__"


@dataclass(frozen=True)
class CorpusLine:
    """One line of the corpus: what kind of case it is, and its bytes (without the newline)."""

    category: str
    variant: str
    data: bytes


def dumps(value: Any) -> bytes:
    """Compact JSON, ASCII only (so every non-ASCII byte in a line was put there on purpose)."""
    return json.dumps(value, separators=(",", ":")).encode()


def splice(event: dict[str, Any], path: str, raw: bytes) -> bytes:
    """``event`` serialized with ``raw`` (any bytes) as the JSON text of the value at ``path``.

    ``path`` is a top-level field or ``properties.<name>``.
    """
    event = {**event, "properties": dict(event.get("properties") or {})}
    if path.startswith("properties."):
        event["properties"][path.removeprefix("properties.")] = _SPLICE
    else:
        event[path] = _SPLICE
    text = dumps(event)
    assert text.count(_SPLICE.encode()) == 1
    return text.replace(b'"' + _SPLICE.encode() + b'"', raw)


def with_raw_in_string(event: dict[str, Any], path: str, raw: bytes, prefix: str = "a", suffix: str = "b") -> bytes:
    """``event`` whose string at ``path`` holds ``raw`` bytes (unescaped) between ``prefix`` and ``suffix``."""
    return splice(event, path, b'"' + prefix.encode() + raw + suffix.encode() + b'"')


def with_key(event: dict[str, Any], raw_key: bytes, value: bytes, *, in_properties: bool = False) -> bytes:
    """``event`` with one more member whose key is ``raw_key`` (JSON text, quotes included)."""
    text = dumps({k: v for k, v in event.items() if k != "properties"})[:-1]
    properties = dumps(event.get("properties") or {})
    member = raw_key + b":" + value
    if in_properties:
        properties = properties[:-1] + (b"," if properties != b"{}" else b"") + member + b"}"
        return text + b',"properties":' + properties + b"}"
    return text + b',"properties":' + properties + b"," + member + b"}"


def append_member(event: dict[str, Any], raw_member: bytes) -> bytes:
    """``event`` with ``raw_member`` (``"key":value`` text) as its last member (duplicate keys)."""
    return dumps(event)[:-1] + b"," + raw_member + b"}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- valid events ----------------------------------------------------------------------------------


def valid_event(rng: random.Random, event_id: str, customer: str, moment: datetime) -> dict[str, Any]:
    """A valid event of one of the configured meters' event types."""
    kind = rng.choices(["api_call", "tokens", "gpu_seconds", "storage_snapshot", "credits"], [45, 30, 12, 8, 5])[0]
    event: dict[str, Any] = {"event_id": event_id, "customer_id": customer, "event_type": kind, "timestamp": rfc3339(moment)}
    if kind == "api_call":
        event.update(quantity=1, properties={"user": f"u{rng.randrange(300)}", "endpoint": rng.choice(["/v1/chat", "/v1/embed"])})
    elif kind == "tokens":
        event.update(
            quantity=str(rng.randrange(1, 20_000)),
            properties={"model": rng.choice(MODELS), "direction": rng.choice(["in", "out"])},
        )
    elif kind == "gpu_seconds":
        event.update(quantity=f"{rng.randrange(0, 3600)}.{rng.randrange(10**6):06d}", properties={"gpu_type": rng.choice(GPUS)})
    elif kind == "storage_snapshot":
        event.update(quantity=rng.randrange(10**9, 10**13))
    else:
        event.update(quantity=f"{rng.choice(['', '-'])}{rng.randrange(1, 500)}.{rng.randrange(100):02d}")
    return event


def base_event(event_id: str, moment: datetime, customer: str = "globex") -> dict[str, Any]:
    """The otherwise valid event a hostile line changes one thing of (a tokens event: it has group-by properties)."""
    return {
        "event_id": event_id,
        "customer_id": customer,
        "event_type": "tokens",
        "timestamp": rfc3339(moment),
        "quantity": "42",
        "properties": {"model": "small-1", "direction": "in"},
    }


# --- hostile cases ---------------------------------------------------------------------------------

#: A hostile case: given the base event (its id and time chosen by the caller), its variant name and bytes.
Case = Callable[[dict[str, Any]], tuple[str, bytes]]


def _case(variant: str, build: Callable[..., bytes]) -> Case:
    return lambda event: (variant, build(event))


def deep_nesting() -> Iterator[Case]:
    for depth in (32, 64, 100, 512, 1000, 5000, 100_000):
        yield _case(f"property_array_depth_{depth}", lambda e, d=depth: splice(e, "properties.model", b"[" * d + b"1" + b"]" * d))
        yield _case(
            f"property_object_depth_{depth}",
            lambda e, d=depth: splice(e, "properties.model", b'{"a":' * d + b"1" + b"}" * d),
        )
    for depth in (1000, 100_000):
        yield _case(f"whole_line_arrays_depth_{depth}", lambda _e, d=depth: b"[" * d + b"]" * d)
        yield _case(f"unclosed_arrays_depth_{depth}", lambda _e, d=depth: b"[" * d)
        yield _case(f"unknown_field_depth_{depth}", lambda e, d=depth: splice(e, "nested", b"[" * d + b"]" * d))
    yield _case("quantity_array_depth_1000", lambda e: splice(e, "quantity", b"[" * 1000 + b"1" + b"]" * 1000))
    yield _case("customer_id_object_depth_1000", lambda e: splice(e, "customer_id", b'{"a":' * 1000 + b"1" + b"}" * 1000))


def huge_tiny_numbers() -> Iterator[Case]:
    numbers = {
        "1e308": b"1e308",
        "1e309": b"1e309",
        "neg_1e309": b"-1e309",
        "1e-400": b"1e-400",
        "5e-324": b"5e-324",
        "min_normal": b"2.2250738585072014e-308",
        "int_2pow64": b"18446744073709551616",
        "int_neg_2pow63_minus_1": b"-9223372036854775809",
        "int_400_digits": b"9" * 400,
        "fraction_500_zeros": b"0." + b"0" * 500 + b"1",
        "1e1000000": b"1e1000000",
        "1e-1000000": b"1e-1000000",
    }
    for name, text in numbers.items():
        yield _case(f"property_number_{name}", lambda e, t=text: splice(e, "properties.direction", t))
    for name in ("1e308", "1e-400", "5e-324", "int_2pow64", "fraction_500_zeros", "1e1000000", "1e-1000000"):
        yield _case(f"quantity_{name}", lambda e, t=numbers[name]: splice(e, "quantity", t))
    yield _case("quantity_smallest_unit", lambda e: dumps({**e, "quantity": "0.000000001"}))
    yield _case("quantity_below_smallest_unit", lambda e: dumps({**e, "quantity": "0.0000000001"}))
    yield _case("quantity_number_below_smallest_unit", lambda e: splice(e, "quantity", b"0.0000000001"))
    yield _case("quantity_zero_with_10_decimals", lambda e: splice(e, "quantity", b"0.0000000000"))
    yield _case("schema_version_2pow64_plus_1", lambda e: splice(e, "schema_version", b"18446744073709551617"))


def exponents() -> Iterator[Case]:
    for text in (b"1e9", b"1E9", b"1e+9", b"1.5e3", b"1e0", b"0e0", b"1e-9", b"10e-1", b"1E-10", b"-0e0"):
        yield _case(f"quantity_number_{text.decode()}", lambda e, t=text: splice(e, "quantity", t))
    for string in ("1e9", "1E3", "2.5e-3"):
        yield _case(f"quantity_string_{string}", lambda e, t=string: dumps({**e, "quantity": t}))
    yield _case("credits_negative_exponent", lambda e: splice({**e, "event_type": "credits"}, "quantity", b"-1e2"))
    yield _case("property_number_1e9", lambda e: splice(e, "properties.direction", b"1e9"))
    yield _case("schema_version_1e0", lambda e: splice(e, "schema_version", b"1e0"))
    yield _case("schema_version_1_0", lambda e: splice(e, "schema_version", b"1.0"))
    yield _case("schema_version_10e-1", lambda e: splice(e, "schema_version", b"10e-1"))
    yield _case("bad_exponent_1e", lambda e: splice(e, "quantity", b"1e"))
    yield _case("bad_exponent_1e_plus", lambda e: splice(e, "quantity", b"1e+"))
    yield _case("bad_exponent_dot_e1", lambda e: splice(e, "quantity", b"1.e1"))


def nan_infinity() -> Iterator[Case]:
    for text in (b"NaN", b"Infinity", b"-Infinity", b"-NaN", b"nan", b"inf", b"+Infinity"):
        yield _case(f"quantity_{text.decode()}", lambda e, t=text: splice(e, "quantity", t))
    for string in ("NaN", "Infinity", "-Infinity", "sNaN", "-0"):
        yield _case(f"quantity_string_{string}", lambda e, t=string: dumps({**e, "quantity": t}))
    for text in (b"NaN", b"Infinity", b"-Infinity"):
        yield _case(f"property_{text.decode()}", lambda e, t=text: splice(e, "properties.direction", t))
    yield _case("schema_version_NaN", lambda e: splice(e, "schema_version", b"NaN"))
    yield _case("storage_snapshot_Infinity", lambda e: splice({**e, "event_type": "storage_snapshot"}, "quantity", b"Infinity"))


def lone_surrogates() -> Iterator[Case]:
    escapes = {
        "d800": b"\\ud800",
        "dbff": b"\\udbff",
        "dc00": b"\\udc00",
        "dfff": b"\\udfff",
        "reversed_pair": b"\\udc00\\ud800",
        "high_then_letter": b"\\ud800A",
        "high_then_bmp_escape": b"\\ud800\\u0041",
        "two_highs": b"\\ud800\\ud800",
    }
    for name, escape in escapes.items():
        for path in ("properties.model", "customer_id", "event_id"):
            yield _case(f"{path}_{name}", lambda e, p=path, x=escape: with_raw_in_string(e, p, x))
    for name in ("d800", "dfff"):
        escape = escapes[name]
        yield _case(f"event_type_{name}", lambda e, x=escape: with_raw_in_string(e, "event_type", x, "tokens", ""))
        yield _case(f"timestamp_{name}", lambda e, x=escape: with_raw_in_string(e, "timestamp", x, e["timestamp"], ""))
        yield _case(f"quantity_string_{name}", lambda e, x=escape: with_raw_in_string(e, "quantity", x, "4", "2"))
        yield _case(f"property_key_{name}", lambda e, x=escape: with_key(e, b'"k' + x + b'"', b'"v"', in_properties=True))
        yield _case(f"top_level_key_{name}", lambda e, x=escape: with_key(e, b'"k' + x + b'"', b'"v"'))
    yield _case("property_valid_pair", lambda e: with_raw_in_string(e, "properties.model", b"\\ud83d\\ude00"))
    yield _case("customer_id_valid_pair", lambda e: with_raw_in_string(e, "customer_id", b"\\ud83d\\ude00"))


#: Byte sequences that are not UTF-8.
INVALID_UTF8 = {
    "ff": b"\xff",
    "fe": b"\xfe",
    "overlong_nul": b"\xc0\x80",
    "overlong_slash": b"\xc1\xbf",
    "encoded_surrogate": b"\xed\xa0\x80",
    "above_10ffff": b"\xf4\x90\x80\x80",
    "truncated_3_byte": b"\xe2\x82",
    "lone_continuation": b"\x80",
    "five_byte": b"\xf8\x88\x80\x80\x80",
    "latin1_e9": b"caf\xe9",
}


def invalid_utf8() -> Iterator[Case]:
    for name, raw in INVALID_UTF8.items():
        yield _case(f"property_{name}", lambda e, r=raw: with_raw_in_string(e, "properties.model", r))
    for name in ("ff", "encoded_surrogate", "truncated_3_byte", "latin1_e9"):
        raw = INVALID_UTF8[name]
        for path in ("customer_id", "event_id", "event_type", "timestamp"):
            yield _case(f"{path}_{name}", lambda e, p=path, r=raw: with_raw_in_string(e, p, r, str(e[p]), ""))
        yield _case(f"key_{name}", lambda e, r=raw: with_key(e, b'"k' + r + b'"', b'"v"', in_properties=True))
        yield _case(f"between_tokens_{name}", lambda e, r=raw: dumps(e)[:-1] + r + b"}")
    yield _case("whole_line_ff", lambda _e: b"\xff\xfe\xfd")


def bom() -> Iterator[Case]:
    utf8_bom = b"\xef\xbb\xbf"
    yield _case("utf8_bom_valid_event", lambda e: utf8_bom + dumps(e))
    yield _case("utf8_bom_twice", lambda e: utf8_bom + utf8_bom + dumps(e))
    yield _case("utf8_bom_after_space", lambda e: b" " + utf8_bom + dumps(e))
    yield _case("utf8_bom_between_members", lambda e: dumps(e)[:-1] + b"," + utf8_bom + b'"region":"eu"}')
    yield _case("utf8_bom_at_end", lambda e: dumps(e) + utf8_bom)
    yield _case("utf16le_bom_event", lambda e: b"\xff\xfe" + json.dumps(e).encode("utf-16-le"))
    yield _case("utf16be_bom_event", lambda e: b"\xfe\xff" + json.dumps(e).encode("utf-16-be"))
    yield _case("utf16le_no_bom_event", lambda e: json.dumps(e).encode("utf-16-le"))
    yield _case("utf32le_bom_event", lambda e: b"\xff\xfe\x00\x00" + json.dumps(e).encode("utf-32-le"))
    yield _case("escaped_bom_customer_id", lambda e: with_raw_in_string(e, "customer_id", b"\\ufeff", "", "acme"))
    yield _case("raw_bom_customer_id", lambda e: with_raw_in_string(e, "customer_id", utf8_bom, "", "acme"))
    yield _case("raw_bom_in_property", lambda e: with_raw_in_string(e, "properties.model", utf8_bom))
    yield _case("raw_bom_in_timestamp", lambda e: with_raw_in_string(e, "timestamp", utf8_bom, "", e["timestamp"]))


def nul_control() -> Iterator[Case]:
    yield _case("raw_nul_in_property", lambda e: with_raw_in_string(e, "properties.model", b"\x00"))
    yield _case("raw_nul_between_tokens", lambda e: dumps(e)[:-1] + b"\x00}")
    yield _case("raw_nul_after_event", lambda e: dumps(e) + b"\x00")
    yield _case("nul_line", lambda _e: b"\x00")
    for code in (0x01, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x1B, 0x1F):
        yield _case(f"raw_{code:02x}_in_property", lambda e, c=code: with_raw_in_string(e, "properties.model", bytes([c])))
    yield _case("raw_tab_in_event_id", lambda e: with_raw_in_string(e, "event_id", b"\t", e["event_id"], ""))
    yield _case("raw_cr_in_customer_id", lambda e: with_raw_in_string(e, "customer_id", b"\r", "acme", ""))
    yield _case("raw_del_in_property", lambda e: with_raw_in_string(e, "properties.model", b"\x7f"))
    yield _case("raw_c1_control_in_property", lambda e: with_raw_in_string(e, "properties.model", "\u0085".encode()))
    yield _case("raw_u2028_in_property", lambda e: with_raw_in_string(e, "properties.model", "\u2028".encode()))
    yield _case("raw_u2029_in_event_id", lambda e: with_raw_in_string(e, "event_id", "\u2029".encode(), e["event_id"], ""))
    for path in ("event_id", "customer_id", "properties.model", "event_type", "timestamp", "quantity"):
        for escape in (b"\\u0000", b"\\u001f", b"\\u007f"):
            label = escape.decode().lstrip("\\")
            yield _case(f"escaped_{label}_in_{path}", lambda e, p=path, x=escape: with_raw_in_string(e, p, x, "x", ""))
    yield _case("escaped_nul_only_event_id", lambda e: splice(e, "event_id", b'"\\u0000"'))


def huge_line() -> Iterator[Case]:
    """Two 10 MB lines (the size cap), two either side of Kafka's default 1 MiB record limit."""
    yield _case("10mb_property_string", lambda e: with_raw_in_string(e, "properties.model", b"x" * 10_000_000))
    yield _case("10mb_whitespace_padding", lambda e: dumps(e)[:-1] + b" " * 10_000_000 + b"}")
    yield _case("just_below_1mib", lambda e: with_raw_in_string(e, "properties.model", b"y" * 1_040_000))
    yield _case("just_above_1mib", lambda e: with_raw_in_string(e, "properties.model", b"y" * 1_060_000))


def empty_whitespace() -> Iterator[Case]:
    for name, raw in {
        "empty": b"",
        "space": b" ",
        "tab": b"\t",
        "spaces_and_tabs": b"  \t \t  ",
        "cr": b"\r",
        "crcr": b"\r\r",
        "vertical_tab": b"\x0b",
        "form_feed": b"\x0c",
        "nbsp": "\u00a0".encode(),
        "ideographic_space": "\u3000".encode(),
        "zero_width_space": "\u200b".encode(),
    }.items():
        yield _case(f"line_{name}", lambda _e, r=raw: r)
    yield _case("event_leading_spaces", lambda e: b"   " + dumps(e))
    yield _case("event_leading_tab_trailing_spaces", lambda e: b"\t" + dumps(e) + b"   ")
    yield _case("event_trailing_cr", lambda e: dumps(e) + b"\r")
    yield _case("event_trailing_vertical_tab", lambda e: dumps(e) + b"\x0b")
    yield _case("event_trailing_nbsp", lambda e: dumps(e) + "\u00a0".encode())
    yield _case("event_whitespace_everywhere", lambda e: json.dumps(e, indent=None, separators=(" , ", " : ")).encode())


def duplicate_keys() -> Iterator[Case]:
    yield _case("quantity_twice_different", lambda e: append_member(e, b'"quantity":"7"'))
    yield _case("quantity_twice_same", lambda e: append_member(e, b'"quantity":"42"'))
    yield _case("quantity_first_invalid_last_valid", lambda e: splice(e, "quantity", b'"abc"')[:-1] + b',"quantity":"1"}')
    yield _case("quantity_first_valid_last_invalid", lambda e: append_member(e, b'"quantity":"abc"'))
    yield _case("customer_id_twice", lambda e: append_member(e, b'"customer_id":"acme"'))
    yield _case("event_id_twice", lambda e: append_member(e, dumps("event_id") + b":" + dumps(e["event_id"] + "-b")))
    yield _case("event_type_twice", lambda e: append_member(e, b'"event_type":"api_call"'))
    yield _case("event_type_twice_unknown_last", lambda e: append_member(e, b'"event_type":"teleport"'))
    yield _case("timestamp_twice_invalid_last", lambda e: append_member(e, b'"timestamp":"yesterday"'))
    yield _case(
        "timestamp_twice_valid_last",
        lambda e: splice(e, "timestamp", b'"yesterday"')[:-1] + b',"timestamp":' + dumps(e["timestamp"]) + b"}",
    )
    yield _case("properties_twice", lambda e: append_member(e, b'"properties":{"model":"large-3"}'))
    yield _case("property_key_twice", lambda e: with_key(e, b'"model"', b'"large-3"', in_properties=True))
    yield _case("schema_version_twice", lambda e: append_member(e, b'"schema_version":1,"schema_version":2'))


def key_case() -> Iterator[Case]:
    yield _case("extra_Quantity", lambda e: append_member(e, b'"Quantity":"7"'))
    yield _case("QUANTITY_instead", lambda e: dumps({("QUANTITY" if k == "quantity" else k): v for k, v in e.items()}))
    yield _case("Customer_ID_instead", lambda e: dumps({("Customer_ID" if k == "customer_id" else k): v for k, v in e.items()}))
    yield _case("extra_CUSTOMER_ID", lambda e: append_member(e, b'"CUSTOMER_ID":"acme"'))
    yield _case("Event_Type_instead", lambda e: dumps({("Event_Type" if k == "event_type" else k): v for k, v in e.items()}))
    yield _case("extra_EVENT_ID", lambda e: append_member(e, b'"EVENT_ID":"other"'))
    yield _case("Timestamp_instead", lambda e: dumps({("Timestamp" if k == "timestamp" else k): v for k, v in e.items()}))
    yield _case("Properties_instead", lambda e: dumps({("Properties" if k == "properties" else k): v for k, v in e.items()}))
    yield _case("property_Model_instead", lambda e: dumps({**e, "properties": {"Model": "small-1", "direction": "in"}}))
    yield _case("property_model_and_MODEL", lambda e: dumps({**e, "properties": {"model": "small-1", "MODEL": "large-3"}}))
    yield _case("property_Direction_and_direction", lambda e: dumps({**e, "properties": {"Direction": "out", "direction": "in"}}))


def id_whitespace() -> Iterator[Case]:
    for name, value in {
        "newline": "acme\n",
        "trailing_space": "acme ",
        "leading_space": " acme",
        "tab": "acme\t",
        "crlf": "acme\r\n",
        "nbsp": "acme\u00a0",
        "zero_width": "acme\u200b",
        "only_space": " ",
        "upper_case": "ACME",
        "fullwidth": "ａｃｍｅ",
    }.items():
        yield _case(f"customer_id_{name}", lambda e, v=value: dumps({**e, "customer_id": v}))
    for name, value in {"newline": "\n", "trailing_space": " ", "leading_space": " ", "tab": "\t"}.items():
        yield _case(
            f"event_id_{name}",
            lambda e, v=value, n=name: dumps(
                {**e, "event_id": (v + e["event_id"]) if n == "leading_space" else e["event_id"] + v}
            ),
        )
    yield _case("event_id_only_space", lambda e: dumps({**e, "event_id": " "}))
    yield _case("event_id_129_chars", lambda e: dumps({**e, "event_id": "e" * 129}))
    yield _case("event_id_128_chars", lambda e: dumps({**e, "event_id": e["event_id"] + "e" * (128 - len(e["event_id"]))}))
    for name, value in {
        "newline": "tokens\n",
        "trailing_space": "tokens ",
        "upper_case": "Tokens",
        "unknown": "teleport",
    }.items():
        yield _case(f"event_type_{name}", lambda e, v=value: dumps({**e, "event_type": v}))
    yield _case("property_value_newline", lambda e: dumps({**e, "properties": {"model": "small-1\n", "direction": "in"}}))
    yield _case("property_key_trailing_space", lambda e: dumps({**e, "properties": {"model ": "small-1", "direction": "in"}}))


def timestamps() -> Iterator[Case]:
    for text in (
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00-14:00",
        "0001-01-01T00:00:00.000000001Z",
        "0000-01-01T00:00:00Z",
        "1969-07-20T20:17:40Z",
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00-00:01",
        "1900-02-29T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:59:59+14:00",
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.5Z",
        "2025-06-30T23:59:60Z",
        "2025-06-30T23:59:60+14:00",
        "2025-07-01T12:00:00+14:00",
        "2025-07-01T12:00:00-14:00",
        "2025-07-01T12:00:00+14:01",
        "2025-07-01T12:00:00-14:01",
        "2025-07-01T12:00:00+23:59",
        "2025-07-01T12:00:00-23:59",
        "2025-07-01T12:00:00+24:00",
        "2025-07-01T12:00:00-00:00",
        "2025-07-01T12:00:00+05:45",
        "2025-07-01T12:00:00+0530",
        "2025-07-01T12:00Z",
        "2025-07-01t12:00:00z",
        "2025-07-01 12:00:00Z",
        "2025-07-01T12:00:00.1234567891Z",
        "2025-07-01T12:00:00.Z",
        "2025-02-29T00:00:00Z",
        "2024-02-29T12:00:00Z",
        "2025-04-31T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-07-01T24:00:00Z",
        "2025-07-01T23:60:00Z",
        "+2025-07-01T12:00:00Z",
        "12025-07-01T12:00:00Z",
        "٢٠٢٥-٠٧-٠١T12:00:00Z",
        "2099-01-01T00:00:00Z",
        "2999-12-31T00:00:00Z",
        "2038-01-19T03:14:08Z",
        "2262-04-11T23:47:17Z",
    ):
        yield _case(f"timestamp_{text}", lambda e, t=text: dumps({**e, "timestamp": t}))
    yield _case("timestamp_epoch_number", lambda e: splice(e, "timestamp", b"1751371200"))
    yield _case("timestamp_empty", lambda e: dumps({**e, "timestamp": ""}))


def control_string_200k() -> Iterator[Case]:
    """~200 KB strings of U+0001: escaped (valid JSON) and raw (not JSON), where they land in a dead letter."""
    escaped = b"\\u0001" * 34_000
    yield _case("escaped_in_property", lambda e: with_raw_in_string(e, "properties.model", escaped, "", ""))
    yield _case("escaped_in_unread_property", lambda e: with_raw_in_string(e, "properties.note", escaped, "", ""))
    yield _case("escaped_in_customer_id", lambda e: with_raw_in_string(e, "customer_id", escaped, "acme", ""))
    yield _case("escaped_in_event_id", lambda e: with_raw_in_string(e, "event_id", escaped, e["event_id"], ""))
    yield _case("raw_in_property", lambda e: with_raw_in_string(e, "properties.model", b"\x01" * 200_000, "", ""))
    yield _case("raw_in_event_id", lambda e: with_raw_in_string(e, "event_id", b"\x01" * 200_000, e["event_id"], ""))


def big_quantity() -> Iterator[Case]:
    forty = "1234567890" * 4
    numbers = {
        "40_digits": forty.encode(),
        "2000_digits": ("9" * 2000).encode(),
        "5000_digits": ("7" * 5000).encode(),
        "29_digits_max": b"9" * 29,
        "30_digits": b"1" + b"0" * 29,
        "29_digits_9_decimals": b"9" * 29 + b"." + b"9" * 9,
        "1e9": b"1e9",
        "1000000000": b"1000000000",
        "neg_zero": b"-0",
        "leading_zero": b"01",
        "plus": b"+1",
        "dot_5": b".5",
        "5_dot": b"5.",
        "hex": b"0x1F",
        "true": b"true",
        "null": b"null",
        "empty_array": b"[]",
        "empty_object": b"{}",
    }
    for name, text in numbers.items():
        yield _case(f"number_{name}", lambda e, t=text: splice(e, "quantity", t))
    strings = {
        "40_digits": forty,
        "2000_digits": "9" * 2000,
        "29_digits_max": "9" * 29,
        "30_digits": "1" + "0" * 29,
        "1e9": "1e9",
        "neg_zero": "-0",
        "leading_zero": "01",
        "plus": "+1",
        "leading_space": " 1",
        "trailing_space": "1 ",
        "comma": "1,5",
        "arabic_digit": "١",
        "fullwidth_digit": "１",
        "empty": "",
    }
    for name, value in strings.items():
        yield _case(f"string_{name}", lambda e, v=value: dumps({**e, "quantity": v}))
    yield _case("gpu_seconds_40_digits", lambda e: splice({**e, "event_type": "gpu_seconds"}, "quantity", forty.encode()))
    yield _case("credits_negative_40_digits", lambda e: splice({**e, "event_type": "credits"}, "quantity", b"-" + forty.encode()))
    yield _case("tokens_negative", lambda e: dumps({**e, "quantity": "-5"}))


#: Documents on the edges of RFC 8259, written for this corpus: (verdict, name, text). ``y``: valid
#: JSON, ``n``: not JSON, ``i``: valid JSON whose reading is implementation-defined.
JSON_SYNTAX: tuple[tuple[str, str, bytes], ...] = (
    ("y", "empty_object", b"{}"),
    ("y", "empty_array", b"[]"),
    ("y", "empty_string", b'""'),
    ("y", "zero", b"0"),
    ("y", "negative_zero", b"-0"),
    ("y", "true", b"true"),
    ("y", "null", b"null"),
    ("y", "string_escapes", b'"\\"\\\\\\/\\b\\f\\n\\r\\t"'),
    ("y", "string_escaped_nul", b'"\\u0000"'),
    ("y", "string_utf8_4byte", '"\U0001f600"'.encode()),
    ("y", "number_exponent_plus", b"1E+2"),
    ("y", "number_fraction_exponent", b"-1.5e-3"),
    ("y", "object_empty_key", b'{"":0}'),
    ("y", "object_escaped_key", b'{"\\u0061":1}'),
    ("y", "array_nested_empty", b"[[],[[]],{}]"),
    ("y", "whitespace_all_kinds", b' \t\r{ \t\r"a" \t\r: \t\r1 \t\r} \t\r'),
    ("n", "trailing_comma_array", b"[1,]"),
    ("n", "trailing_comma_object", b'{"a":1,}'),
    ("n", "missing_colon", b'{"a" 1}'),
    ("n", "single_quotes", b"{'a':1}"),
    ("n", "unquoted_key", b"{a:1}"),
    ("n", "leading_zero", b"[01]"),
    ("n", "leading_dot", b"[.5]"),
    ("n", "trailing_dot", b"[1.]"),
    ("n", "plus_sign", b"[+1]"),
    ("n", "hex_number", b"[0x1]"),
    ("n", "nan", b"[NaN]"),
    ("n", "infinity", b"[Infinity]"),
    ("n", "minus_only", b"[-]"),
    ("n", "exponent_without_digits", b"[1e]"),
    ("n", "comment_block", b"/* c */ {}"),
    ("n", "comment_line", b"{} // c"),
    ("n", "unclosed_string", b'"abc'),
    ("n", "unclosed_object", b'{"a":1'),
    ("n", "raw_tab_in_string", b'["a\tb"]'),
    ("n", "raw_nul_in_string", b'["a\x00b"]'),
    ("n", "bad_escape", b'["\\a"]'),
    ("n", "short_unicode_escape", b'["\\u12"]'),
    ("n", "uppercase_true", b"True"),
    ("n", "truncated_literal", b"tru"),
    ("n", "two_values", b"[1] [2]"),
    ("n", "trailing_garbage", b"{}x"),
    ("n", "comma_only", b","),
    ("n", "object_comma_only", b"{,}"),
    ("n", "array_missing_value", b"[1,,2]"),
    ("n", "key_number", b"{1:1}"),
    ("n", "key_null", b"{null:1}"),
    ("n", "vertical_tab_whitespace", b"[\x0b1]"),
    ("n", "nbsp_whitespace", "[\u00a01]".encode()),
    ("n", "string_invalid_utf8", b'["\xff"]'),
    ("n", "angle_brackets", b"<null>"),
    ("i", "number_huge_exponent", b"[1e400]"),
    ("i", "number_tiny_exponent", b"[1e-400]"),
    ("i", "number_big_integer", b"[123456789012345678901234567890]"),
    ("i", "lone_high_surrogate", b'["\\ud800"]'),
    ("i", "lone_low_surrogate", b'["\\udc00"]'),
    ("i", "duplicate_keys", b'{"a":1,"a":2}'),
    ("i", "utf8_bom", b'\xef\xbb\xbf{"a":1}'),
    ("i", "nesting_600", b"[" * 600 + b"]" * 600),
    ("i", "noncharacter_fffe", '["\ufffe"]'.encode()),
)


def unwrap(document: bytes) -> bytes:
    """The single element of a ``[X]`` document's text (how JSON test files usually hold a value), else the document."""
    stripped = document.strip(b" \t\r\n")
    if stripped.startswith(b"[") and stripped.endswith(b"]"):
        inner = stripped[1:-1].strip(b" \t\r\n")
        if inner:
            return inner
    return document


def embedded(name: str, document: bytes) -> Iterator[tuple[str, Callable[[dict[str, Any]], bytes]]]:
    """Ways to put a test document into an otherwise valid event: as a property value, and as the
    quantity (number documents) or the customer id (string documents)."""
    value = unwrap(document)
    yield f"property:{name}", lambda e: splice(e, "properties.model", value)
    if "number" in name:
        yield f"quantity:{name}", lambda e: splice(e, "quantity", value)
    if "string" in name:
        yield f"customer_id:{name}", lambda e: splice(e, "customer_id", value)


def json_syntax() -> Iterator[Case]:
    for verdict, name, text in JSON_SYNTAX:
        yield _case(f"whole:{verdict}_{name}", lambda _e, t=text: t)
        for variant, build in embedded(f"{verdict}_{name}", text):
            yield _case(variant, build)


def jsontestsuite_documents(folder: Path) -> list[tuple[str, bytes]]:
    """Each ``test_parsing`` file's name and bytes, as one line.

    A JSON-lines record cannot hold a raw newline: a file's trailing newline is dropped, and every
    other raw ``\\n`` becomes ``\\r``. Both are JSON whitespace, and both are forbidden raw inside
    a string, so the document's verdict (y/n/i) is unchanged.
    """
    documents = []
    for path in sorted(folder.glob("*.json")):
        content = path.read_bytes()
        if content.endswith(b"\n"):
            content = content[:-1]
        documents.append((path.name, content.replace(b"\n", b"\r")))
    return documents


def jsontestsuite_lines(folder: Path) -> Iterator[tuple[str, str, Case | bytes]]:
    for name, content in jsontestsuite_documents(folder):
        yield "jsontestsuite", name, content
        for variant, build in embedded(name, content):
            yield "jsontestsuite_embedded", variant, _case(variant, build)


HOSTILE_CASES: dict[str, Callable[[], Iterator[Case]]] = {
    "deep_nesting": deep_nesting,
    "huge_tiny_numbers": huge_tiny_numbers,
    "exponents": exponents,
    "nan_infinity": nan_infinity,
    "lone_surrogates": lone_surrogates,
    "invalid_utf8": invalid_utf8,
    "bom": bom,
    "nul_control": nul_control,
    "huge_line": huge_line,
    "empty_whitespace": empty_whitespace,
    "duplicate_keys": duplicate_keys,
    "key_case": key_case,
    "id_whitespace": id_whitespace,
    "timestamps": timestamps,
    "control_string_200k": control_string_200k,
    "big_quantity": big_quantity,
    "json_syntax": json_syntax,
}
#: How often each hostile case appears (each time in another event: its own id, customer and time).
#: ``huge_line`` and ``control_string_200k`` once: they are the size tests, and big.
REPEATS = {name: 3 for name in HOSTILE_CASES} | {"huge_line": 1, "control_string_200k": 1}


def find_jsontestsuite(explicit: Path | None = None, env: dict[str, str] | None = None) -> Path | None:
    """The JSONTestSuite ``test_parsing`` folder: ``explicit``, ``$METERING_JSONTESTSUITE``, or a default place."""
    environ = os.environ if env is None else env
    candidates = [explicit] if explicit is not None else []
    if environ.get(JSONTESTSUITE_ENV):
        candidates.append(Path(environ[JSONTESTSUITE_ENV]))
    if explicit is None:
        candidates.extend(JSONTESTSUITE_CANDIDATES)
    for candidate in candidates:
        if candidate is not None and candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    if explicit is not None:
        raise FileNotFoundError(f"{explicit}: not a folder of JSONTestSuite *.json files")
    return None


def generate(seed: int = DEFAULT_SEED, lines: int = DEFAULT_LINES, jsontestsuite: Path | None = None) -> list[CorpusLine]:
    """The corpus: at least ``lines`` lines (more if the hostile cases alone need more), deterministic in its arguments."""
    rng = random.Random(seed)
    hostile: list[tuple[str, str, Case | bytes]] = []
    for category, cases in HOSTILE_CASES.items():
        for repeat in range(REPEATS[category]):
            hostile.extend((category, f"{variant_index}/{repeat}", case) for variant_index, case in enumerate(cases()))
    if jsontestsuite is not None:
        hostile.extend(jsontestsuite_lines(jsontestsuite))
    rng.shuffle(hostile)
    valid_slots = max(lines - len(hostile), len(hostile))  # at least half the corpus is valid traffic
    total = valid_slots + len(hostile)
    hostile_at = set(rng.sample(range(total), len(hostile)))
    step = timedelta(days=SPAN_DAYS) / total
    out: list[CorpusLine] = []
    recent: list[dict[str, Any]] = []
    next_hostile = iter(hostile)
    valid_count = 0
    for slot in range(total):
        moment = START + step * slot + timedelta(milliseconds=rng.randrange(1000))
        if slot in hostile_at:
            category, index, case = next(next_hostile)
            if isinstance(case, bytes):
                variant, data = "whole", case
            else:
                event = base_event(f"h{slot:06d}", moment, rng.choice(CUSTOMERS))
                variant, data = case(event)
            if category not in JSONTESTSUITE_CATEGORIES:
                variant = f"{variant}#{index.split('/')[1]}"
            else:
                variant = index if isinstance(case, bytes) else variant
            out.append(CorpusLine(category, variant, data))
            continue
        valid_count += 1
        roll = rng.random()
        if recent and roll < 0.04:
            out.append(CorpusLine("valid", "exact_retry", dumps(rng.choice(recent[-50:]))))
        elif recent and roll < 0.05:
            changed = dict(rng.choice(recent[-50:]))
            changed["quantity"] = "3" if changed["event_type"] == "api_call" else "1234.5"
            out.append(CorpusLine("valid", "changed_retry", dumps(changed)))
        elif roll < 0.055:
            late = valid_event(rng, f"late-{slot:06d}", rng.choice(CUSTOMERS), moment - timedelta(days=75))
            out.append(CorpusLine("valid", "late_beyond_grace", dumps(late)))
        else:
            event = valid_event(rng, f"{slot:06d}", rng.choice(CUSTOMERS), moment)
            recent.append(event)
            out.append(CorpusLine("valid", "event", dumps(event)))
    for line in out:
        assert b"\n" not in line.data, (line.category, line.variant)
    return out


def write(path: Path, corpus: list[CorpusLine]) -> None:
    with path.open("wb") as handle:
        for line in corpus:
            handle.write(line.data + b"\n")


def summary(corpus: list[CorpusLine]) -> dict[str, int]:
    return dict(sorted(Counter(line.category for line in corpus).items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the corpus (JSON lines, bytes)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="at least this many lines")
    parser.add_argument(
        "--jsontestsuite",
        type=Path,
        help=f"JSONTestSuite test_parsing folder (default: ${JSONTESTSUITE_ENV}, else tests/corpus/jsontestsuite/test_parsing "
        "or shared/jsontestsuite/test_parsing beside the repository, if present)",
    )
    parser.add_argument("--labels", type=Path, help="also write each line's category and variant (JSON lines) here")
    args = parser.parse_args(argv)
    folder = find_jsontestsuite(args.jsontestsuite)
    corpus = generate(args.seed, args.lines, folder)
    write(args.out, corpus)
    if args.labels is not None:
        with args.labels.open("w") as handle:
            for line in corpus:
                handle.write(json.dumps({"category": line.category, "variant": line.variant}) + "\n")
    print(
        json.dumps(
            {
                "lines": len(corpus),
                "bytes": args.out.stat().st_size,
                "jsontestsuite_folder": str(folder),
                "categories": summary(corpus),
            }
        )
    )


if __name__ == "__main__":
    main()
