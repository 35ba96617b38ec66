"""Parse and validate usage events (schema v1), exactly: the one definition of a valid event.

A line is judged in this order, and every place that judges events (the job's Java functions,
``metering produce``, the loader) follows it; tests/unit/test_event_agreement.py feeds the same
lines to this module and to the job's functions and fails on any difference:

1. **size**: at most :data:`MAX_EVENT_BYTES` bytes (``too_large``), checked before anything else;
2. **the JSON profile** (``malformed_json``): one JSON text in strict UTF-8 without a byte-order
   mark, no duplicate names in an object, no lone surrogate (``"\\ud800"``) in any string,
   nesting at most :data:`MAX_DEPTH` deep, numbers at most :data:`MAX_NUMBER_CHARS` characters
   (exponents at most :data:`MAX_EXPONENT_DIGITS` digits),
   no ``NaN``/``Infinity``: what RFC 8259 leaves to implementations is refused, so no two parsers
   can read one line differently;
3. **the schema** (``usage_event.v1.json``) and what it cannot express: a quantity's text as
   written (no exponent, at most 29 + 9 digits), a real calendar instant between
   :data:`TIME_MIN` and :data:`TIME_MAX`, ``schema_version`` written ``1``.

JSON is decoded with numbers kept exact (:class:`JsonNumber`, never a binary float).
:func:`validate_line` returns every problem at once, each with its field, a message and a
machine-readable reason code; :attr:`Validation.reason` is the one reason the job reports (the
first in :data:`REASONS`).

Why one module: it is the reference definition of a valid event, rule by rule in the order they
apply, that the JVM's copy is held to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from schemas.amendments import VERDICT as AMENDMENT_VERDICT
from schemas.amendments import is_amendment
from schemas.amendments import judge as judge_amendment
from schemas.records import RAW_EVENT

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_V1 = SCHEMA_DIR / "usage_event.v1.json"

#: Largest scale and integer digits a quantity may carry: ClickHouse Decimal(38, 9).
QUANTITY_SCALE = 9
QUANTITY_INTEGER_DIGITS = 29
#: A line (one Kafka record) longer than this is refused unread (``too_large``).
MAX_EVENT_BYTES = 64 * 1024
#: Deepest nesting of arrays and objects (an event needs 2: the event and its ``properties``).
MAX_DEPTH = 32
#: Longest JSON number, as written (sign, digits, point and exponent), and most exponent digits.
MAX_NUMBER_CHARS = 64
MAX_EXPONENT_DIGITS = 4
#: Event times from TIME_MIN (inclusive) to TIME_MAX (exclusive), UTC.
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)

#: Every reason a line can be refused for, in the order the job reports them (the first that
#: applies). ``unknown_meter`` and ``future_timestamp`` depend on the job's configuration and the
#: time Kafka received the record (:func:`job_reason`).
REASONS = (
    "too_large",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "unknown_field",
    "bad_schema_version",
    "bad_event_id",
    "bad_customer_id",
    "bad_event_type",
    "bad_timestamp",
    "bad_quantity",
    "bad_properties",
    "bad_resource",
    "bad_user_id",
    "bad_region",
    "bad_source",
    "bad_amendment",
    "unknown_meter",
    "future_timestamp",
)


class JsonNumber(Decimal):
    """A JSON number with a fraction or an exponent: its exact value, and its ``text`` as written."""

    text: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an event: a stable reason code, the field path and a message."""

    reason: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class UsageEvent:
    """A valid event, with the quantity as an exact Decimal and the time as an aware datetime."""

    event_id: str
    customer_id: str
    event_type: str
    timestamp: datetime
    quantity: Decimal
    properties: dict[str, Any] = field(default_factory=dict)
    resource: str = ""
    user_id: str = ""
    region: str = ""
    source: str = ""
    schema_version: int = 1


@dataclass(frozen=True)
class Validation:
    event: UsageEvent | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str | None:
        """The reason the job reports for this line: the first of :data:`REASONS` among the problems."""
        if not self.problems:
            return None
        return min((p.reason for p in self.problems), key=_reason_rank)


def _reason_rank(reason: str) -> int:
    return REASONS.index(reason) if reason in REASONS else len(REASONS)


@lru_cache(maxsize=1)
def schema_v1() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_V1.read_text())
    return loaded


