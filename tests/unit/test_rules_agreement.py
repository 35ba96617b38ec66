"""One set of finalization rules: the JVM's ``dev.metering.rules`` agrees with the Python reference.

``udfs/periods.py``, ``udfs/aggregators.py``, ``udfs/ledger.py`` and ``udfs.aggregators.partial_json``
define billing periods, partial arithmetic, the wire text of a partial and the finalization state
machine; the Java classes the JVM operator uses must give the same answers, to the millisecond and
to the character (decimals as ``str(Decimal)`` prints them, strings in code point order, JSON as
``json.dumps`` writes it). Both sides get the same cases — named edge cases (DST gaps at midnight,
anchor 31 in February, 1970, 2099) and cases hypothesis generates — and the answers are compared.

The Java side runs outside Flink (``dev.metering.rules.RuleCases``, one JVM for the module, cases
sent in batches), so this stays in the fast tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.jvm import JavaProcess
from udfs.aggregators import Partial, decode, encode, merge, partial_json
from udfs.ledger import PeriodLedger, period_bounds
from udfs.meters import Aggregation
from udfs.periods import (
    BillingCycle,
    PeriodKind,
    billing_period,
    epoch_millis,
    from_epoch_millis,
    local_day,
    local_midnight,
    zone,
)

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",  # DST starts at midnight (gap 00:00–01:00)
    "America/Havana",  # DST starts at midnight (gap) and ends at 01:00 back to 00:00 (midnight twice)
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "Pacific/Apia",  # skipped 2011-12-30 entirely
)
MINUTE = 60_000
DAY = 86_400_000
FIRST_MS = epoch_millis(datetime(1970, 1, 1, tzinfo=UTC))
LAST_MS = epoch_millis(datetime(2100, 1, 1, tzinfo=UTC)) - 1
ANCHOR_LIMIT = {"month": 31, "week": 7, "day": 1}
#: No shrinking: a failure reports its first disagreeing case already, and shrinking a batch costs a JVM round trip per step.
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


class JavaRules(JavaProcess):
    """A running ``RuleCases``: JSON cases in, one JSON answer per case out."""

    def __init__(self) -> None:
        super().__init__("dev.metering.rules.RuleCases")

    def run(self, cases: list[dict[str, Any]]) -> list[Any]:
        return self.exchange(b"".join(json.dumps(case).encode() + b"\n" for case in cases), len(cases))


@pytest.fixture(scope="module")
def java() -> Iterator[JavaRules]:
    rules = JavaRules()
    yield rules
    rules.close()


# --- the Python reference's answers, in the shape RuleCases answers --------------------------------


def plain(value: Any) -> Any:
    """Tuples as lists: the shape a value has after a JSON round trip."""
    return json.loads(json.dumps(value))


def describe(partial: Partial) -> list[Any]:
    """The encode tuple, ``str(result())``, the ``partial_json`` members as the job writes them, round trip ok."""
    members = json.dumps(partial_json(partial), separators=(",", ":"))[1:-1]
    return [*plain(encode(partial)), str(partial.result()), members, True]


def cycle_of(case: dict[str, Any]) -> BillingCycle:
    return BillingCycle(PeriodKind(case["kind"]), case["zone"], case["anchor"])


def python_answer(case: dict[str, Any]) -> Any:
    try:
        match case["op"]:
            case "aggregation":
                return Aggregation(case["wire"]).value
            case "period":
                period = billing_period(from_epoch_millis(case["instant"]), cycle_of(case))
                return [epoch_millis(period.start), epoch_millis(period.end)]
            case "local_day":
                return epoch_millis(local_day(from_epoch_millis(case["instant"]), case["zone"]).start)
            case "partials":
                return python_partials(case)
            case "ledger":
                return python_ledger(case)
    except ValueError:
        return "error"
    raise AssertionError(case)


def python_partials(case: dict[str, Any]) -> dict[str, Any]:
    aggregation = Aggregation(case["aggregation"])
    registers = [decode(aggregation, tuple(encoded)) for encoded in case["inputs"]]
    steps: list[Any] = []
    for name, i, j in case["steps"]:
        x = registers[i % len(registers)]
        assert name == "merge", name
        try:
            made = merge(x, registers[j % len(registers)])
        except ValueError:
            steps.append("error")
            continue
        registers.append(made)
        steps.append(describe(made))
    return {"inputs": [describe(p) for p in registers[: len(case["inputs"])]], "steps": steps}


def python_ledger(case: dict[str, Any]) -> list[Any]:
    aggregation = Aggregation(case["aggregation"])
    ledger = PeriodLedger(aggregation, cycle_of(case), timedelta(milliseconds=case["grace_ms"]))
    answers: list[Any] = []
    for op in case["ops"]:
        ((name, arg),) = op.items()
        if name == "apply":
            minute, encoded, watermark = arg
            correction = ledger.apply(minute, decode(aggregation, tuple(encoded)), watermark)
            answers.append(
                None
                if correction is None
                else [correction.period_start_ms, correction.period_end_ms, minute, describe(correction.partial)]
            )
        elif name == "finalize":
            answers.append(
                [
                    [f.period_start_ms, f.period_end_ms, describe(f.partial), f.finalized_at_watermark_ms]
                    for f in ledger.finalize(arg)
                ]
            )
        elif name == "roundtrip":
            answers.append(True)  # Java: its stored form reads back to the same bytes (Python keeps no stored form)
        elif name == "period":
            answers.append(list(ledger.period_of(arg)))
        elif name == "open":
            answers.append(arg in ledger.open_periods)
        elif name == "has_open":
            answers.append(bool(ledger.open_periods))
        elif name == "is_final":
            answers.append(ledger.is_final(*arg))
        else:
            raise AssertionError(op)
    return answers


def java_comparable(answer: Any) -> Any:
    """A case Java refused compares as Python's refusal (``ValueError``) does."""
    return "error" if isinstance(answer, dict) and set(answer) == {"error"} else answer


