"""One rule for voids and amends: the job's dedup state agrees with ``udfs/amendments.py``, case for case.

The job applies amendments in its keyed dedup state (``udfs/jvm``: FirstSeen, whose rules on the
state's text are ``dev.metering.rules.DedupState``); the demo's independent recomputation uses the
Python ``AmendmentLedger``. Both get the same sequences of operations on one dedup key (event
occurrences, first and duplicate, and amendments) — hand cases for every outcome and ordering, and
sequences hypothesis generates — and must give the same outcomes and the same contributions: sign,
event type, event time (ms), quantity (the exact decimal: digits and exponent) and properties.

Each side gets the event as it reaches the dedup state: the job's parse stage reads only the
properties the meters name (``property_names``, which may change between calls after a restore),
so the Python ledger gets those too, and contributions compare on the names of the amendment's call.

The Java side runs outside Flink (``dev.metering.rules.DedupCases``, one JVM for the module), so
this stays in the fast tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.amendments import AMEND, VOID, Amendment
from schemas.validate import UsageEvent, property_text
from tests.jvm import JavaProcess
from udfs.amendments import (
    ALREADY_VOIDED,
    APPLIED,
    NOT_AMENDABLE,
    REPEATED,
    UNKNOWN_EVENT,
    AmendmentLedger,
    Contribution,
)
from udfs.periods import epoch_millis, from_epoch_millis

#: A type the state must escape (tab, line feed, backslash): the state machines treat types as opaque text.
ODD_TYPE = "odd\ttype\n\\0"
#: Event types every meter of which is a sum or a count (``seats`` is not).
AMENDABLE = frozenset({"tokens", "api_call", ODD_TYPE})
CUSTOMER, EVENT_ID = "acme", "evt-1"
REQUESTED_AT = datetime(2026, 3, 2, 8, tzinfo=UTC)
#: No shrinking: a failure reports its first disagreeing case already, and each step costs a JVM round trip.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@dataclass(frozen=True)
class Occurrence:
    """An event with the key's id. ``props``: what it carries (None: a JSON null); ``names``: the call's property names."""

    event_type: str = "tokens"
    ms: int = 1_772_366_400_000  # 2026-03-01T12:00:00Z
    quantity: str = "10"
    props: dict[str, str | None] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    fingerprint: str | None = "ab"
    micros: int = 0  # below the millisecond: the Python side's timestamp only


@dataclass(frozen=True)
class Amend:
    """An amendment of the key's event: a void (``quantity`` None) or an amend."""

    amendment_id: str
    quantity: str | None = None
    names: tuple[str, ...] = ()


Op = Occurrence | Amend


# --- the Java side ----------------------------------------------------------------------------------


class JavaDedup(JavaProcess):
    """A running ``DedupCases``: one JSON case (a key's operations) in, one JSON answer out."""

    def __init__(self) -> None:
        super().__init__("dev.metering.rules.DedupCases")

    def run(self, cases: list[list[Op]]) -> list[dict[str, Any]]:
        lines = [json.dumps({"ops": [java_op(op) for op in ops]}).encode() + b"\n" for ops in cases]
        return self.exchange(b"".join(lines), len(cases))


@pytest.fixture(scope="module")
def java() -> Iterator[JavaDedup]:
    process = JavaDedup()
    yield process
    process.close()


def java_op(op: Op) -> dict[str, Any]:
    """The op as DedupCases reads it: FirstSeen's columns (props aligned with the comma-separated names)."""
    if isinstance(op, Occurrence):
        event = {
            "amendable": op.event_type in AMENDABLE,
            "type": op.event_type,
            "ms": op.ms,
            "q": op.quantity,
            "names": ",".join(op.names),
            "props": [op.props.get(name) for name in op.names],
            "fingerprint": op.fingerprint,
        }
        return {"event": event}
    action = VOID if op.quantity is None else AMEND
    return {"amendment": {"action": action, "id": op.amendment_id, "q": op.quantity, "names": ",".join(op.names)}}