@dataclass(frozen=True)
class StringRule:
    """What the schema allows in one string field: its ``pattern`` and length bounds.

    For values matched against events' fields elsewhere (a configured customer id, event type,
    property name): one rule, read from the schema, so configuration and events cannot disagree.
    """

    name: str
    pattern: str
    max_length: int | None = None
    min_length: int = 1

    def problem(self, value: str) -> str | None:
        """Why ``value`` can never be this field's value, or None. The whole value must match."""
        if not self.min_length <= len(value) <= (self.max_length or len(value)):
            limit = f"{self.min_length}–{self.max_length}" if self.max_length else f"at least {self.min_length}"
            return f"{value!r} is not a valid {self.name}: {limit} characters ({SCHEMA_V1.parent.name}/{SCHEMA_V1.name})"
        if re.fullmatch(self.pattern, value) is None:
            return f"{value!r} is not a valid {self.name}: must match {self.pattern} ({SCHEMA_V1.parent.name}/{SCHEMA_V1.name})"
        return None


@cache
def string_rule(field_name: str) -> StringRule:
    """The rule of a top-level string field of events (``customer_id``, ``event_type``)."""
    spec = schema_v1()["properties"][field_name]
    return StringRule(field_name, spec["pattern"], spec.get("maxLength"), spec.get("minLength", 1))


@lru_cache(maxsize=1)
def property_name_rule() -> StringRule:
    """The rule of a key of an event's ``properties`` (``propertyNames``; its length is in the pattern)."""
    return StringRule("property name", schema_v1()["properties"]["properties"]["propertyNames"]["pattern"])


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema_v1())


@lru_cache(maxsize=1)
def _fast_check() -> Any:
    """The same schema compiled to Python (fastjsonschema): a quick yes for the common valid case.

    Anything it does not accept goes through the full validator, which reports every problem; so
    messages and reason codes always come from ``jsonschema`` (tests/unit/test_schema.py checks
    that both agree on the corpus and on generated events).
    """
    import fastjsonschema

    schema = dict(schema_v1())
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"  # only keywords common to both drafts are used
    return fastjsonschema.compile(schema)


#: The common case, checked by hand (:func:`_plainly_valid`): each field's pattern as in the schema,
#: its length bound folded in (``{0,n-1}`` after the first character).
_PLAIN_EVENT_ID = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_PLAIN_CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_PLAIN_EVENT_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_PLAIN_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_PLAIN_OPTIONAL = {"resource": 256, "user_id": 128, "region": 64, "source": 128}
_PLAIN_REQUIRED = ("event_id", "customer_id", "event_type", "timestamp", "quantity")
_PLAIN_FIELDS = frozenset((*_PLAIN_REQUIRED, "properties", "schema_version", *_PLAIN_OPTIONAL))
_PLAIN_SCALARS = (str, int, JsonNumber, type(None))  # bool is an int
#: Customer ids, event types and property names that matched their pattern lately: a few of each
#: recur in nearly every event. Bounded (emptied when full); a race between threads only checks again.
_SEEN_CUSTOMER_IDS: set[str] = set()
_SEEN_EVENT_TYPES: set[str] = set()
_SEEN_PROPERTY_NAMES: set[str] = set()
_SEEN_MAX = 4096


def _matches(pattern: re.Pattern[str], value: str, seen: set[str]) -> bool:
    """``pattern.fullmatch(value)``, remembered in ``seen`` when it matches."""
    if pattern.fullmatch(value) is None:
        return False
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen.add(value)
    return True


def _plainly_valid(obj: dict[str, Any]) -> bool:
    """True only when ``obj`` certainly meets the schema, checked by hand for the shape nearly every
    event has (~2 µs instead of the compiled validator's ~5); False means "not sure": the full check
    decides. ``schema_version`` other than a plain ``1`` always goes to the full check.

    tests/unit/test_schema.py holds it to the full validator (a property test: whenever this says
    True, ``jsonschema`` finds no problem) and the hostile corpus keeps every verdict as it was.
    """
    if not obj.keys() <= _PLAIN_FIELDS:
        return False
    try:
        event_id, customer_id, event_type, timestamp, quantity = (obj[name] for name in _PLAIN_REQUIRED)
    except KeyError:
        return False
    if not (
        type(event_id) is str
        and type(customer_id) is str
        and type(event_type) is str
        and type(timestamp) is str
        and _PLAIN_EVENT_ID.fullmatch(event_id)
        and (customer_id in _SEEN_CUSTOMER_IDS or _matches(_PLAIN_CUSTOMER_ID, customer_id, _SEEN_CUSTOMER_IDS))
        and (event_type in _SEEN_EVENT_TYPES or _matches(_PLAIN_EVENT_TYPE, event_type, _SEEN_EVENT_TYPES))
        and _TIMESTAMP.fullmatch(timestamp)
    ):
        return False
    kind = type(quantity)
    if not ((kind is str and _QUANTITY.fullmatch(quantity)) or kind is int or kind is JsonNumber):
        return False
    if len(obj) == 5:
        return True
    if "schema_version" in obj and not (type(obj["schema_version"]) is int and obj["schema_version"] == 1):
        return False
    properties = obj.get("properties")
    if properties is not None or "properties" in obj:
        if type(properties) is not dict or len(properties) > 64:
            return False
        for name, value in properties.items():
            if not isinstance(value, _PLAIN_SCALARS) or not (
                name in _SEEN_PROPERTY_NAMES or _matches(_PLAIN_PROPERTY_NAME, name, _SEEN_PROPERTY_NAMES)
            ):
                return False
    for name, longest in _PLAIN_OPTIONAL.items():
        if name in obj:
            value = obj[name]
            if type(value) is not str or len(value) > longest:
                return False
    return True


