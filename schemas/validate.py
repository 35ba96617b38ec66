"""Parse and validate usage events (schema v1), exactly.

JSON is decoded with ``parse_float=Decimal`` so a quantity written as a JSON
number never passes through a binary float; decimal strings are accepted too.
:func:`validate_line` returns every problem at once, each as one readable
message with the field it concerns, plus a machine-readable reason code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_V1 = SCHEMA_DIR / "usage_event.v1.json"

#: Largest scale and integer digits a quantity may carry: ClickHouse Decimal(38, 9).
QUANTITY_SCALE = 9
QUANTITY_INTEGER_DIGITS = 29


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


def _schema_errors(obj: dict[str, Any]) -> list[Problem]:
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


def _message(error: Any) -> str:
    if error.validator == "pattern" and error.path and error.path[0] == "quantity":
        return (
            f"{error.instance!r} is not an exact decimal with at most {QUANTITY_INTEGER_DIGITS} integer "
            f"and {QUANTITY_SCALE} fractional digits"
        )
    if error.validator == "pattern" and error.path and error.path[0] == "timestamp":
        return f"{error.instance!r} is not an RFC 3339 timestamp with an offset (e.g. 2026-03-01T12:00:00Z)"
    return str(error.message)


_FRACTION = re.compile(r"\.(\d+)")


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 with offset → aware datetime (fractions beyond microseconds are truncated)."""
    text = text.replace("t", "T").replace("z", "Z").replace(" ", "T")
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no offset")
    return parsed


def _quantity(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidOperation("boolean")
    return Decimal(str(value)) if isinstance(value, int) else Decimal(value)


def validate_object(obj: Any) -> Validation:
    """Validate an already decoded JSON value (decoded with ``parse_float=Decimal``)."""
    if not isinstance(obj, dict):
        return Validation(None, (Problem("not_an_object", "", f"an event is a JSON object, got {type(obj).__name__}"),))
    problems = _schema_errors(obj)
    # Checks JSON Schema cannot express: numbers' exact form, a real calendar date.
    quantity = obj.get("quantity")
    if isinstance(quantity, (int, Decimal)) and not isinstance(quantity, bool):
        as_text = format(Decimal(quantity), "f") if isinstance(quantity, Decimal) else str(quantity)
        exponent = Decimal(as_text).as_tuple().exponent
        digits = len(Decimal(as_text).as_tuple().digits)
        if isinstance(exponent, int) and (-exponent > QUANTITY_SCALE or digits + min(exponent, 0) > QUANTITY_INTEGER_DIGITS):
            problems.append(
                Problem(
                    "bad_quantity",
                    "quantity",
                    f"{as_text} exceeds {QUANTITY_INTEGER_DIGITS} integer / {QUANTITY_SCALE} fractional digits",
                )
            )
    elif isinstance(quantity, float):  # only if the caller decoded without parse_float=Decimal
        problems.append(Problem("bad_quantity", "quantity", "decoded as a binary float; decode JSON with parse_float=Decimal"))
    timestamp = obj.get("timestamp")
    parsed_time: datetime | None = None
    if isinstance(timestamp, str) and not any(p.path == "timestamp" for p in problems):
        try:
            parsed_time = parse_timestamp(timestamp)
        except ValueError as exc:
            problems.append(Problem("bad_timestamp", "timestamp", f"{timestamp!r} is not a valid date-time: {exc}"))
    if problems:
        return Validation(None, tuple(problems))
    assert parsed_time is not None
    event = UsageEvent(
        event_id=obj["event_id"],
        customer_id=obj["customer_id"],
        event_type=obj["event_type"],
        timestamp=parsed_time,
        quantity=_quantity(obj["quantity"]),
        properties=dict(obj.get("properties") or {}),
        resource=obj.get("resource", ""),
        user_id=obj.get("user_id", ""),
        region=obj.get("region", ""),
        source=obj.get("source", ""),
        schema_version=int(obj.get("schema_version", 1)),
    )
    return Validation(event, ())


def decode(line: str | bytes) -> Any:
    """Decode one JSON document keeping every number exact (no binary floats)."""
    return json.loads(line, parse_float=Decimal)


def validate_line(line: str | bytes) -> Validation:
    """Decode and validate one JSON line; malformed JSON is a problem, never an exception."""
    try:
        obj = decode(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return Validation(None, (Problem("malformed_json", "", f"not valid JSON: {exc}"),))
    return validate_object(obj)