def disagreements(java: JavaRules, cases: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any, Any]]:
    found = []
    for case, answer in zip(cases, java.run(cases), strict=True):
        ours, theirs = python_answer(case), java_comparable(answer)
        if ours != theirs:
            found.append((case, ours, theirs))
    return found


def assert_agree(java: JavaRules, cases: list[dict[str, Any]]) -> None:
    found = disagreements(java, cases)
    assert not found, f"{len(found)} of {len(cases)} cases disagree; first: {found[0]}"


# --- strategies -----------------------------------------------------------------------------------

instants = st.integers(FIRST_MS, LAST_MS)
minutes = st.integers(FIRST_MS // MINUTE, LAST_MS // MINUTE).map(lambda m: m * MINUTE)


@st.composite
def near_local_midnight(draw: st.DrawFn, zone_name: str) -> int:
    """An instant within a few hours of some local midnight of ``zone_name``: where DST bites."""
    day = date(1970, 1, 1) + timedelta(days=draw(st.integers(0, 47_480)))
    midnight = epoch_millis(local_midnight(day, zone(zone_name)))
    aligned = draw(st.booleans())
    offset = draw(st.integers(-4 * 60, 4 * 60)) * MINUTE if aligned else draw(st.integers(-4 * 3_600_000, 4 * 3_600_000))
    return min(max(midnight + offset, FIRST_MS), LAST_MS)


@st.composite
def instants_in(draw: st.DrawFn, zone_name: str) -> int:
    return draw(st.one_of(instants, minutes, near_local_midnight(zone_name)))


@st.composite
def period_cases(draw: st.DrawFn) -> dict[str, Any]:
    zone_name = draw(st.sampled_from(ZONES))
    instant = draw(instants_in(zone_name))
    if draw(st.integers(0, 4)) == 0:
        return {"op": "local_day", "instant": instant, "zone": zone_name}
    kind = draw(st.sampled_from(("month", "week", "day")))
    anchor = draw(st.integers(1, ANCHOR_LIMIT[kind]))
    return {"op": "period", "instant": instant, "kind": kind, "zone": zone_name, "anchor": anchor}


#: Values that tie numerically but print differently: which one a merge keeps shows in the text.
TIE_VALUES = ("0", "0.0", "0E-9", "0.000000000", "1", "1.0", "1.000000000", "1E+1", "10", "-1", "-1.00", "-0.5", "-0.500")


@st.composite
def decimals(draw: st.DrawFn) -> str:
    """Decimal(38, 9)-like text: up to 38 digits, exponent -9..+2; never negative zero (see the module notes)."""
    if draw(st.integers(0, 2)) > 0:
        return draw(st.sampled_from(TIE_VALUES))
    digits = draw(st.integers(-(10**38) + 1, 10**38 - 1) | st.integers(-1000, 1000))
    return str(Decimal(f"{digits}E{draw(st.integers(-9, 2))}"))


#: Strings whose UTF-16 order differs from their code point order, escapes JSON must write, non-ASCII.
SPECIAL_TEXT = ("", "a", "A", "\uffff", "\ue000", "\U0001f600", "\U00010000", "\ud7ff", "\x7f", "\x00", '"', "\\", "é", "\n\t")
texts = st.sampled_from(SPECIAL_TEXT) | st.text(st.characters(exclude_categories=["Cs"]), max_size=6)


@st.composite
def encoded_partials(draw: st.DrawFn, aggregation: str) -> list[Any]:
    """A partial as ``udfs.aggregators.encode`` stores it, with the fields its aggregation uses."""
    count = draw(st.integers(-3, 5) | st.integers(-(2**40), 2**40))
    total, extreme, distinct, latest = "0", None, [], None
    if aggregation == "sum":
        total = draw(decimals())
    elif aggregation in ("max", "min"):
        extreme = draw(st.none() | decimals())
    elif aggregation == "unique_count":
        distinct = sorted(draw(st.sets(texts, max_size=5)))
    elif aggregation == "latest" and draw(st.integers(0, 5)) > 0:
        latest = [
            draw(st.integers(0, 3) | instants),
            draw(st.sampled_from(("", "a", "b", "\uffff", "\U0001f600")) | texts),
            draw(decimals()),
        ]
    return [count, total, extreme, distinct, latest]


aggregations = st.sampled_from([a.value for a in Aggregation])


@st.composite
def partial_cases(draw: st.DrawFn) -> dict[str, Any]:
    aggregation = draw(aggregations)
    inputs = draw(st.lists(encoded_partials(aggregation), min_size=1, max_size=5))
    step = st.tuples(st.just("merge"), st.integers(0, 40), st.integers(0, 40))
    steps = draw(st.lists(step, max_size=12))
    return {"op": "partials", "aggregation": aggregation, "inputs": inputs, "steps": [list(s) for s in steps]}


@st.composite
def ledger_cases(draw: st.DrawFn) -> dict[str, Any]:
    aggregation = draw(aggregations)
    zone_name = draw(st.sampled_from(ZONES))
    kind = draw(st.sampled_from(("month", "week", "day")))
    anchor = draw(st.integers(1, ANCHOR_LIMIT[kind]))
    grace_ms = draw(st.sampled_from((0, MINUTE, 3_600_000, 2 * DAY)))
    cycle = BillingCycle(PeriodKind(kind), zone_name, anchor)
    base = draw(instants_in(zone_name)) // MINUTE * MINUTE
    span = {"month": 40, "week": 10, "day": 2}[kind] * DAY
    minute = st.integers(-span // MINUTE, span // MINUTE).map(lambda k: min(max(base + k * MINUTE, FIRST_MS), LAST_MS - MINUTE))
    # Often exactly at a period's end + grace (or a millisecond either side): where final begins.
    at_finality = st.tuples(minute, st.sampled_from((-1, 0, 0, 1))).map(lambda m: period_bounds(m[0], cycle)[1] + grace_ms + m[1])
    watermark = st.integers(-span, 2 * span).map(lambda k: base + k) | at_finality
    ops: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 20))):
        choice = draw(st.integers(0, 10))
        if choice < 6:
            ops.append({"apply": [draw(minute), draw(encoded_partials(aggregation)), draw(watermark)]})
        elif choice == 6:
            ops.append({"finalize": draw(watermark)})
        elif choice == 7:
            ops.append({"has_open": True})
        elif choice == 8:
            ops.append({"roundtrip": True})
        elif choice == 9:
            ops.append({"open": period_bounds(draw(minute), cycle)[0]})
        else:
            end = period_bounds(draw(minute), cycle)[1]
            ops.append({"period": draw(minute)} if draw(st.booleans()) else {"is_final": [end, draw(watermark)]})
    ops += [{"roundtrip": True}, {"finalize": LAST_MS}]
    return {
        "op": "ledger",
        "aggregation": aggregation,
        "kind": kind,
        "zone": zone_name,
        "anchor": anchor,
        "grace_ms": grace_ms,
        "ops": ops,
    }


