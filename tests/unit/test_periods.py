"""Period arithmetic: month ends, leap years, anchors 29–31, DST, half-hour zones (hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from udfs.periods import (
    BillingCycle,
    PeriodKind,
    billing_period,
    epoch_millis,
    from_epoch_millis,
    hour_bucket,
    local_day,
    minute_bucket,
    zone,
)

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Australia/Adelaide",  # +09:30/+10:30 with DST
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/Santiago",  # DST gap at local midnight
    "Pacific/Chatham",  # +12:45/+13:45
    "America/St_Johns",  # -03:30/-02:30
]

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC))
cycles = st.one_of(
    st.builds(BillingCycle, st.just(PeriodKind.MONTH), st.sampled_from(ZONES), st.integers(1, 31)),
    st.builds(BillingCycle, st.just(PeriodKind.WEEK), st.sampled_from(ZONES), st.integers(1, 7)),
    st.builds(BillingCycle, st.just(PeriodKind.DAY), st.sampled_from(ZONES), st.just(1)),
)


@given(instants, cycles)
def test_the_period_contains_the_instant(instant: datetime, cycle: BillingCycle) -> None:
    assert instant in billing_period(instant, cycle)


@given(instants, cycles)
def test_periods_tile_time_without_gaps_or_overlaps(instant: datetime, cycle: BillingCycle) -> None:
    period = billing_period(instant, cycle)
    assert billing_period(period.end, cycle).start == period.end
    assert billing_period(period.start - timedelta(microseconds=1), cycle).end == period.start


@given(instants, st.sampled_from(ZONES), st.integers(1, 31))
def test_monthly_period_starts_on_the_clamped_anchor_at_local_midnight(instant: datetime, tz: str, anchor: int) -> None:
    period = billing_period(instant, BillingCycle(PeriodKind.MONTH, tz, anchor))
    local_start = period.start.astimezone(zone(tz))
    month_days = (date(local_start.year + local_start.month // 12, local_start.month % 12 + 1, 1) - timedelta(days=1)).day
    assert local_start.day == min(anchor, month_days)
    # Local midnight, or the end of a DST gap that swallowed midnight (never later than 01:00).
    assert (local_start.hour, local_start.minute) in {(0, 0), (1, 0), (0, 30)}
    assert timedelta(days=27) < period.duration < timedelta(days=32)


@given(instants, st.sampled_from(ZONES))
def test_local_days_last_24_hours_give_or_take_a_dst_shift(instant: datetime, tz: str) -> None:
    day = local_day(instant, tz)
    assert day.duration in {timedelta(hours=h) for h in (23, 24, 25)} | {timedelta(hours=23.5), timedelta(hours=24.5)}
    assert day.start.astimezone(zone(tz)).date() == instant.astimezone(zone(tz)).date()


@given(instants)
def test_minute_and_hour_buckets_are_utc_floors(instant: datetime) -> None:
    assert minute_bucket(instant) <= instant < minute_bucket(instant) + timedelta(minutes=1)
    assert hour_bucket(instant) <= minute_bucket(instant) and hour_bucket(instant).minute == 0


@given(instants, st.sampled_from(ZONES), st.sampled_from(list(PeriodKind)))
def test_every_utc_minute_falls_in_exactly_one_local_day_and_period(instant: datetime, tz: str, kind: PeriodKind) -> None:
    """Rolling minute buckets up into days and periods never splits a minute (boundaries are minute-aligned)."""
    minute = minute_bucket(instant)
    last = minute + timedelta(seconds=59, microseconds=999999)
    assert local_day(minute, tz) == local_day(last, tz)
    cycle = BillingCycle(kind, tz, 1)
    assert billing_period(minute, cycle) == billing_period(last, cycle)


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_epoch_millis_round_trip(millis: int) -> None:
    assert epoch_millis(from_epoch_millis(millis)) == millis


# --- worked examples that a reader can check by hand -------------------------------------------


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_calendar_month_in_berlin_is_not_the_utc_month() -> None:
    period = billing_period(utc(2026, 3, 31, 22, 30), BillingCycle(PeriodKind.MONTH, "Europe/Berlin"))
    assert (period.start, period.end) == (utc(2026, 3, 31, 22), utc(2026, 4, 30, 22))  # CEST: UTC+2
    january = billing_period(utc(2026, 1, 15), BillingCycle(PeriodKind.MONTH, "Europe/Berlin"))
    assert (january.start, january.end) == (utc(2025, 12, 31, 23), utc(2026, 1, 31, 23))  # CET: UTC+1


def test_berlin_dst_days_have_23_and_25_hours() -> None:
    assert local_day(utc(2026, 3, 29, 12), "Europe/Berlin").duration == timedelta(hours=23)
    assert local_day(utc(2026, 10, 25, 12), "Europe/Berlin").duration == timedelta(hours=25)


@pytest.mark.parametrize(
    ("anchor", "instant", "start", "end"),
    [
        (31, utc(2026, 2, 15), utc(2026, 1, 31), utc(2026, 2, 28)),
        (31, utc(2026, 2, 28), utc(2026, 2, 28), utc(2026, 3, 31)),
        (30, utc(2024, 2, 29, 12), utc(2024, 2, 29), utc(2024, 3, 30)),  # leap year
        (29, utc(2025, 2, 28, 23, 59), utc(2025, 2, 28), utc(2025, 3, 29)),  # not a leap year
        (29, utc(2025, 3, 28), utc(2025, 2, 28), utc(2025, 3, 29)),
        (31, utc(2026, 4, 30, 23, 59), utc(2026, 4, 30), utc(2026, 5, 31)),
        (1, utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
    ],
)
def test_anniversary_anchors_clamp_to_month_end(anchor: int, instant: datetime, start: datetime, end: datetime) -> None:
    period = billing_period(instant, BillingCycle(PeriodKind.MONTH, "UTC", anchor))
    assert (period.start, period.end) == (start, end)


def test_half_hour_zone_month_starts_at_1830_utc() -> None:
    period = billing_period(utc(2026, 3, 31, 18, 29), BillingCycle(PeriodKind.MONTH, "Asia/Kolkata"))
    assert (period.start, period.end) == (utc(2026, 2, 28, 18, 30), utc(2026, 3, 31, 18, 30))
    assert billing_period(utc(2026, 3, 31, 18, 30), BillingCycle(PeriodKind.MONTH, "Asia/Kolkata")).start == utc(
        2026, 3, 31, 18, 30
    )


def test_midnight_dst_gap_starts_the_day_at_the_transition() -> None:
    day = local_day(utc(2026, 9, 6, 12), "America/Santiago")  # 00:00 → 01:00 on 6 September
    assert (day.start, day.end) == (utc(2026, 9, 6, 4), utc(2026, 9, 7, 3))


def test_weekly_periods_start_on_the_anchor_weekday() -> None:
    period = billing_period(utc(2026, 11, 21), BillingCycle(PeriodKind.WEEK, "UTC", 1))  # a Saturday
    assert (period.start, period.end) == (utc(2026, 11, 16), utc(2026, 11, 23))


def test_unknown_zone_and_bad_anchor_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        BillingCycle(PeriodKind.MONTH, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="anchor 32 out of range"):
        BillingCycle(PeriodKind.MONTH, "UTC", 32)


@settings(max_examples=50)
@given(instants)
def test_naive_datetimes_are_refused(instant: datetime) -> None:
    assume(instant.tzinfo is not None)
    with pytest.raises(ValueError, match="naive"):
        minute_bucket(instant.replace(tzinfo=None))
