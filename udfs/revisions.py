"""Replay rules as plain functions: which periods a replay rewrites, how its minutes become period totals,
and how the new totals compare with the finals they supersede (docs/replay.md).

Rules:

- A replay rewrites **whole billing periods** of (customer, meter): every period of the customer's cycle
  that overlaps the requested range. A period is never half live, half replayed.
- Only **closed** periods are rewritten: ``period_end + grace`` is behind the live pipeline's watermark,
  so the live job holds no state for them and can only emit corrections, which the new revision
  supersedes by event identity. An open period is refused (replay it once it closes).
- A changed final is never rewritten silently: every (customer, meter, group, period) whose total,
  event count or absorbed corrections differ gets an :class:`Adjustment`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from udfs.aggregators import Partial, merge
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, Period, as_utc, billing_period, epoch_millis

#: (customer_id, meter, group_key, period_start_ms)
FinalKey = tuple[str, str, str, int]
#: (customer_id, meter, period_start_ms)
ScopeKey = tuple[str, str, int]


def periods_overlapping(start: datetime, end: datetime, cycle: BillingCycle) -> list[Period]:
    """Every billing period of ``cycle`` that overlaps ``[start, end)``, in order (empty when ``end <= start``)."""
    found: list[Period] = []
    if as_utc(end) <= as_utc(start):
        return found
    period = billing_period(start, cycle)
    while period.start < as_utc(end):
        found.append(period)
        period = billing_period(period.end, cycle)
    return found


def open_periods(periods: Iterable[Period], grace: timedelta, live_watermark: datetime | None) -> list[Period]:
    """The periods whose grace window has not passed the live watermark (all of them without a watermark)."""
    if live_watermark is None:
        return list(periods)
    return [p for p in periods if p.end + grace > as_utc(live_watermark)]


def group_key(dimensions: Sequence[str], values: Sequence[str]) -> str:
    """The job's group key: a JSON object of the group_by values in declaration order (``{}`` without group_by)."""
    return json.dumps(dict(zip(dimensions, values, strict=True)), separators=(",", ":"), ensure_ascii=False)


def minute_partial(
    aggregation: Aggregation,
    event_count: int,
    total: Decimal | None,
    max_value: Decimal | None,
    min_value: Decimal | None,
    distinct_values: Iterable[str],
    latest: tuple[int, str, Decimal | None] | None,
) -> Partial:
    """A replayed minute (the columns of ``replay_minutes.sql``) as the same :class:`Partial` the job builds."""
    return Partial(
        aggregation,
        event_count,
        total=total if aggregation is Aggregation.SUM and total is not None else Decimal(0),
        extreme=max_value if aggregation is Aggregation.MAX else min_value if aggregation is Aggregation.MIN else None,
        distinct=frozenset(distinct_values) if aggregation is Aggregation.UNIQUE_COUNT else frozenset(),
        latest=(latest[0], latest[1], latest[2])
        if aggregation is Aggregation.LATEST and latest is not None and latest[2] is not None
        else None,
    )


@dataclass(frozen=True)
class OldFinal:
    """A final the replay may supersede (the visible revision)."""

    aggregation: str
    period_end_ms: int
    value: Decimal
    event_count: int
    revision: int


@dataclass(frozen=True)
class NewTotal:
    """A replayed period total."""

    aggregation: str
    period_end_ms: int
    partial: Partial


@dataclass(frozen=True)
class Absorbed:
    """Live corrections of a period whose events the replay examined (net value for sum/count)."""

    corrections: int
    value: Decimal


@dataclass(frozen=True)
class Adjustment:
    """One changed (customer, meter, group, period): what the next invoice must settle."""

    customer_id: str
    meter: str
    group_key: str
    aggregation: str
    period_start_ms: int
    period_end_ms: int
    old_revision: int
    old_total: Decimal | None
    new_total: Decimal | None
    old_event_count: int
    new_event_count: int
    superseded_corrections: int
    superseded_correction_value: Decimal

    @property
    def delta(self) -> Decimal | None:
        """``new - old`` (``None`` where either side is missing as a number: a max cannot be netted)."""
        if self.aggregation not in ("sum", "count"):
            return None
        return (self.new_total or Decimal(0)) - (self.old_total or Decimal(0))


def diff_finals(
    old: Mapping[FinalKey, OldFinal],
    new: Mapping[FinalKey, NewTotal],
    absorbed: Mapping[FinalKey, Absorbed] | None = None,
) -> list[Adjustment]:
    """Adjustments for every key whose total or event count changed or whose corrections were absorbed.

    A key only in ``old`` went to zero events (its final is superseded without a successor); a key only in
    ``new`` is a final that did not exist (e.g. all its events had been refused by a misconfigured meter).
    """
    absorbed = absorbed or {}
    found: list[Adjustment] = []
    for key in sorted(set(old) | set(new) | set(absorbed)):
        before, after, taken = old.get(key), new.get(key), absorbed.get(key)
        new_total = after.partial.result() if after is not None else None
        new_count = after.partial.count if after is not None else 0
        old_total = before.value if before is not None else None
        old_count = before.event_count if before is not None else 0
        if taken is None and old_total == new_total and old_count == new_count:
            continue
        source = after or before
        aggregation = source.aggregation if source is not None else ""
        end_ms = source.period_end_ms if source is not None else 0
        found.append(
            Adjustment(
                customer_id=key[0],
                meter=key[1],
                group_key=key[2],
                aggregation=aggregation,
                period_start_ms=key[3],
                period_end_ms=end_ms,
                old_revision=before.revision if before is not None else 0,
                old_total=old_total,
                new_total=new_total,
                old_event_count=old_count,
                new_event_count=new_count,
                superseded_corrections=taken.corrections if taken is not None else 0,
                superseded_correction_value=taken.value if taken is not None else Decimal(0),
            )
        )
    return found


def period_totals(minutes: Iterable[tuple[FinalKey, int, Partial]]) -> dict[FinalKey, NewTotal]:
    """Combine replayed minutes (key with the period start, the period end, the minute's partial) per period."""
    totals: dict[FinalKey, NewTotal] = {}
    for key, end_ms, partial in minutes:
        current = totals.get(key)
        combined = partial if current is None else merge(current.partial, partial)
        totals[key] = NewTotal(partial.aggregation.value, end_ms, combined)
    return totals


def period_start_ms(period: Period) -> int:
    return epoch_millis(period.start)