# --- generated cases ------------------------------------------------------------------------------


@SETTINGS
@given(cases=st.lists(period_cases(), min_size=40, max_size=80))
def test_generated_periods_agree(java: JavaRules, cases: list[dict[str, Any]]) -> None:
    assert_agree(java, cases)


@SETTINGS
@given(cases=st.lists(partial_cases(), min_size=10, max_size=20))
def test_generated_partials_agree(java: JavaRules, cases: list[dict[str, Any]]) -> None:
    assert_agree(java, cases)


@SETTINGS
@given(cases=st.lists(ledger_cases(), min_size=5, max_size=10))
def test_generated_ledgers_agree(java: JavaRules, cases: list[dict[str, Any]]) -> None:
    assert_agree(java, cases)


# --- named cases ----------------------------------------------------------------------------------


def ms(text: str) -> int:
    return epoch_millis(datetime.fromisoformat(text))


def every_period(instant: int, zone_name: str) -> list[dict[str, Any]]:
    """The instant's local day and its periods of every kind and anchor in ``zone_name``."""
    cases: list[dict[str, Any]] = [{"op": "local_day", "instant": instant, "zone": zone_name}]
    for kind, limit in ANCHOR_LIMIT.items():
        cases += [
            {"op": "period", "instant": instant, "kind": kind, "zone": zone_name, "anchor": anchor}
            for anchor in range(1, limit + 1)
        ]
    return cases