def _schema_errors(obj: dict[str, Any]) -> list[Problem]:
    if _plainly_valid(obj):
        return []
    try:
        _fast_check()(obj)
        return []
    except Exception:  # JsonSchemaException, or a type it does not know (Decimal): full validation
        return [Problem(_reason(e), _path(e.absolute_path), _message(e)) for e in _validator().iter_errors(obj)]


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _reason(error: Any) -> str:
    field_name = str(error.path[0]) if error.path else ""
    if error.validator == "required":
        return "missing_field"
    if error.validator == "additionalProperties" and not error.path:
        return "unknown_field"
    if field_name == "timestamp":
        return "bad_timestamp"
    if field_name == "quantity":
        return "bad_quantity"
    return f"bad_{field_name}" if field_name else "schema_violation"


#: What each field's ``pattern`` in the schema means, for messages.
_PATTERN_RULES = {
    "event_id": "must hold no control character (U+0000 to U+001F, U+007F)",
    "customer_id": "must be a letter or digit followed by letters, digits and . _ : @ - (nothing else, no spaces or newlines)",
    "event_type": "must be a lowercase letter or digit followed by lowercase letters, digits and _ . -",
    "timestamp": "is not an RFC 3339 timestamp with an offset (e.g. 2026-03-01T12:00:00Z)",
    "quantity": (
        f"is not an exact decimal written without an exponent, with at most {QUANTITY_INTEGER_DIGITS} integer "
        f"and {QUANTITY_SCALE} fractional digits"
    ),
    "properties": "is not a property name: a letter or _ followed by up to 63 letters, digits and _ . -",
}


def _message(error: Any) -> str:
    if error.validator == "pattern" and error.path and error.path[0] in _PATTERN_RULES:
        return f"{error.instance!r} {_PATTERN_RULES[error.path[0]]}"
    if error.validator == "propertyNames" or (error.validator == "pattern" and error.path and error.path[0] == "properties"):
        return f"{error.instance!r}: {_PATTERN_RULES['properties']}"
    return str(error.message)


#: The schema's timestamp pattern, ASCII digits only and anchored at both ends.
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))", re.ASCII
)
#: The schema's quantity pattern, applied to a quantity's text as written (string or number).
_QUANTITY = re.compile(r"-?(0|[1-9][0-9]{0,28})(\.[0-9]{1,9})?", re.ASCII)


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 with offset → aware datetime (fractions beyond microseconds are truncated).

    Raises ValueError for anything else: another shape, a date that does not exist (30 February,
    a leap second ``23:59:60``), an offset beyond 23:59.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError("not of the form YYYY-MM-DDThh:mm:ss[.fraction](Z|+hh:mm|-hh:mm)")
    if match[8] == "Z" and text[10] == "T":
        # The common shape (…T…Z): datetime's C parser reads it as the code below does (the same
        # truncated microseconds, the same UTC), ~30x faster; what it refuses is refused below with
        # this function's own message (tests/unit/test_schema.py compares both on generated texts).
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return _from_match(match)


def _from_match(match: re.Match[str]) -> datetime:
    """:func:`parse_timestamp` of a text that matched :data:`_TIMESTAMP`, field by field."""
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    micros = int((fraction or "").ljust(6, "0")[:6])
    if zulu:
        zone = UTC
    else:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise ValueError(f"offset {sign}{offset_hours}:{offset_minutes} is beyond 23:59")
        zone = _offset(sign, offset_hours, offset_minutes)
    return datetime(year, month, day, hour, minute, second, micros, zone)  # ValueError for dates that do not exist


