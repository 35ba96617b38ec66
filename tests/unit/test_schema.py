"""Schema v1: the example corpus, exact decimals, timestamps and one message per problem."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.validate import SCHEMA_DIR, parse_timestamp, validate_line, validate_object

EXAMPLES = SCHEMA_DIR / "examples" / "v1"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))


def base_event(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e-1",
        "customer_id": "acme",
        "event_type": "api_call",
        "timestamp": "2026-03-01T12:00:00Z",
        "quantity": "1",
    }
    event.update(overrides)
    return event


def test_corpus_is_not_empty() -> None:
    assert len(VALID) >= 5 and len(INVALID) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_examples_parse(path: Path) -> None:
    result = validate_line(path.read_bytes())
    assert result.ok, [str(p) for p in result.problems]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_examples_are_rejected_with_their_reason(path: Path) -> None:
    expected_reason = path.stem.split("__")[0]
    result = validate_line(path.read_bytes())
    assert not result.ok
    assert expected_reason in {p.reason for p in result.problems}, [f"{p.reason}: {p}" for p in result.problems]


def test_every_problem_is_reported_at_once() -> None:
    line = json.dumps(base_event(event_id="", customer_id="a b", timestamp="yesterday", quantity="1e5", extra=1))
    reasons = sorted(p.reason for p in validate_line(line).problems)
    assert reasons == ["bad_customer_id", "bad_event_id", "bad_quantity", "bad_timestamp", "unknown_field"]


def test_problem_messages_name_the_field() -> None:
    (problem,) = validate_line(json.dumps(base_event(quantity="ten"))).problems
    assert str(problem).startswith("quantity: 'ten'")


def test_json_number_quantity_is_not_a_float() -> None:
    event = validate_line(
        '{"event_id":"e","customer_id":"c","event_type":"a","timestamp":"2026-01-01T00:00:00Z","quantity":0.1}'
    ).event
    assert event is not None
    assert event.quantity == Decimal("0.1") and isinstance(event.quantity, Decimal)


def test_float_decoded_input_is_refused() -> None:
    assert "bad_quantity" in {p.reason for p in validate_object(base_event(quantity=0.1)).problems}


decimal_text = st.decimals(
    min_value=Decimal("-99999999999999999999999999999.999999999"),
    max_value=Decimal("99999999999999999999999999999.999999999"),
    places=9,
    allow_nan=False,
    allow_infinity=False,
)


@given(decimal_text, st.booleans())
def test_any_decimal_in_range_round_trips_exactly(value: Decimal, as_string: bool) -> None:
    text = format(value, "f")
    quantity = json.dumps(text) if as_string else text
    line = f'{{"event_id":"e","customer_id":"c","event_type":"a","timestamp":"2026-01-01T00:00:00Z","quantity":{quantity}}}'
    result = validate_line(line)
    assert result.ok, [str(p) for p in result.problems]
    assert result.event is not None and result.event.quantity == value


@given(st.integers(min_value=10, max_value=15))
def test_more_than_nine_fraction_digits_are_rejected(places: int) -> None:
    text = "0." + "0" * (places - 1) + "1"
    assert not validate_line(json.dumps(base_event(quantity=text))).ok


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
    st.integers(min_value=-14 * 4, max_value=14 * 4),
)
def test_rfc3339_with_any_quarter_hour_offset_parses_to_the_same_instant(moment: datetime, quarters: int) -> None:
    zone = timezone(timedelta(minutes=15 * quarters))
    local = moment.astimezone(zone)
    text = local.isoformat()
    assert parse_timestamp(text) == moment


def test_nanosecond_fraction_is_truncated_not_rounded() -> None:
    assert parse_timestamp("2026-03-01T12:00:00.999999999+05:30").microsecond == 999999


def test_timestamp_without_offset_is_rejected() -> None:
    assert "bad_timestamp" in {p.reason for p in validate_line(json.dumps(base_event(timestamp="2026-03-01T12:00:00"))).problems}


@given(
    st.fixed_dictionaries(
        {
            "event_id": st.text(max_size=3),
            "customer_id": st.sampled_from(["acme", "a b", "", "x" * 130]),
            "event_type": st.sampled_from(["api_call", "API", "a" * 70]),
            "timestamp": st.sampled_from(["2026-03-01T12:00:00Z", "2026-03-01T12:00:00", "nope", 5]),
            "quantity": st.one_of(st.sampled_from(["1", "0.5", "1e3", "-2", True, None]), st.integers(-5, 5)),
        },
        optional={
            "properties": st.one_of(
                st.dictionaries(
                    st.sampled_from(["a", "b c", "_x"]),
                    st.one_of(st.integers(), st.text(max_size=2), st.none(), st.lists(st.integers(), max_size=1)),
                    max_size=2,
                ),
                st.integers(),
            ),
            "schema_version": st.sampled_from([1, 2, "1"]),
            "region": st.one_of(st.text(max_size=2), st.integers()),
            "extra": st.integers(),
        },
    )
)
def test_fast_path_and_full_validator_agree(obj: dict[str, object]) -> None:
    from jsonschema import Draft202012Validator

    from schemas.validate import _schema_errors, schema_v1

    full = list(Draft202012Validator(schema_v1()).iter_errors(obj))
    assert (not _schema_errors(obj)) == (not full)


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)),
    st.sampled_from(["", ".5", ".123", ".123456", ".1234567", ".123456789"]),
    st.sampled_from("Tt "),
    st.one_of(
        st.sampled_from(["Z", "z", "+00:00", "-00:00"]), st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59))
    ),
)
def test_timestamps_parse_as_fromisoformat_reads_them(naive: datetime, fraction: str, separator: str, zone: Any) -> None:
    """parse_timestamp builds its zone directly; the result is what fromisoformat made of the same text before."""
    offset = (
        "+00:00"
        if isinstance(zone, str) and zone in "Zz"
        else zone
        if isinstance(zone, str)
        else f"{zone[0]}{zone[1]:02d}:{zone[2]:02d}"
    )
    text = naive.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + fraction + (zone if isinstance(zone, str) else offset)
    micros = int(fraction[1:].ljust(6, "0")[:6]) if fraction else 0
    expected = datetime.fromisoformat(naive.replace(microsecond=micros).isoformat() + offset)
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset() and parsed.tzinfo == expected.tzinfo


def _near_valid_events() -> st.SearchStrategy[dict[str, object]]:
    """Events around every bound the hand-written common case checks: lengths at and past each
    limit, control and non-ASCII characters, every JSON type in every field, 64 and 65 properties."""
    from schemas.validate import JsonNumber

    def number(text: str) -> JsonNumber:
        value = JsonNumber(text)
        value.text = text
        return value

    def text_around(alphabet: st.SearchStrategy[str], limit: int) -> st.SearchStrategy[str]:
        return st.one_of(
            st.text(alphabet, min_size=0, max_size=4),
            st.integers(limit - 1, limit + 1).flatmap(lambda n: st.text(alphabet, min_size=n, max_size=n)),
        )

    chars = st.sampled_from(["a", "Z", "0", "_", ".", "-", ":", "@", " ", "\x00", "\x1f", "\x7f", "\x80", "é", "\n", "A"])
    anything = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(chars, max_size=3), st.just(number("1.5")))
    names = st.one_of(text_around(chars, 64), st.sampled_from(["model", "_x", "a.b-c", "9a"]))

    def mostly(valid: object, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        """``valid`` 4 times in 5, else ``other``: most examples are near a valid event, not far from all."""
        return st.integers(0, 4).flatmap(lambda n: other if n == 0 else st.just(valid))

    return st.fixed_dictionaries(
        {
            "event_id": mostly("e-1", st.one_of(text_around(chars, 128), anything)),
            "customer_id": mostly("acme", st.one_of(text_around(chars, 128), anything)),
            "event_type": mostly(
                "api_call", st.one_of(text_around(st.sampled_from(["a", "z", "0", "_", ".", "-", "A", " "]), 64), anything)
            ),
            "timestamp": mostly(
                "2026-03-01T12:00:00Z",
                st.one_of(
                    st.sampled_from(
                        [
                            "2026-03-01T12:00:00Z",
                            "2026-03-01t12:00:00.123456789z",
                            "2026-03-01 12:00:00+05:30",
                            "2026-03-01T12:00:00",
                        ]
                    ),
                    st.sampled_from(["2026-3-01T12:00:00Z", "２026-03-01T12:00:00Z", "2026-03-01T12:00:00Z\n"]),
                    anything,
                ),
            ),
            "quantity": mostly(
                "1.5",
                st.one_of(
                    st.sampled_from(["1", "0.5", "-0", "1e3", "01", "1.", ".5", "1.1234567891", "9" * 29, "9" * 30, "١"]),
                    st.sampled_from([number("2.5"), number("1e3"), True, False, 0, -7, None, 1.5]),
                    anything,
                ),
            ),
        },
        optional={
            "properties": mostly(
                {"model": "m", "n": 2, "ok": True, "none": None},
                st.one_of(
                    st.dictionaries(names, anything, max_size=3),
                    st.integers(63, 65).map(lambda n: {f"p{i}": i for i in range(n)}),
                    st.just({"a": [1]}),
                    st.just({"a": {"b": 1}}),
                    st.just({"a": 1.5}),
                    anything,
                ),
            ),
            "schema_version": mostly(1, st.sampled_from([1, 2, "1", True, 1.0, None, number("1.0")])),
            "resource": mostly("gpu-1", st.one_of(text_around(chars, 256), anything)),
            "user_id": mostly("u1", st.one_of(text_around(chars, 128), anything)),
            "region": mostly("eu", st.one_of(text_around(chars, 64), anything)),
            "source": mostly("svc", st.one_of(text_around(chars, 128), anything)),
            "extra": st.integers(),
        },
    )


@settings(max_examples=3000, deadline=None)
@given(_near_valid_events())
def test_the_common_case_check_never_passes_what_the_schema_refuses(obj: dict[str, object]) -> None:
    """``_plainly_valid`` (the ingestion API's and every judge's fast path) says True only for events
    the full validator (``jsonschema``, the reference) finds no problem in; and the verdict of
    ``validate_object`` is the same with or without it."""
    from jsonschema import Draft202012Validator

    from schemas import validate

    full = list(Draft202012Validator(validate.schema_v1()).iter_errors(obj))
    if validate._plainly_valid(obj):
        assert not full, [e.message for e in full]
    with_fast = validate.validate_object(obj)
    original = validate._plainly_valid
    validate._plainly_valid = lambda _obj: False  # type: ignore[assignment]
    try:
        without = validate.validate_object(obj)
    finally:
        validate._plainly_valid = original
    assert with_fast == without


def test_the_common_case_check_takes_the_demo_events_and_the_spec_examples() -> None:
    """The fast path is the one taken for ordinary events (else it would cost without saving)."""
    import random

    from jobs.demo import CUSTOMERS, random_event
    from schemas import validate

    rng = random.Random(5)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(300):
        obj = validate.decode(json.dumps(random_event(rng, n, rng.choice(sorted(CUSTOMERS)), now)))
        assert validate._plainly_valid(obj), obj
    for path in VALID:
        obj = validate.decode(path.read_bytes())
        assert validate._plainly_valid(obj) or "schema_version" in obj, path


@settings(max_examples=3000, deadline=None)
@given(
    st.tuples(
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.sampled_from("Tt "),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 61),
        st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda digits: "." + digits)),
        st.one_of(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+24:00", "+23:60"]), st.just("+05:30")),
    )
)
def test_the_fast_timestamp_path_reads_every_text_as_the_field_by_field_parser(parts: tuple[Any, ...]) -> None:
    """parse_timestamp's ``fromisoformat`` shortcut (…T…Z) gives the same instant and zone as the
    field-by-field parser, and refuses what it refuses with the same message."""
    from schemas.validate import _TIMESTAMP, _from_match

    year, month, day, separator, hour, minute, second, fraction, zone = parts
    text = f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    match = _TIMESTAMP.fullmatch(text)
    assert match is not None
    try:
        expected: Any = _from_match(match)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Any = parse_timestamp(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected
    if isinstance(got, datetime):
        assert got.tzinfo is expected.tzinfo or got.tzinfo == expected.tzinfo


def test_a_validated_event_is_the_dataclass_its_constructor_makes() -> None:
    """validate_object builds UsageEvent without its __init__ (schemas.validate._usage_event): same fields, equal, frozen."""
    import dataclasses

    from schemas.validate import UsageEvent

    event = validate_object(base_event(properties={"model": "m"}, region="eu")).event
    assert event is not None and type(event) is UsageEvent
    assert event == UsageEvent(**{f.name: getattr(event, f.name) for f in dataclasses.fields(UsageEvent)})
    assert dataclasses.asdict(event)["region"] == "eu" and set(vars(event)) == {f.name for f in dataclasses.fields(UsageEvent)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.region = "us"  # type: ignore[misc]