#: Instants at and around the transitions that move local midnight (or skip a day), and the edges of the range.
NAMED_INSTANTS = {
    "Santiago: midnight skipped (2023-09-03)": ("America/Santiago", "2023-09-03T04:00:00+00:00"),
    "Santiago: 23:00 twice (2024-04-06)": ("America/Santiago", "2024-04-07T03:30:00+00:00"),
    "Havana: midnight skipped (2024-03-10)": ("America/Havana", "2024-03-10T05:00:00+00:00"),
    "Havana: midnight twice (2024-11-03)": ("America/Havana", "2024-11-03T05:00:00+00:00"),
    "Berlin: spring forward (2024-03-31)": ("Europe/Berlin", "2024-03-31T01:00:00+00:00"),
    "Berlin: fall back (2024-10-27)": ("Europe/Berlin", "2024-10-27T01:00:00+00:00"),
    "New York: fall back (2024-11-03)": ("America/New_York", "2024-11-03T06:00:00+00:00"),
    "Lord Howe: half-hour DST (2024-10-06)": ("Australia/Lord_Howe", "2024-10-05T15:30:00+00:00"),
    "Chatham: +13:45 (2024-09-29)": ("Pacific/Chatham", "2024-09-28T14:00:00+00:00"),
    "Apia: 2011-12-30 never happened": ("Pacific/Apia", "2011-12-30T10:00:00+00:00"),
    # 00:01 -02:30 back to 23:01 -03:30 the day before: the local date goes back for an hour.
    "St. John's: the date goes back (1987-10-25)": ("America/St_Johns", "1987-10-25T02:31:00+00:00"),
    "Kathmandu: +05:45 since 1986": ("Asia/Kathmandu", "1986-01-01T00:00:00+00:00"),
    "Kolkata: +05:30": ("Asia/Kolkata", "2024-06-30T18:29:59.999+00:00"),
    "1970: the epoch, 1969 locally": ("America/New_York", "1970-01-01T00:00:00+00:00"),
    "2099: the last minute": ("Pacific/Chatham", "2099-12-31T23:59:00+00:00"),
}


