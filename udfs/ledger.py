"""Finalization rules for one (customer, meter, group-by) key, as a plain state machine.

The reference the job's Java finalization (``udfs/jvm/.../rules/PeriodLedger.java``) is held to by
tests/unit/test_rules_agreement.py. Input is minute partials (a step of a minute's on-time events,
or one late event), each merged into its billing period, and the event-time watermark. Output:

- :class:`Final` — once the watermark passes ``period_end + grace``, the period's
  total is emitted exactly once and its state is dropped (bounded state);
- :class:`Correction` — a minute partial for a period that is already final; it
  carries the period it belongs to and the partial, for the next invoice.

Rules (see docs/semantics.md): event time decides the period; a period is final
exactly when ``period_end + grace <= watermark``; a final never changes; every
minute partial is counted in exactly one of (final, correction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

from udfs.aggregators import Partial, empty, merge
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, billing_period, epoch_millis, from_epoch_millis, local_day

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
    #: The minute partial that came too late for its period's final.
    partial: Partial


@dataclass
class _OpenPeriod:
    end_ms: int
    partial: Partial


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

    def apply(self, minute_ms: int, partial: Partial, watermark_ms: int) -> Correction | None:
        """Merge a minute partial into its period, or return it as a correction if that period is final."""
        start, end = self.period_of(minute_ms)
        if self.is_final(end, watermark_ms):
            return Correction(start, end, minute_ms, partial)
        period = self.open_periods.get(start)
        if period is None:
            period = self.open_periods[start] = _OpenPeriod(end, empty(self.aggregation))
        period.partial = merge(period.partial, partial)
        return None

    def finalize(self, watermark_ms: int) -> list[Final]:
        """Emit (once) and drop every open period whose end + grace the watermark has reached."""
        due = sorted(start for start, p in self.open_periods.items() if self.is_final(p.end_ms, watermark_ms))
        finals = [Final(start, self.open_periods[start].end_ms, self.open_periods[start].partial, watermark_ms) for start in due]
        for start in due:
            del self.open_periods[start]
        return finals