@lru_cache(maxsize=256)
def _offset(sign: str, hours: str, minutes: str) -> timezone:
    """The fixed zone of ``±hh:mm`` (``timezone.utc`` itself for +00:00 and -00:00, as ``fromisoformat`` gives)."""
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


def event_time(text: str) -> datetime:
    """:func:`parse_timestamp`, also refusing instants outside [:data:`TIME_MIN`, :data:`TIME_MAX`)."""
    parsed = parse_timestamp(text)
    if not TIME_MIN <= parsed < TIME_MAX:
        raise ValueError(f"outside {TIME_MIN:%Y-%m-%dT%H:%M:%SZ} (inclusive) to {TIME_MAX:%Y-%m-%dT%H:%M:%SZ} (exclusive)")
    return parsed


def _number_text(value: Any) -> str | None:
    """A JSON number's text as written (an integer's canonical text equals it, up to ``-0``), else None."""
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def validate_object(obj: Any) -> Validation:
    """Validate a JSON value decoded by :func:`decode` (numbers as ``int`` and :class:`JsonNumber`)."""
    if not isinstance(obj, dict):
        return Validation(None, (Problem("not_an_object", "", f"an event is a JSON object, got {type(obj).__name__}"),))
    problems = _schema_errors(obj)
    # Checks JSON Schema cannot express: numbers' written form, a real calendar instant in range.
    quantity = obj.get("quantity")
    as_written = _number_text(quantity)
    if as_written is not None and _QUANTITY.fullmatch(as_written) is None:
        problems.append(
            Problem(
                "bad_quantity",
                "quantity",
                f"{as_written} is not an exact decimal written without an exponent, with at most "
                f"{QUANTITY_INTEGER_DIGITS} integer and {QUANTITY_SCALE} fractional digits",
            )
        )
    elif isinstance(quantity, float):  # only if the caller decoded with json.loads' defaults
        problems.append(
            Problem("bad_quantity", "quantity", "decoded as a binary float; decode JSON with schemas.validate.decode")
        )
    if (
        "schema_version" in obj
        and _number_text(obj["schema_version"]) != "1"
        and not any(p.path == "schema_version" for p in problems)
    ):
        problems.append(Problem("bad_schema_version", "schema_version", "must be the JSON integer 1"))
    timestamp = obj.get("timestamp")
    parsed_time: datetime | None = None
    if isinstance(timestamp, str) and not any(p.path == "timestamp" for p in problems):
        try:
            parsed_time = event_time(timestamp)
        except ValueError as exc:
            problems.append(Problem("bad_timestamp", "timestamp", f"{timestamp!r} is not a valid event time: {exc}"))
    if problems:
        return Validation(None, tuple(problems))
    assert parsed_time is not None
    event = _usage_event(
        event_id=obj["event_id"],
        customer_id=obj["customer_id"],
        event_type=obj["event_type"],
        timestamp=parsed_time,
        quantity=Decimal(as_written if as_written is not None else str(quantity)),
        properties=dict(obj.get("properties") or {}),
        resource=obj.get("resource", ""),
        user_id=obj.get("user_id", ""),
        region=obj.get("region", ""),
        source=obj.get("source", ""),
        schema_version=1,
    )
    return Validation(event, ())


def _usage_event(**fields: Any) -> UsageEvent:
    """``UsageEvent(**fields)`` given every field, without the frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field: ~2 µs of the ingestion API's ~20 per event). Its instances are
    the same: equal, frozen, hashable as before (tests/unit/test_schema.py)."""
    event = object.__new__(UsageEvent)
    event.__dict__.update(fields)
    return event


class ProfileError(ValueError):
    """Valid JSON, maybe, but outside the profile every judge of events reads the same way."""


_EXPONENT = re.compile(r"[eE][+-]?([0-9]*)")


def _parse_float(text: str) -> JsonNumber:
    if len(text) > MAX_NUMBER_CHARS:
        raise ProfileError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    exponent = _EXPONENT.search(text)
    if exponent is not None and len(exponent.group(1)) > MAX_EXPONENT_DIGITS:
        raise ProfileError(f"an exponent of {len(exponent.group(1))} digits (at most {MAX_EXPONENT_DIGITS})")
    number = JsonNumber(text)
    number.text = text
    return number


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ProfileError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise ProfileError(f"{name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ProfileError(f"the name {duplicate!r} occurs twice in one object")
    return result


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``value`` (iterative: any depth)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


#: A ``\u`` escape of a surrogate: only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


#: One decoder for every line (``json.loads`` with hooks builds a decoder and its scanner per call).
_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant, object_pairs_hook=_object
)


