"""Time buckets and billing periods, in event time.

- minute and hour buckets are UTC;
- day buckets and billing periods follow the customer's IANA time zone, so a
  local day lasts 23, 24 or 25 hours (or 23.5/24.5 on Lord Howe Island), and a
  calendar month in Europe/Berlin starts an hour (or two) before UTC midnight;
- monthly periods start on an anchor day 1–31 at local midnight, clamped to the
  month's last day (anchor 31 → 30 April, 28/29 February).

Every boundary is returned as an aware UTC ``datetime``; periods are half-open
``[start, end)``. Local midnight that does not exist (a DST gap at midnight) maps
to the instant the gap starts; an ambiguous one maps to its first occurrence.
Pure Python (``zoneinfo``), no Flink imports.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PeriodKind(StrEnum):
    MONTH = "month"
    WEEK = "week"
    DAY = "day"


@dataclass(frozen=True)
class Period:
    """A half-open interval ``[start, end)`` of event time, in UTC."""

    start: datetime
    end: datetime

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class BillingCycle:
    """How a customer's billing periods are cut: kind, anchor and time zone."""

    kind: PeriodKind = PeriodKind.MONTH
    timezone: str = "UTC"
    #: MONTH: day of month 1–31 (clamped to month end). WEEK: ISO weekday 1 (Monday) – 7.
    anchor: int = 1

    def __post_init__(self) -> None:
        zone(self.timezone)  # raises for an unknown zone
        limit = {PeriodKind.MONTH: 31, PeriodKind.WEEK: 7, PeriodKind.DAY: 1}[self.kind]
        if not 1 <= self.anchor <= limit:
            raise ValueError(f"anchor {self.anchor} out of range 1–{limit} for {self.kind.value} periods")


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone (cached); raises ``ValueError`` for an unknown name."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("naive datetime: event times must carry an offset")
    return instant.astimezone(UTC)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local ``day`` begins (first instant whose local date is ``day``)."""
    candidate = datetime.combine(day, time(0), tzinfo=tz)  # fold=0: first occurrence / pre-gap offset
    instant = candidate.astimezone(UTC)
    # In a gap at midnight, fold=0 resolves 00:00 with the pre-transition offset: that is the
    # instant the gap starts, when the local date already reads `day`. Check and step back if not.
    if instant.astimezone(tz).date() < day:
        # 00:00 did not exist and the resolution landed before the day; the day starts at the transition.
        probe = instant
        while probe.astimezone(tz).date() < day:
            probe += timedelta(minutes=15)
        lo, hi = probe - timedelta(minutes=15), probe
        while hi - lo > timedelta(seconds=1):
            mid = lo + (hi - lo) / 2
            if mid.astimezone(tz).date() < day:
                lo = mid
            else:
                hi = mid
        instant = hi.replace(microsecond=0)
    return instant


def minute_bucket(instant: datetime) -> datetime:
    """Start of the UTC minute containing ``instant``."""
    return as_utc(instant).replace(second=0, microsecond=0)


def hour_bucket(instant: datetime) -> datetime:
    """Start of the UTC hour containing ``instant``."""
    return as_utc(instant).replace(minute=0, second=0, microsecond=0)


def local_day(instant: datetime, timezone: str) -> Period:
    """The customer's local calendar day containing ``instant``."""
    tz = zone(timezone)
    today = as_utc(instant).astimezone(tz).date()
    return Period(local_midnight(today, tz), local_midnight(today + timedelta(days=1), tz))


def _month_anchor(year: int, month: int, anchor: int) -> date:
    return date(year, month, min(anchor, calendar.monthrange(year, month)[1]))


def _add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def billing_period(instant: datetime, cycle: BillingCycle) -> Period:
    """The billing period of ``cycle`` that contains ``instant``."""
    tz = zone(cycle.timezone)
    local = as_utc(instant).astimezone(tz).date()
    if cycle.kind is PeriodKind.DAY:
        return local_day(instant, cycle.timezone)
    if cycle.kind is PeriodKind.WEEK:
        start_day = local - timedelta(days=(local.isoweekday() - cycle.anchor) % 7)
        return Period(local_midnight(start_day, tz), local_midnight(start_day + timedelta(days=7), tz))
    this_start = _month_anchor(local.year, local.month, cycle.anchor)
    if local >= this_start:
        start_day = this_start
        end_day = _month_anchor(*_add_months(local.year, local.month, 1), cycle.anchor)
    else:
        start_day = _month_anchor(*_add_months(local.year, local.month, -1), cycle.anchor)
        end_day = this_start
    return Period(local_midnight(start_day, tz), local_midnight(end_day, tz))


def rfc3339_millis(instant: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z`` (``2026-03-01T00:00:00.000Z``), as the contract prints times."""
    return as_utc(instant).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_millis(instant: datetime) -> int:
    """Milliseconds since the Unix epoch (exact integer arithmetic, no float)."""
    delta = as_utc(instant) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_epoch_millis(millis: int) -> datetime:
    return EPOCH + timedelta(milliseconds=millis)
