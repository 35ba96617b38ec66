"""Exact, mergeable partial aggregates: the arithmetic of every meter.

A :class:`Partial` summarises the events of one bucket (a minute, an hour, a
period) for one meter and key. Partials ``merge`` associatively and
commutatively, so minute partials roll up into hours, days and periods in any
order with the same result.

All values are :class:`decimal.Decimal` with a context wide enough for
Decimal(38, 9) sums; no binary float is used anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from udfs.meters import Aggregation

#: 76 significant digits: the sum of 10^9 values of Decimal(38, 9) cannot round.
EXACT = Context(prec=76)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Partial:
    """A partial aggregate. ``count`` is the number of events in it, for every aggregation."""

    aggregation: Aggregation
    count: int = 0
    total: Decimal = ZERO  # sum
    extreme: Decimal | None = None  # max / min
    distinct: frozenset[str] = field(default_factory=frozenset)  # unique_count
    latest: tuple[int, str, Decimal] | None = None  # (event time ms, event_id, value)

    def result(self) -> Decimal:
        """The meter's value for this bucket."""
        match self.aggregation:
            case Aggregation.SUM:
                return self.total
            case Aggregation.COUNT:
                return Decimal(self.count)
            case Aggregation.MAX | Aggregation.MIN:
                return self.extreme if self.extreme is not None else ZERO
            case Aggregation.UNIQUE_COUNT:
                return Decimal(len(self.distinct))
            case Aggregation.LATEST:
                return self.latest[2] if self.latest is not None else ZERO
        raise AssertionError(self.aggregation)

    @property
    def is_empty(self) -> bool:
        return self.count == 0


def empty(aggregation: Aggregation) -> Partial:
    return Partial(aggregation)


def of_event(
    aggregation: Aggregation, value: Decimal, *, event_ms: int = 0, event_id: str = "", distinct_value: str = ""
) -> Partial:
    """The partial of a single event (``distinct_value`` is the value unique_count counts)."""
    match aggregation:
        case Aggregation.SUM:
            return Partial(aggregation, 1, total=value)
        case Aggregation.COUNT:
            return Partial(aggregation, 1)
        case Aggregation.MAX | Aggregation.MIN:
            return Partial(aggregation, 1, extreme=value)
        case Aggregation.UNIQUE_COUNT:
            return Partial(aggregation, 1, distinct=frozenset({distinct_value}))
        case Aggregation.LATEST:
            return Partial(aggregation, 1, latest=(event_ms, event_id, value))
    raise AssertionError(aggregation)


def merge(a: Partial, b: Partial) -> Partial:
    """Combine two partials of the same aggregation (associative, commutative, ``empty`` is neutral)."""
    if a.aggregation is not b.aggregation:
        raise ValueError(f"cannot merge {a.aggregation} with {b.aggregation}")
    extreme = a.extreme
    if b.extreme is not None:
        if extreme is None:
            extreme = b.extreme
        elif a.aggregation is Aggregation.MAX:
            extreme = max(extreme, b.extreme)
        else:
            extreme = min(extreme, b.extreme)
    # Latest by (event time, event_id); the value breaks a full tie so merge stays commutative.
    latest = a.latest if b.latest is None or (a.latest is not None and a.latest >= b.latest) else b.latest
    return Partial(
        a.aggregation,
        a.count + b.count,
        total=EXACT.add(a.total, b.total),
        extreme=extreme,
        distinct=a.distinct | b.distinct,
        latest=latest,
    )


def merge_all(aggregation: Aggregation, partials: list[Partial]) -> Partial:
    result = empty(aggregation)
    for partial in partials:
        result = merge(result, partial)
    return result


#: A :class:`Partial` as plain values (what keyed state stores): ``(count, total, extreme,
#: distinct, latest)`` with decimals as their exact text, ``distinct`` sorted.
EncodedPartial = tuple[int, str, str | None, tuple[str, ...], tuple[int, str, str] | None]


def encode(partial: Partial) -> EncodedPartial:
    """``partial`` as plain ints, strings and tuples: cheap to pickle, no classes in the stored bytes."""
    latest = partial.latest
    return (
        partial.count,
        str(partial.total),
        None if partial.extreme is None else str(partial.extreme),
        tuple(sorted(partial.distinct)),
        None if latest is None else (latest[0], latest[1], str(latest[2])),
    )


def decode(aggregation: Aggregation, encoded: EncodedPartial) -> Partial:
    """The inverse of :func:`encode` (the aggregation is stored once per key, not per partial)."""
    count, total, extreme, distinct, latest = encoded
    return Partial(
        aggregation,
        count,
        total=ZERO if total == "0" else Decimal(total),
        extreme=None if extreme is None else Decimal(extreme),
        distinct=frozenset(distinct),
        latest=None if latest is None else (latest[0], latest[1], Decimal(latest[2])),
    )


def partial_json(partial: Partial) -> dict[str, Any]:
    """The wire form of a partial in the job's records: exact decimals as strings (``Partial.appendJson`` in udfs/jvm)."""
    return {
        "value": str(partial.result()),
        "event_count": partial.count,
        "sum": str(partial.total),
        "max": None if partial.extreme is None or partial.aggregation is not Aggregation.MAX else str(partial.extreme),
        "min": None if partial.extreme is None or partial.aggregation is not Aggregation.MIN else str(partial.extreme),
        "distinct_values": sorted(partial.distinct),
        "latest_ms": partial.latest[0] if partial.latest else None,
        "latest_value": str(partial.latest[2]) if partial.latest else None,
    }