def decode(line: str | bytes) -> Any:
    """Decode one JSON text under the profile (module docstring, step 2); raises ValueError outside it.

    Numbers stay exact: integers as ``int``, others as :class:`JsonNumber` (a Decimal with its
    text). ``str`` input is taken as the text the bytes' strict UTF-8 decoding would give.
    """
    if isinstance(line, bytes):
        if line.startswith(b"\xef\xbb\xbf"):
            raise ProfileError("a UTF-8 byte-order mark")
        text = line.decode("utf-8")  # strict: invalid UTF-8, encoded surrogates and overlongs raise
    else:
        text = line
        if text.startswith("\ufeff"):
            raise ProfileError("a UTF-8 byte-order mark")
        text.encode("utf-8")  # a lone surrogate in the text itself raises
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ProfileError(f"nested more than {MAX_DEPTH} deep") from None
    return _within_profile(text, value)


def decode_at(text: str, position: int) -> tuple[Any, int]:
    """(value, end) of the JSON value starting at ``text[position]`` (no white space before it): the
    value :func:`decode` gives for ``text[position:end]``, or the ValueError it raises.

    For a text already decoded from bytes (the ingestion API's JSON array): its elements are then
    read once, not once to find where each ends and again to judge it.
    """
    try:
        value, end = _DECODER.raw_decode(text, position)
    except RecursionError:
        raise ProfileError(f"nested more than {MAX_DEPTH} deep") from None
    return _within_profile(text[position:end], value), end


