"""Replay rules (udfs/revisions.py): whole periods, closedness, minute-to-period combination and the diff."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.aggregators import Partial, merge_all, of_event
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, PeriodKind, billing_period, epoch_millis
from udfs.revisions import (
    Absorbed,
    NewTotal,
    OldFinal,
    diff_finals,
    group_key,
    minute_partial,
    open_periods,
    period_totals,
    periods_overlapping,
)

pytestmark = pytest.mark.unit

UTC_MONTH = BillingCycle()
instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])
cycles = st.one_of(
    st.builds(BillingCycle, kind=st.just(PeriodKind.MONTH), anchor=st.integers(1, 31), timezone=ZONES),
    st.builds(BillingCycle, kind=st.just(PeriodKind.WEEK), anchor=st.integers(1, 7), timezone=ZONES),
    st.builds(BillingCycle, kind=st.just(PeriodKind.DAY), anchor=st.just(1), timezone=ZONES),
)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(instants, st.integers(min_value=1, max_value=24 * 90), cycles)
def test_periods_overlapping_are_whole_contiguous_and_cover_the_range(start: datetime, hours: int, cycle: BillingCycle) -> None:
    end = start + timedelta(hours=hours)
    periods = periods_overlapping(start, end, cycle)
    assert periods, "a non-empty range overlaps at least one period"
    assert periods[0].start <= start < periods[0].end  # the first one contains the start: the range widens, never cuts
    assert periods[-1].start < end <= periods[-1].end
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start  # no gap, no overlap
    for period in periods:
        assert billing_period(period.start, cycle) == period  # each one is a real period of the cycle


def test_a_range_inside_one_month_is_that_whole_month() -> None:
    [period] = periods_overlapping(t("2026-02-10 00:00"), t("2026-02-11 00:00"), UTC_MONTH)
    assert (period.start, period.end) == (t("2026-02-01 00:00"), t("2026-03-01 00:00"))


def test_a_range_ending_exactly_at_a_period_end_does_not_take_the_next_period() -> None:
    periods = periods_overlapping(t("2026-01-15 00:00"), t("2026-03-01 00:00"), UTC_MONTH)
    assert [p.start for p in periods] == [t("2026-01-01 00:00"), t("2026-02-01 00:00")]


def test_an_empty_or_inverted_range_has_no_periods() -> None:
    assert periods_overlapping(t("2026-01-15 00:00"), t("2026-01-15 00:00"), UTC_MONTH) == []
    assert periods_overlapping(t("2026-01-16 00:00"), t("2026-01-15 00:00"), UTC_MONTH) == []


def test_anchor_31_periods_clamp_to_month_ends_and_stay_contiguous() -> None:
    cycle = BillingCycle(kind=PeriodKind.MONTH, anchor=31, timezone="UTC")
    periods = periods_overlapping(t("2024-01-31 00:00"), t("2024-04-30 00:00"), cycle)
    assert [p.start.date().isoformat() for p in periods] == ["2024-01-31", "2024-02-29", "2024-03-31"]
    assert periods[-1].end == t("2024-04-30 00:00")


def test_open_periods_are_those_whose_grace_has_not_passed_the_watermark() -> None:
    periods = periods_overlapping(t("2026-01-01 00:00"), t("2026-03-01 00:00"), UTC_MONTH)
    grace = timedelta(hours=48)
    assert open_periods(periods, grace, t("2026-03-03 00:00")) == []  # February's end + grace = 03-03 00:00: closed
    assert open_periods(periods, grace, t("2026-03-02 23:59")) == [periods[1]]
    assert open_periods(periods, grace, None) == periods  # no live final yet: nothing is provably closed


def test_group_keys_match_the_jobs_json_object() -> None:
    assert group_key((), ()) == "{}"
    assert group_key(("model", "region"), ("l", "eu")) == '{"model":"l","region":"eu"}'  # declaration order, compact
    assert group_key(("b", "a"), ("x", "é")) == '{"b":"x","a":"é"}'


def test_minute_partials_keep_only_their_aggregations_fields() -> None:
    latest = (60_000, "e2", Decimal("4"))
    assert minute_partial(Aggregation.SUM, 2, Decimal("3.5"), Decimal(2), Decimal("1.5"), ["x"], latest) == Partial(
        Aggregation.SUM, 2, total=Decimal("3.5")
    )
    assert minute_partial(Aggregation.MIN, 2, Decimal("3.5"), Decimal(2), Decimal("1.5"), [], latest).extreme == Decimal("1.5")
    assert minute_partial(Aggregation.MAX, 2, Decimal("3.5"), Decimal(2), Decimal("1.5"), [], latest).extreme == Decimal(2)
    assert minute_partial(Aggregation.UNIQUE_COUNT, 3, None, None, None, ["a", "b"], None).result() == Decimal(2)
    assert minute_partial(Aggregation.LATEST, 2, None, None, None, [], latest).result() == Decimal(4)
    assert minute_partial(Aggregation.COUNT, 5, Decimal(0), None, None, [], None).result() == Decimal(5)


values = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=9, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Aggregation)), st.lists(st.tuples(st.integers(0, 5), values), min_size=1, max_size=40))
def test_period_totals_equal_aggregating_the_events_directly(aggregation: Aggregation, events: list[tuple[int, Decimal]]) -> None:
    """Combining per-minute partials per period gives what aggregating all the period's events at once gives."""
    minutes: dict[int, list[Partial]] = {}
    direct: list[Partial] = []
    for i, (minute, value) in enumerate(events):
        partial = of_event(aggregation, value, event_ms=minute * 60_000, event_id=f"e{i:03d}", distinct_value=str(value))
        minutes.setdefault(minute, []).append(partial)
        direct.append(partial)
    key = ("acme", "m", "{}", 0)
    combined = period_totals((key, 86_400_000, merge_all(aggregation, ps)) for ps in minutes.values())
    assert combined[key].partial.result() == merge_all(aggregation, direct).result()
    assert combined[key].partial.count == len(events)


