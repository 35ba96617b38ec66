"""Finalization rules for one (customer, meter, group-by) key, as a plain state machine.

Input is the changelog of minute partials produced upstream (per UTC minute:
an insert, or an update as a retraction of the old partial plus the new one)
and the event-time watermark. Output:

- :class:`Provisional` running totals of every open billing period that changed
  since the last call to :meth:`PeriodLedger.provisional`;
- :class:`Final` — once the watermark passes ``period_end + grace``, the period's
  total is emitted exactly once and its state is dropped (bounded state);
- :class:`Correction` — a minute change for a period that is already final; it
  carries the period it belongs to and the change (a signed delta for sum/count,
  the new partial for max/min/unique_count/latest) for the next invoice.

Rules (see docs/semantics.md): event time decides the period; a period is final
exactly when ``period_end + grace <= watermark``; a final never changes; every
minute change is counted in exactly one of (final, correction). The Flink job
wraps this class in a keyed function with state and event-time timers; tests
drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import lru_cache

from udfs.aggregators import EncodedPartial, Partial, decode, empty, encode, merge, subtract
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, PeriodKind, billing_period, epoch_millis, from_epoch_millis, local_day

_MILLISECOND = timedelta(milliseconds=1)


@lru_cache(maxsize=65_536)
def period_bounds(minute_ms: int, cycle: BillingCycle) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of the billing period containing a minute (cached: rows repeat minutes)."""
    period = billing_period(from_epoch_millis(minute_ms), cycle)
    return epoch_millis(period.start), epoch_millis(period.end)


@lru_cache(maxsize=65_536)
def local_day_start_ms(minute_ms: int, timezone: str) -> int:
    """Start (epoch ms) of the customer's local day containing a minute (cached: rows repeat minutes)."""
    return epoch_millis(local_day(from_epoch_millis(minute_ms), timezone).start)


@dataclass(frozen=True)
class MinuteChange:
    """One changelog row of a minute partial: ``retract=True`` removes an earlier partial."""

    minute_ms: int
    partial: Partial
    retract: bool = False


@dataclass(frozen=True)
class Provisional:
    period_start_ms: int
    period_end_ms: int
    partial: Partial
    version: int


@dataclass(frozen=True)
class Final:
    period_start_ms: int
    period_end_ms: int
    partial: Partial
    finalized_at_watermark_ms: int


@dataclass(frozen=True)
class Correction:
    period_start_ms: int
    period_end_ms: int
    minute_ms: int
    #: sum/count: the signed change; other aggregations: the minute's newer partial.
    partial: Partial
    retract: bool


@dataclass
class _OpenPeriod:
    end_ms: int
    partial: Partial
    version: int = 0
    dirty: bool = False


@dataclass
class PeriodLedger:
    """Open billing periods of one key. Every method is deterministic given its inputs."""

    aggregation: Aggregation
    cycle: BillingCycle
    grace: timedelta
    open_periods: dict[int, _OpenPeriod] = field(default_factory=dict)

    def period_of(self, minute_ms: int) -> tuple[int, int]:
        return period_bounds(minute_ms, self.cycle)

    @property
    def grace_ms(self) -> int:
        return self.grace // _MILLISECOND

    def is_final(self, period_end_ms: int, watermark_ms: int) -> bool:
        return period_end_ms + self.grace_ms <= watermark_ms

    def apply(self, change: MinuteChange, watermark_ms: int) -> Correction | None:
        """Fold one minute change into its period, or return it as a correction if that period is final."""
        start, end = self.period_of(change.minute_ms)
        if self.is_final(end, watermark_ms):
            return Correction(start, end, change.minute_ms, change.partial, change.retract)
        period = self.open_periods.get(start)
        if period is None:
            period = self.open_periods[start] = _OpenPeriod(end, empty(self.aggregation))
        if change.retract:
            if self.aggregation.retractable:
                period.partial = subtract(period.partial, change.partial)
            else:
                # Growing aggregations: the newer partial of the same minute (which follows) supersedes
                # the value by merging; only the event count is taken back.
                period.partial = replace(period.partial, count=period.partial.count - change.partial.count)
        else:
            period.partial = merge(period.partial, change.partial)
        period.version += 1
        period.dirty = True
        return None

    def finalize(self, watermark_ms: int) -> list[Final]:
        """Emit (once) and drop every open period whose end + grace the watermark has reached."""
        due = sorted(start for start, p in self.open_periods.items() if self.is_final(p.end_ms, watermark_ms))
        finals = [Final(start, self.open_periods[start].end_ms, self.open_periods[start].partial, watermark_ms) for start in due]
        for start in due:
            del self.open_periods[start]
        return finals

    def provisional(self) -> list[Provisional]:
        """Running totals of the periods that changed since the previous call."""
        out = []
        for start in sorted(self.open_periods):
            period = self.open_periods[start]
            if period.dirty:
                out.append(Provisional(start, period.end_ms, period.partial, period.version))
                period.dirty = False
        return out

    def next_finalization_ms(self) -> int | None:
        """The watermark at which the next open period becomes final (for an event-time timer)."""
        if not self.open_periods:
            return None
        return min(p.end_ms for p in self.open_periods.values()) + self.grace_ms


#: A :class:`PeriodLedger` as plain values (see :meth:`encode_ledger`): aggregation, cycle kind,
#: time zone, anchor, grace in ms, then ``(start_ms, end_ms, version, dirty, partial)`` per open period.
EncodedLedger = tuple[str, str, str, int, int, tuple[tuple[int, int, int, bool, EncodedPartial], ...]]


def encode_ledger(ledger: PeriodLedger) -> EncodedLedger:
    """``ledger`` as plain ints, strings and tuples, for keyed state.

    Pickling the objects themselves cost ~30 µs per row in the finalization operator (dataclass
    and enum reconstruction; docs/benchmarks.md); these tuples pickle and load several times faster.
    """
    cycle = ledger.cycle
    periods = tuple((start, p.end_ms, p.version, p.dirty, encode(p.partial)) for start, p in sorted(ledger.open_periods.items()))
    return (ledger.aggregation.value, cycle.kind.value, cycle.timezone, cycle.anchor, ledger.grace_ms, periods)


@lru_cache(maxsize=1024)
def _cycle(kind: str, timezone: str, anchor: int) -> BillingCycle:
    return BillingCycle(PeriodKind(kind), timezone, anchor)


def decode_ledger(encoded: EncodedLedger) -> PeriodLedger:
    """The inverse of :func:`encode_ledger`."""
    aggregation_value, kind, timezone, anchor, grace_ms, periods = encoded
    aggregation = Aggregation(aggregation_value)
    open_periods = {
        start: _OpenPeriod(end_ms, decode(aggregation, partial), version, dirty)
        for start, end_ms, version, dirty, partial in periods
    }
    return PeriodLedger(aggregation, _cycle(kind, timezone, anchor), timedelta(milliseconds=grace_ms), open_periods)
