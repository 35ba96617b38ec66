"""Aggregators and the finalization ledger: exact sums, finals once, nothing lost or double counted."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from udfs.aggregators import Partial, decode, empty, encode, merge, merge_all, of_event
from udfs.ledger import Correction, Final, PeriodLedger
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, PeriodKind, billing_period, epoch_millis, from_epoch_millis

decimals = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=9, allow_nan=False, allow_infinity=False)


def partial_of(aggregation: Aggregation, values: list[Decimal]) -> Partial:
    return merge_all(
        aggregation, [of_event(aggregation, v, event_ms=i, event_id=f"e{i}", distinct_value=str(v)) for i, v in enumerate(values)]
    )


@given(
    st.sampled_from(list(Aggregation)),
    st.lists(decimals, max_size=30),
    st.lists(decimals, max_size=30),
    st.lists(decimals, max_size=30),
)
def test_merge_is_associative_and_commutative(
    aggregation: Aggregation, a: list[Decimal], b: list[Decimal], c: list[Decimal]
) -> None:
    pa, pb, pc = (partial_of(aggregation, x) for x in (a, b, c))
    assert merge(merge(pa, pb), pc).result() == merge(pa, merge(pb, pc)).result()
    assert merge(pa, pb).result() == merge(pb, pa).result()
    assert merge(pa, empty(aggregation)) == pa


@given(st.lists(decimals, max_size=200))
def test_sums_are_exact(values: list[Decimal]) -> None:
    assert partial_of(Aggregation.SUM, values).result() == sum(values, Decimal(0))


def test_a_million_tenths_sum_to_exactly_one_hundred_thousand() -> None:
    tenth = of_event(Aggregation.SUM, Decimal("0.1"))
    total = empty(Aggregation.SUM)
    for _ in range(10_000):
        total = merge(total, tenth)
    hundred = total
    for _ in range(99):
        total = merge(total, hundred)
    assert total.result() == Decimal("100000") and total.count == 1_000_000


def test_latest_takes_the_latest_event_time_not_arrival() -> None:
    early = of_event(Aggregation.LATEST, Decimal("5"), event_ms=2000, event_id="b")
    late = of_event(Aggregation.LATEST, Decimal("7"), event_ms=1000, event_id="a")
    assert merge(early, late).result() == Decimal("5") == merge(late, early).result()


# --- the ledger, driven as the job drives it -----------------------------------------------------

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    minute: int  # minutes after START
    value: Decimal
    arrival: int  # arrival order position


def simulate(
    aggregation: Aggregation,
    cycle: BillingCycle,
    grace: timedelta,
    events: list[Event],
    lateness: int,
) -> tuple[list[Final], list[Correction], PeriodLedger]:
    """Feed events in arrival order, one minute partial each; the watermark trails the max event time."""
    ledger = PeriodLedger(aggregation, cycle, grace)
    finals: list[Final] = []
    corrections: list[Correction] = []
    max_seen = 0
    for event in sorted(events, key=lambda e: e.arrival):
        minute_ms = epoch_millis(START + timedelta(minutes=event.minute))
        new = of_event(aggregation, event.value, event_ms=minute_ms, event_id=str(event.arrival), distinct_value=str(event.value))
        max_seen = max(max_seen, minute_ms)
        watermark = max_seen - lateness * 60_000
        correction = ledger.apply(minute_ms, new, watermark)
        if correction is not None:
            corrections.append(correction)
        finals.extend(ledger.finalize(watermark))
    finals.extend(ledger.finalize(2**62))  # end of input: the watermark jumps to +infinity
    return finals, corrections, ledger


events_strategy = st.lists(
    st.builds(
        Event,
        st.integers(0, 60 * 24 * 70),
        st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False, allow_infinity=False),
        st.integers(0, 10**6),
    ),
    max_size=120,
)
cycle_strategy = st.sampled_from(
    [
        BillingCycle(PeriodKind.DAY, "UTC"),
        BillingCycle(PeriodKind.WEEK, "Europe/Berlin", 3),
        BillingCycle(PeriodKind.MONTH, "Asia/Kolkata", 31),
    ]
)


@settings(max_examples=150, deadline=None)
@given(events_strategy, cycle_strategy, st.integers(0, 72), st.integers(0, 60 * 24 * 10))
def test_sum_every_event_counted_once_in_a_final_or_a_correction(
    events: list[Event], cycle: BillingCycle, grace_h: int, lateness: int
) -> None:
    finals, corrections, ledger = simulate(Aggregation.SUM, cycle, timedelta(hours=grace_h), events, lateness)
    assert not ledger.open_periods, "end of input finalizes everything: state is empty"
    starts = [f.period_start_ms for f in finals]
    assert len(starts) == len(set(starts)), "each period is finalized exactly once"
    correction_total = sum((c.partial.result() for c in corrections), Decimal(0))
    correction_count = sum(c.partial.count for c in corrections)
    assert sum((f.partial.result() for f in finals), Decimal(0)) + correction_total == sum((e.value for e in events), Decimal(0))
    assert sum(f.partial.count for f in finals) + correction_count == len(events)
    for final in finals:
        assert final.finalized_at_watermark_ms >= final.period_end_ms + grace_h * 3_600_000


@settings(max_examples=100, deadline=None)
@given(events_strategy, cycle_strategy)
def test_in_order_events_within_grace_never_become_corrections(events: list[Event], cycle: BillingCycle) -> None:
    in_order = [Event(e.minute, e.value, e.minute * 10**7 + i) for i, e in enumerate(events)]
    finals, corrections, _ = simulate(Aggregation.SUM, cycle, timedelta(hours=1), in_order, lateness=0)
    assert corrections == []
    expected: dict[int, Decimal] = defaultdict(Decimal)
    for e in events:
        expected[epoch_millis(billing_period(START + timedelta(minutes=e.minute), cycle).start)] += e.value
    assert {f.period_start_ms: f.partial.result() for f in finals} == dict(expected)


@settings(max_examples=100, deadline=None)
@given(
    events_strategy,
    cycle_strategy,
    st.sampled_from([Aggregation.MAX, Aggregation.MIN, Aggregation.UNIQUE_COUNT, Aggregation.LATEST, Aggregation.COUNT]),
)
@example(  # found by CI: two events of one minute shared an event id in this test's generator
    [Event(0, Decimal("0.000"), 0), Event(0, Decimal("0.001"), 0)], BillingCycle(PeriodKind.DAY, "UTC"), Aggregation.LATEST
)
def test_other_aggregations_match_a_recomputation_when_nothing_is_late(
    events: list[Event], cycle: BillingCycle, aggregation: Aggregation
) -> None:
    # Unique arrival positions give unique event ids, as dedup guarantees in the job.
    in_order = [Event(e.minute, e.value, e.minute * 10**7 + i) for i, e in enumerate(events)]
    finals, corrections, _ = simulate(aggregation, cycle, timedelta(0), in_order, lateness=0)
    assert corrections == []
    by_period: dict[int, list[Event]] = defaultdict(list)
    for e in in_order:
        by_period[epoch_millis(billing_period(START + timedelta(minutes=e.minute), cycle).start)].append(e)
    for final in finals:
        group = by_period[final.period_start_ms]
        values = [e.value for e in group]
        expected = {
            Aggregation.MAX: max(values),
            Aggregation.MIN: min(values),
            Aggregation.UNIQUE_COUNT: Decimal(len({str(v) for v in values})),
            Aggregation.COUNT: Decimal(len(values)),
            Aggregation.LATEST: max(group, key=lambda e: (e.minute, str(e.arrival))).value,
        }[aggregation]
        assert final.partial.result() == expected
        assert final.partial.count == len(group), "every event is counted once"


def test_worked_example_late_within_grace_counts_late_beyond_grace_corrects() -> None:
    cycle = BillingCycle(PeriodKind.DAY, "UTC")
    ledger = PeriodLedger(Aggregation.SUM, cycle, timedelta(hours=2))
    day1 = epoch_millis(datetime(2026, 1, 1, 12, tzinfo=UTC))
    day2_0100 = epoch_millis(datetime(2026, 1, 2, 1, tzinfo=UTC))
    day2_0300 = epoch_millis(datetime(2026, 1, 2, 3, tzinfo=UTC))
    ten = of_event(Aggregation.SUM, Decimal("10"))
    assert ledger.apply(day1, ten, watermark_ms=day1) is None
    assert ledger.apply(day1 + 60_000, ten, watermark_ms=day2_0100) is None  # 1 h after day end: inside grace
    assert ledger.finalize(day2_0100) == []
    (final,) = ledger.finalize(day2_0300)  # day end + 2 h grace passed
    assert final.partial.result() == Decimal("20") and from_epoch_millis(final.period_end_ms) == datetime(2026, 1, 2, tzinfo=UTC)
    correction = ledger.apply(day1 + 120_000, ten, watermark_ms=day2_0300)
    assert isinstance(correction, Correction) and correction.partial.result() == Decimal("10")
    assert from_epoch_millis(correction.period_start_ms) == datetime(2026, 1, 1, tzinfo=UTC)
    assert ledger.finalize(2**62) == [], "a final is never emitted twice"


# --- the stored form: what keyed state holds between rows -------------------------------------------

exotic_decimals = st.sampled_from([Decimal("0"), Decimal("0.000"), Decimal("-0"), Decimal("1E+2"), Decimal("-12.500000000")])


@given(st.sampled_from(list(Aggregation)), st.lists(decimals | exotic_decimals, max_size=20))
def test_a_partial_survives_its_stored_form_exactly(aggregation: Aggregation, values: list[Decimal]) -> None:
    partial = partial_of(aggregation, values)
    restored = decode(aggregation, encode(partial))
    assert restored == partial
    # the exact text too (a final's total is printed from it): 0.000 stays 0.000, 1E+2 stays 1E+2
    assert str(restored.result()) == str(partial.result()) and str(restored.total) == str(partial.total)