@pytest.mark.parametrize("name", list(NAMED_INSTANTS))
def test_named_instants_agree(java: JavaRules, name: str) -> None:
    zone_name, text = NAMED_INSTANTS[name]
    center = ms(text)
    cases = [
        case
        for delta in (-DAY, -3_600_000, -MINUTE, -1, 0, 1, MINUTE, 3_600_000, DAY)
        for case in every_period(center + delta, zone_name)
    ]
    assert_agree(java, cases)


def test_anchor_31_in_february(java: JavaRules) -> None:
    """Anchor 31 clamps to 28 February, or 29 in a leap year; both sides and the rule agree."""
    cases = [
        {"op": "period", "instant": ms(text), "kind": "month", "zone": zone_name, "anchor": anchor}
        for text in (
            "2024-02-29T12:00:00+00:00",
            "2023-02-28T12:00:00+00:00",
            "2000-02-29T00:00:00+00:00",
            "2100-02-27T00:00:00+00:00",
        )
        for zone_name in ("UTC", "Europe/Berlin", "Pacific/Chatham")
        for anchor in (28, 29, 30, 31)
    ]
    assert_agree(java, cases)
    leap = java.run([{"op": "period", "instant": ms("2024-02-29T12:00:00+00:00"), "kind": "month", "zone": "UTC", "anchor": 31}])
    assert leap == [[ms("2024-02-29T00:00:00+00:00"), ms("2024-03-31T00:00:00+00:00")]]
    plain_year = java.run(
        [{"op": "period", "instant": ms("2023-02-28T12:00:00+00:00"), "kind": "month", "zone": "UTC", "anchor": 31}]
    )
    assert plain_year == [[ms("2023-02-28T00:00:00+00:00"), ms("2023-03-31T00:00:00+00:00")]]


def test_midnight_in_a_gap_is_the_gap_start(java: JavaRules) -> None:
    """Santiago skipped 2023-09-03 00:00 (clocks went from 00:00 -04 to 01:00 -03): the day starts at 04:00 UTC."""
    answer = java.run([{"op": "local_day", "instant": ms("2023-09-03T12:00:00+00:00"), "zone": "America/Santiago"}])
    assert answer == [ms("2023-09-03T04:00:00+00:00")]


def test_ambiguous_midnight_is_its_first_occurrence(java: JavaRules) -> None:
    """Havana read 2024-11-03 00:00 twice (-04, then -05): the day starts at the first, 04:00 UTC."""
    answer = java.run([{"op": "local_day", "instant": ms("2024-11-03T12:00:00+00:00"), "zone": "America/Havana"}])
    assert answer == [ms("2024-11-03T04:00:00+00:00")]


def test_refusals_agree(java: JavaRules) -> None:
    """Configuration Python's BillingCycle and Aggregation refuse, Java refuses too (and accepts the rest)."""
    cases: list[dict[str, Any]] = [
        {"op": "aggregation", "wire": wire} for wire in ["SUM", "Sum", "", "unique-count", *Aggregation]
    ]
    for kind, anchor in (("month", 0), ("month", 32), ("week", 0), ("week", 8), ("day", 0), ("day", 2), ("year", 1)):
        cases.append({"op": "period", "instant": 0, "kind": kind, "zone": "UTC", "anchor": anchor})
    for zone_name in ("Mars/Olympus", "+01:00", "Z", "utc", "Europe/berlin"):
        cases.append({"op": "period", "instant": 0, "kind": "day", "zone": zone_name, "anchor": 1})
    assert_agree(java, cases)


def test_decimal_text_and_json_escapes(java: JavaRules) -> None:
    """str(Decimal) spellings (0E-9, 1E+1, -0.000001, 1E-7) and every JSON escape, as the Python operator writes them."""
    values = ["0E-9", "1E+1", "-0.000001", "1E-7", "0.000000", "12345678901234567890123456789.123456789", "-1.50"]
    cases: list[dict[str, Any]] = [
        {
            "op": "partials",
            "aggregation": aggregation,
            "inputs": [[1, value if aggregation == "sum" else "0", value if aggregation in ("max", "min") else None, [], None]],
            "steps": [],
        }
        for aggregation in ("sum", "max", "min")
        for value in values
    ]
    cases.append(
        {"op": "partials", "aggregation": "unique_count", "inputs": [[3, "0", None, sorted(SPECIAL_TEXT), None]], "steps": []}
    )
    cases.append(
        {
            "op": "partials",
            "aggregation": "latest",
            "inputs": [[1, "0", None, [], [5, "\U0001f600", "1E+1"]], [1, "0", None, [], [5, "\uffff", "10"]]],
            "steps": [["merge", 0, 1], ["merge", 1, 0]],
        }
    )
    assert_agree(java, cases)