def _within_profile(text: str, value: Any) -> Any:
    """``value``, decoded from ``text``, if it keeps the profile's nesting and surrogate rules; else ProfileError."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise ProfileError(f"nested more than {MAX_DEPTH} deep")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            raise ProfileError("a string holds a lone surrogate") from None
    return value


#: ``decoded`` of :func:`validate_line` when the caller has not decoded the line.
NOT_DECODED: Any = object()


def validate_line(line: str | bytes, decoded: Any = NOT_DECODED) -> Validation:
    """Decode and validate one line (one Kafka record); any line gives a verdict, never an exception.

    ``decoded``: what :func:`decode` (or :func:`decode_at`) gave for exactly this line, when the
    caller has it already; the line is then not decoded again (its size is still checked first).
    """
    size = len(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass"))
    if size > MAX_EVENT_BYTES:
        return Validation(None, (Problem("too_large", "", f"{size} bytes; an event is at most {MAX_EVENT_BYTES}"),))
    if decoded is not NOT_DECODED:
        return validate_object(decoded)
    try:
        obj = decode(line)
    except (ValueError, UnicodeError) as exc:  # JSONDecodeError and ProfileError are ValueErrors
        return Validation(None, (Problem("malformed_json", "", f"not valid JSON: {exc}"),))
    return validate_object(obj)


#: The columns of ClickHouse's ``raw_events`` (clickhouse/migrations/0001_raw_events.sql), in the
#: order the loader names them: a valid event's row, as the job writes it to the raw topic (one
#: JSON line, ``udfs/jvm`` EventRules.rawRow) and as :func:`raw_event_row` defines it.
RAW_EVENT_COLUMNS = RAW_EVENT.names


def raw_event_row(line: bytes, topic: str, partition: int, offset: int, received_ms: int) -> dict[str, Any] | None:
    """The ``raw_events`` row of a valid event read at those Kafka coordinates; None for any other record.

    The reference the job's raw lines are held to (tests/unit/test_event_agreement.py): the event
    time in epoch milliseconds, the quantity as an exact Decimal, each property as the job reads it
    (:func:`property_text`, null as ''), the record's bytes as they are.
    """
    event = validate_line(line).event
    if event is None:
        return None
    row: dict[str, Any] = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "event_type": event.event_type,
        "event_time": _epoch_millis(event.timestamp),
        "quantity": event.quantity,
        "properties": {name: property_text(value) or "" for name, value in event.properties.items()},
        "resource": event.resource,
        "user_id": event.user_id,
        "region": event.region,
        "source": event.source,
        "schema_version": event.schema_version,
        "status": "received",
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "received_at": received_ms,
        "payload": line,
    }
    assert tuple(row) == RAW_EVENT_COLUMNS
    return row


def raw_event_line(
    line: bytes, *, topic: str = "usage-events", partition: int = 0, offset: int = 0, received_ms: int = 1_767_225_600_000
) -> tuple[bytes, bytes] | None:
    """The raw topic's record ``(key, value)`` for an events-topic ``line``, from :func:`raw_event_row`; None for no valid event.

    What the job writes (``udfs/jvm`` EventRules.rawRow), in the reference's JSON: the loader's
    tests and benchmarks load it without running the job. Times are UTC text (``YYYY-MM-DD
    hh:mm:ss.mmm``), the key the event time in epoch milliseconds.
    """
    row = raw_event_row(line, topic, partition, offset, received_ms)
    if row is None:
        return None
    value = row | {
        "event_time": _utc_text(row["event_time"]),
        "quantity": str(row["quantity"]),
        "received_at": _utc_text(received_ms),
        "payload": line.decode("utf-8"),
    }
    return str(row["event_time"]).encode(), json.dumps(value, ensure_ascii=False).encode()


def _utc_text(millis: int) -> str:
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    return instant.strftime("%Y-%m-%d %H:%M:%S.") + f"{millis % 1000:03d}"


def _epoch_millis(instant: datetime) -> int:
    delta = instant - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


#: The field that marks a heartbeat (jobs/loader/heartbeat.py).
HEARTBEAT_FIELD = "heartbeat"


def is_heartbeat(document: Any) -> bool:
    """Whether a decoded record is a heartbeat: ``heartbeat`` is ``true`` (or ``"true"``) and ``event_id`` is absent or null.

    A record carrying an event id is an event whatever else it holds, so no event can be
    swallowed as a heartbeat.
    """
    if not isinstance(document, dict):
        return False
    marker = document.get(HEARTBEAT_FIELD)
    return (marker is True or marker == "true") and document.get("event_id") is None


def record_verdict(line: bytes | str) -> str | None:
    """The verdict on one record of the events topic, as the job reads it before its configuration.

    None for a valid event, ``"heartbeat"`` for a heartbeat with a valid timestamp, ``"amendment"``
    for a valid amendment (schemas/amendments.py), otherwise the reason (:attr:`Validation.reason`;
    a heartbeat's ``missing_field`` or ``bad_timestamp``; an amendment's own order of reasons).
    """
    validation = validate_line(line)
    if validation.ok or validation.reason in ("too_large", "malformed_json", "not_an_object"):
        return validation.reason
    document = decode(line)
    if is_amendment(document):
        reason, _, _ = judge_amendment(document)
        return reason or AMENDMENT_VERDICT
    if not is_heartbeat(document):
        return validation.reason
    timestamp = document.get("timestamp")
    if timestamp is None:
        return "missing_field"
    try:
        event_time(timestamp if isinstance(timestamp, str) else "")
    except ValueError:
        return "bad_timestamp"
    return "heartbeat"


def job_verdict(
    line: bytes | str, *, event_types: Set[str], received: datetime, future_skew: timedelta, decoded: Any = NOT_DECODED
) -> tuple[str | None, Validation]:
    """:func:`job_reason` with the line's :class:`Validation`, reading a valid event's line once (the ingestion API's path;
    ``decoded`` as :func:`validate_line` takes it)."""
    validation = validate_line(line, decoded)
    if validation.event is None:
        return job_reason(line, event_types=event_types, received=received, future_skew=future_skew), validation
    if validation.event.event_type not in event_types:
        return "unknown_meter", validation
    if validation.event.timestamp > received + future_skew:
        return "future_timestamp", validation
    return None, validation


def job_reason(line: bytes | str, *, event_types: Set[str], received: datetime, future_skew: timedelta) -> str | None:
    """The dead-letter reason the job gives a record (None: accepted; ``"heartbeat"``: read for the watermark only).

    :func:`record_verdict`, then what depends on the job's configuration and on when Kafka received
    the record: ``unknown_meter`` (no meter reads the event's type), ``future_timestamp`` (the event
    time is more than ``future_skew`` after ``received``; heartbeats too).
    """
    verdict = record_verdict(line)
    if verdict is not None and verdict != "heartbeat":
        return verdict  # an amendment's verdict depends on no configuration
    document = decode(line)
    if verdict is None and document["event_type"] not in event_types:
        return "unknown_meter"
    if event_time(document["timestamp"]) > received + future_skew:
        return "future_timestamp"
    return verdict


def property_text(value: Any) -> str | None:
    """A decoded property value as the job reads it: a string as is, a number as written, true/false, None for null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number_text(value) or str(value)