def old(value: str, count: int, revision: int = 1) -> OldFinal:
    return OldFinal("sum", 100, Decimal(value), count, revision)


def new(value: str, count: int) -> NewTotal:
    return NewTotal("sum", 100, Partial(Aggregation.SUM, count, total=Decimal(value)))


def test_unchanged_finals_need_no_adjustment() -> None:
    key = ("acme", "tokens", "{}", 0)
    assert diff_finals({key: old("10", 2)}, {key: new("10.000", 2)}) == []


def test_changed_new_and_vanished_finals_each_get_an_adjustment() -> None:
    changed, created, vanished = ("a", "t", "{}", 0), ("b", "t", "{}", 0), ("c", "t", "{}", 0)
    adjustments = {
        a.customer_id: a
        for a in diff_finals({changed: old("10", 2), vanished: old("4", 1)}, {changed: new("12.5", 3), created: new("7", 7)})
    }
    assert (adjustments["a"].old_total, adjustments["a"].new_total, adjustments["a"].delta) == (
        Decimal(10),
        Decimal("12.5"),
        Decimal("2.5"),
    )
    assert (adjustments["b"].old_total, adjustments["b"].new_total, adjustments["b"].old_revision) == (None, Decimal(7), 0)
    assert (adjustments["c"].new_total, adjustments["c"].new_event_count, adjustments["c"].delta) == (None, 0, Decimal(-4))


def test_absorbed_corrections_are_reported_even_when_the_total_is_the_same() -> None:
    key = ("acme", "tokens", "{}", 0)
    [adjustment] = diff_finals({key: old("10", 2)}, {key: new("10", 2)}, {key: Absorbed(1, Decimal("3"))})
    assert (adjustment.superseded_corrections, adjustment.superseded_correction_value) == (1, Decimal(3))


def test_a_max_adjustment_has_no_delta() -> None:
    key = ("acme", "peak", "{}", 0)
    before = OldFinal("max", 100, Decimal(5), 1, 1)
    after = NewTotal("max", 100, Partial(Aggregation.MAX, 1, extreme=Decimal(9)))
    [adjustment] = diff_finals({key: before}, {key: after})
    assert adjustment.delta is None and adjustment.new_total == Decimal(9)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.integers(0, 20), st.tuples(values, st.integers(1, 9))),
    st.dictionaries(st.integers(0, 20), st.tuples(values, st.integers(1, 9))),
)
def test_the_diff_lists_exactly_the_keys_that_differ(
    before: dict[int, tuple[Decimal, int]], after: dict[int, tuple[Decimal, int]]
) -> None:
    old_finals = {("c", "m", "{}", k): OldFinal("sum", 1, v, n, 1) for k, (v, n) in before.items()}
    new_totals = {("c", "m", "{}", k): NewTotal("sum", 1, Partial(Aggregation.SUM, n, total=v)) for k, (v, n) in after.items()}
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    adjustments = diff_finals(old_finals, new_totals)
    assert {a.period_start_ms for a in adjustments} == changed
    for a in adjustments:  # applying every delta to the old totals gives the new ones
        assert (a.old_total or 0) + (a.delta or 0) == (a.new_total or 0)


def test_period_start_keys_are_epoch_millis_of_the_period() -> None:
    [period] = periods_overlapping(t("2026-02-10 00:00"), t("2026-02-11 00:00"), UTC_MONTH)
    assert epoch_millis(period.start) == 1_769_904_000_000