def java_comparable(answer: list[Any]) -> list[Any]:
    """A Java answer with each quantity as the exact decimal it writes (``str(Decimal)``: digits and exponent)."""
    if answer[0] == "event":
        return answer
    outcome, contributions = answer
    return [outcome, [[sign, kind, ms, str(Decimal(q)), props] for sign, kind, ms, q, props in contributions]]


# --- the Python side --------------------------------------------------------------------------------


def usage_event(op: Occurrence) -> UsageEvent:
    """The event as the dedup state receives it: only the properties the call's names read."""
    return UsageEvent(
        event_id=EVENT_ID,
        customer_id=CUSTOMER,
        event_type=op.event_type,
        timestamp=from_epoch_millis(op.ms) + timedelta(microseconds=op.micros),
        quantity=Decimal(op.quantity),
        properties={name: op.props[name] for name in op.names if name in op.props},
    )


def amendment(op: Amend) -> Amendment:
    return Amendment(
        action=VOID if op.quantity is None else AMEND,
        amendment_id=op.amendment_id,
        customer_id=CUSTOMER,
        event_id=EVENT_ID,
        requested_at=REQUESTED_AT,
        quantity=None if op.quantity is None else Decimal(op.quantity),
        quantity_text=op.quantity,
    )


def described(contribution: Contribution, names: tuple[str, ...]) -> list[Any]:
    event = contribution.event
    props = [property_text(event.properties.get(name)) for name in names]
    return [contribution.sign, event.event_type, epoch_millis(event.timestamp), str(event.quantity), props]


def python_answers(ops: list[Op]) -> list[list[Any]]:
    """What the Python ledger says, in DedupCases' shape; occurrences counted as jobs/demo.py counts them."""
    ledger = AmendmentLedger(AMENDABLE)
    seen, prints = 0, set()
    answers: list[list[Any]] = []
    for op in ops:
        if isinstance(op, Occurrence):
            seen += 1
            if op.fingerprint is not None:
                prints.add(op.fingerprint)
            if seen == 1:
                ledger.first_seen(usage_event(op))
            answers.append(["event", seen, len(prints)])
        else:
            outcome, contributions = ledger.apply(amendment(op))
            answers.append([outcome, [described(c, op.names) for c in contributions]])
    return answers


def disagreements(java: JavaDedup, cases: list[list[Op]]) -> list[tuple[list[Op], list[Any], Any]]:
    found = []
    for ops, answer in zip(cases, java.run(cases), strict=True):
        ours = python_answers(ops)
        theirs = answer if "error" in answer else [java_comparable(a) for a in answer["answers"]]
        if ours != theirs:
            found.append((ops, ours, theirs))
    return found


def assert_agree(java: JavaDedup, cases: list[list[Op]]) -> None:
    found = disagreements(java, cases)
    assert not found, f"{len(found)} of {len(cases)} cases disagree; first: {found[0]}"


# --- hand cases -------------------------------------------------------------------------------------

NAMES = ("model", "region")
EVENT = Occurrence(props={"model": "m1", "region": "eu"}, names=NAMES)
OTHER_PRINT = Occurrence(props={"model": "m2"}, names=NAMES, fingerprint="cd", quantity="99")