def encoded(aggregation: str, value: str, *, latest: tuple[int, str] | None = None) -> list[Any]:
    """A one-event partial's encode tuple holding ``value``."""
    return [
        1,
        value if aggregation == "sum" else "0",
        value if aggregation in ("max", "min") else None,
        [],
        None if latest is None else [*latest, value],
    ]


def test_ties_keep_the_first_text(java: JavaRules) -> None:
    """Numerically equal max/min/latest values keep the first one's text, as Python's max(a, b) and tuple order do."""
    pairs = [("1.0", "1.00"), ("1.00", "1.0"), ("0E-9", "0"), ("1E+1", "10"), ("-0.5", "-0.500")]
    cases = [
        {
            "op": "partials",
            "aggregation": aggregation,
            "inputs": [encoded(aggregation, a, latest=(7, "e")), encoded(aggregation, b, latest=(7, "e"))],
            "steps": [["merge", 0, 1], ["merge", 1, 0]],
        }
        for aggregation in ("max", "min", "latest", "sum")
        for a, b in pairs
    ]
    assert_agree(java, cases)
    (answer,) = java.run([cases[0]])
    assert [step[2] for step in answer["steps"]] == ["1.0", "1.00"]


def test_final_exactly_at_end_plus_grace(java: JavaRules) -> None:
    """A period is final when end + grace <= watermark: not a millisecond earlier; a change then is a correction."""
    end = ms("2024-04-01T00:00:00+02:00")
    grace = 3_600_000
    minute = ms("2024-03-31T21:59:00+00:00")
    one = encoded("sum", "2.5")
    case = {
        "op": "ledger",
        "aggregation": "sum",
        "kind": "month",
        "zone": "Europe/Berlin",
        "anchor": 1,
        "grace_ms": grace,
        "ops": [
            {"apply": [minute, one, end + grace - 1]},
            {"is_final": [end, end + grace - 1]},
            {"is_final": [end, end + grace]},
            {"finalize": end + grace - 1},
            {"roundtrip": True},
            {"finalize": end + grace},
            {"apply": [minute, one, end + grace]},
            {"has_open": True},
        ],
    }
    assert_agree(java, [case])
    (answer,) = java.run([case])
    assert answer[0] is None and answer[1:4] == [False, True, []]
    assert [f[:2] for f in answer[5]] == [[ms("2024-03-01T00:00:00+01:00"), end]]
    assert answer[6][:3] == [ms("2024-03-01T00:00:00+01:00"), end, minute] and answer[7] is False


def test_a_ledger_stored_with_versions_still_restores(java: JavaRules) -> None:
    """Savepoints hold ledgers in the first stored form (a version and a dirty flag per period): still read, both ignored."""
    start, end = ms("2024-03-01T00:00:00+00:00"), ms("2024-04-01T00:00:00+00:00")
    # Form 1: tag 1, one period (zigzag var-long), start, end, version 300 (zigzag var-long), dirty, then the partial:
    # tag 1, no optional fields, count 3 (zigzag var-long).
    stored = bytes([1, 2]) + start.to_bytes(8, "big") + end.to_bytes(8, "big") + bytes([0xD8, 0x04, 1]) + bytes([1, 0, 6])
    case = {
        "op": "ledger",
        "aggregation": "count",
        "kind": "month",
        "zone": "UTC",
        "anchor": 1,
        "grace_ms": 0,
        "ops": [{"restore": stored.hex()}, {"open": start}, {"roundtrip": True}, {"finalize": end}],
    }
    (answer,) = java.run([case])
    three = encoded("count", "0")
    three[0] = 3
    expected = describe(decode(Aggregation.COUNT, tuple(three)))
    assert answer == [True, True, True, [[start, end, expected, end]]]