HAND_CASES: dict[str, list[Op]] = {
    "void": [EVENT, Amend("a1", names=NAMES)],
    "amend": [EVENT, Amend("a1", "7.5", names=NAMES)],
    "amend twice": [EVENT, Amend("a1", "7.5", names=NAMES), Amend("a2", "3", names=NAMES)],
    "amend then void": [EVENT, Amend("a1", "7.5", names=NAMES), Amend("a2", names=NAMES)],
    "void then amend": [EVENT, Amend("a1", names=NAMES), Amend("a2", "4", names=NAMES)],
    "void twice": [EVENT, Amend("a1", names=NAMES), Amend("a2", names=NAMES)],
    "repeated after applied": [EVENT, Amend("a1", "2", names=NAMES), Amend("a1", "2", names=NAMES)],
    "repeated id with another quantity": [EVENT, Amend("a1", "2", names=NAMES), Amend("a1", "5", names=NAMES)],
    "repeated after already_voided": [EVENT, Amend("a1"), Amend("a2"), Amend("a2")],
    "repeated after not_amendable": [Occurrence(event_type="seats"), Amend("a1"), Amend("a1", "3")],
    "not_amendable": [Occurrence(event_type="seats", props={"model": "m1"}, names=NAMES), Amend("a1", "2", names=NAMES)],
    "unknown_event": [Amend("a1")],
    "amendment before its event": [Amend("a1", "3", names=NAMES), EVENT, Amend("a1", "3", names=NAMES)],
    "unknown twice, then the event": [Amend("a1"), Amend("a1"), EVENT, Amend("a2", names=NAMES)],
    "duplicates before the amendment": [EVENT, EVENT, OTHER_PRINT, Amend("a1", "5", names=NAMES)],
    "duplicates after a void": [EVENT, Amend("a1", names=NAMES), EVENT, OTHER_PRINT, Amend("a2", "1", names=NAMES)],
    "duplicates between amends": [EVENT, Amend("a1", "2", names=NAMES), OTHER_PRINT, Amend("a2", "3", names=NAMES)],
    "a duplicate's other content is not what counts": [EVENT, OTHER_PRINT, Amend("a1", names=NAMES)],
    "a duplicate of an unamendable type": [Occurrence(event_type="seats"), EVENT, Amend("a1", names=NAMES)],
    "no fingerprint": [Occurrence(fingerprint=None), Occurrence(fingerprint=None), Amend("a1")],
    "names reordered": [EVENT, Amend("a1", "2", names=("region", "model"))],
    "names dropped": [EVENT, Amend("a1", "2", names=("region",)), Amend("a2", names=())],
    "names added": [EVENT, Amend("a1", "2", names=("gpu.type", "model", "region", "u"))],
    "a name not read when counted": [
        Occurrence(props={"model": "m1", "region": "eu"}, names=("model",)),
        Amend("a1", "2", names=("model", "region")),
    ],
    "names changing every call": [
        Occurrence(props={"a": "1", "b": "2", "c": "3"}, names=("c", "a", "b")),
        Amend("a1", "5", names=("b",)),
        Amend("a2", "6", names=("a", "c")),
        Amend("a3", names=("c", "b", "a")),
    ],
    "null and absent properties": [
        Occurrence(props={"model": None, "u": ""}, names=("model", "region", "u")),
        Amend("a1", "2", names=("model", "region", "u")),
    ],
    "no properties at all": [Occurrence(props={}, names=()), Amend("a1", "2", names=NAMES)],
    "escapes in values": [
        Occurrence(props={"a": "x\ty", "b": "l1\nl2", "c": "back\\slash", "d": "\\0", "e": "=#!"}, names=tuple("abcde")),
        Amend("a1", "2", names=tuple("edcba")),
        Amend("a2", names=tuple("abcde")),
    ],
    "escapes in the type": [Occurrence(event_type=ODD_TYPE), Amend("a1", "12"), Amend("a2")],
    "trailing zeros": [Occurrence(quantity="1.500000000"), Amend("a1", "2.10"), Amend("a2", "0.0")],
    "small quantities": [Occurrence(quantity="0.000000001"), Amend("a1", "0.0000001"), Amend("a2")],
    "negative zero": [Occurrence(quantity="-0"), Amend("a1", "-0.00"), Amend("a2")],
    "exponents": [Occurrence(quantity="1E+2"), Amend("a1", "1e-3"), Amend("a2", "25E1"), Amend("a3")],
    "large quantities": [Occurrence(quantity="99999999999999999999999999999.999999999"), Amend("a1", "-" + "9" * 29)],
    "event time edges": [Occurrence(ms=0), Amend("a1", "1")],
    "event time far ahead": [Occurrence(ms=4_102_444_799_999, micros=999), Amend("a1")],
    "sub-millisecond time": [Occurrence(ms=1_772_366_400_123, micros=456), Amend("a1", "3")],
}


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_hand_cases_agree(java: JavaDedup, name: str) -> None:
    assert_agree(java, [HAND_CASES[name]])


def test_hand_cases_cover_every_outcome() -> None:
    outcomes = {a[0] for ops in HAND_CASES.values() for a in python_answers(ops)}
    assert outcomes >= {APPLIED, REPEATED, UNKNOWN_EVENT, NOT_AMENDABLE, ALREADY_VOIDED}


def test_the_stored_text_keeps_its_format(java: JavaDedup) -> None:
    """The state a savepoint holds: a change to this text breaks restoring a running job."""
    ops: list[Op] = [
        Occurrence(props={"model": "x\ty", "region": None}, names=NAMES, quantity="1.50", ms=5),
        Amend("a1", "2", names=("region", "model")),
        Amend("a2", names=("model",)),
        Amend("a2"),
        Occurrence(fingerprint="cd"),
    ]
    (answer,) = java.run([ops])
    assert answer["text"] == "ab\n=tokens\t5\t2\tmodel\tx\\ty\n#a1\n#a2\n!\ncd\n"
    assert [a[0] for a in answer["answers"]] == ["event", APPLIED, APPLIED, REPEATED, "event"]
    (cleared,) = java.run([[Amend("a1")]])
    assert cleared["text"] is None


# --- generated sequences ----------------------------------------------------------------------------

PROPERTY_NAMES = ("model", "region", "gpu.type", "u", "x y")
values = st.none() | st.text(alphabet="ab\t\n\\0=#! é", max_size=5)
names = st.lists(st.sampled_from(PROPERTY_NAMES), unique=True, max_size=len(PROPERTY_NAMES)).map(tuple)


@st.composite
def quantities(draw: st.DrawFn) -> str:
    """A decimal's text: plain, with trailing zeros, or with an exponent (the state keeps it as written)."""
    digits = draw(st.integers(0, 10**38 - 1))
    exponent = draw(st.integers(-12, 4))
    value = Decimal(f"{'-' if draw(st.booleans()) else ''}{digits}E{exponent}")
    form = draw(st.sampled_from(("str", "fixed", "exp")))
    if form == "fixed":
        return f"{value:f}"
    if form == "exp":
        return f"{value:e}"
    return str(value)


occurrences = st.builds(
    Occurrence,
    event_type=st.sampled_from(("tokens", "api_call", "seats", ODD_TYPE)),
    ms=st.integers(0, 4_102_444_799_999),
    quantity=quantities(),
    props=st.dictionaries(st.sampled_from(PROPERTY_NAMES), values, max_size=len(PROPERTY_NAMES)),
    names=names,
    fingerprint=st.sampled_from(("ab", "cd", "ef", None)),
    micros=st.integers(0, 999),
)
amends = st.builds(
    Amend,
    amendment_id=st.sampled_from(("a1", "a2", "a3", "amd-9")),
    quantity=st.none() | quantities(),
    names=names,
)
sequences = st.lists(st.one_of(occurrences, amends), min_size=1, max_size=10)


@SETTINGS
@given(cases=st.lists(sequences, min_size=10, max_size=20))
def test_generated_sequences_agree(java: JavaDedup, cases: list[list[Op]]) -> None:
    assert_agree(java, cases)


@SETTINGS
@given(cases=st.lists(st.lists(st.one_of(amends, amends, occurrences), min_size=2, max_size=12), min_size=10, max_size=20))
def test_generated_amendment_heavy_sequences_agree(java: JavaDedup, cases: list[list[Op]]) -> None:
    assert_agree(java, cases)
