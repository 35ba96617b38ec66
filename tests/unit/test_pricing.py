"""Pricing (udfs/pricing.py): a worked example of every model and rule, and the properties they keep."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal, localcontext

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from udfs.periods import BillingCycle, Period, billing_period
from udfs.pricing import (
    EXACT,
    Charge,
    CustomerRating,
    Graduated,
    LineKind,
    Money,
    NoRateInEffect,
    Package,
    PackageRounding,
    Percentage,
    PerUnit,
    PriceModel,
    RateCard,
    RatePlan,
    RateVersion,
    Rating,
    Rounding,
    Tier,
    Volume,
    number_problem,
    price,
)

D = Decimal
USD = Money.of("USD")
JAN = datetime(2026, 1, 1, tzinfo=UTC)
MARCH = Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def card(model: PriceModel, **options: object) -> RateCard:
    return RateCard("m", (RateVersion(JAN, model, **options),))  # type: ignore[arg-type]


def charge(model: PriceModel, quantity: str | Decimal, money: Money = USD, **options: object) -> Charge:
    return price(card(model, **options), MARCH, D(quantity), money)


def rows(result: Charge) -> list[tuple[str, str, str]]:
    """(kind, exact, rounded) of every line, as text: compared with the worked examples."""
    return [(line.kind.value, f"{line.amount:f}", f"{line.rounded:f}") for line in result.lines]


def totals(result: Charge) -> tuple[str, str]:
    return f"{result.amount:f}", f"{result.rounded:f}"


TIERS = (Tier(D(1000), D("0.01")), Tier(D(10000), D("0.008")), Tier(None, D("0.005")))


# --- worked examples: one per model and rule ------------------------------------------------------


def test_per_unit() -> None:
    result = charge(PerUnit(D("0.002")), "1234.5")
    assert rows(result) == [("units", "2.4690", "2.47")]
    assert totals(result) == ("2.4690", "2.47")
    assert result.lines[0].quantity == D("1234.5") and result.lines[0].unit_price == D("0.002")


def test_graduated_prices_each_tiers_units_at_its_price() -> None:
    result = charge(Graduated(TIERS), "12500")
    assert rows(result) == [("units", "10.00", "10.00"), ("units", "72.000", "72.00"), ("units", "12.500", "12.50")]
    assert totals(result) == ("94.500", "94.50")
    assert [str(line.tier) for line in result.lines] == [
        "tier 1 (0 to 1000)",
        "tier 2 (over 1000 to 10000)",
        "tier 3 (over 10000)",
    ]


def test_volume_prices_everything_at_the_tier_it_lands_in() -> None:
    assert totals(charge(Volume(TIERS), "12500")) == ("62.500", "62.50")
    assert totals(charge(Volume(TIERS), "5000")) == ("40.000", "40.00")


@pytest.mark.parametrize(
    ("quantity", "graduated", "volume"),
    [
        ("1000", "10.00", "10.00"),  # exactly on tier 1's up_to: in tier 1
        ("1000.000000001", "10.000000000008", "8.000000000008"),  # one billionth beyond: tier 2
        ("10000", "82.000", "80.000"),
    ],
)
def test_a_quantity_on_a_bound_belongs_to_the_lower_tier(quantity: str, graduated: str, volume: str) -> None:
    assert charge(Graduated(TIERS), quantity).amount == D(graduated)
    assert charge(Volume(TIERS), quantity).amount == D(volume)
    on_bound = charge(Graduated(TIERS), "1000")
    assert [line.tier.index for line in on_bound.lines if line.tier] == [1]


@pytest.mark.parametrize(
    ("quantity", "rounding", "packages", "rounded"),
    [
        ("2001", PackageRounding.UP, "3", "7.50"),
        ("2001", PackageRounding.DOWN, "2", "5.00"),
        ("2000", PackageRounding.UP, "2", "5.00"),
    ],
)
def test_package(quantity: str, rounding: PackageRounding, packages: str, rounded: str) -> None:
    result = charge(Package(D(1000), D("2.50"), rounding), quantity)
    assert [(line.kind, line.quantity, line.rounded) for line in result.lines] == [(LineKind.PACKAGES, D(packages), D(rounded))]


def test_package_of_zero_and_of_fractional_sizes() -> None:
    assert charge(Package(D(1000), D("2.50")), "0").rounded == D("0.00")
    assert charge(Package(D("0.5"), D("1")), "1.2").lines[0].quantity == 3


def test_percentage_with_minimum_and_maximum() -> None:
    fee = Percentage(D("2.9"), min_amount=D("0.30"), max_amount=D("25.00"))
    assert rows(charge(fee, "1000.00")) == [("percentage", "29.00000", "29.00"), ("fee_maximum", "-4.00000", "-4.00")]
    assert totals(charge(fee, "1000.00")) == ("25.00000", "25.00")
    assert rows(charge(fee, "5")) == [("percentage", "0.145", "0.15"), ("fee_minimum", "0.155", "0.15")]
    assert totals(charge(fee, "5")) == ("0.300", "0.30")
    assert rows(charge(fee, "500")) == [("percentage", "14.500", "14.50")]


def test_a_fee_bound_reached_in_one_column_only_gets_its_line() -> None:
    fee = Percentage(D("1"), min_amount=D("0.10"))
    # 9.995 x 1% = 0.09995 exact, rounds to 0.10: the minimum tops up the exact column only
    assert rows(charge(fee, "9.995")) == [("percentage", "0.09995", "0.10"), ("fee_minimum", "0.00005", "0.00")]
    assert totals(charge(fee, "9.995")) == ("0.10000", "0.10")


def test_flat_price_per_tier_alone_or_with_a_unit_price() -> None:
    base_fee = Graduated((Tier(D(100), flat_price=D(10)), Tier(None, D("0.05"), D(1))))
    assert rows(charge(base_fee, "0")) == [("flat", "10", "10.00")]  # tier 1 is reached by every quantity
    assert totals(charge(base_fee, "100")) == ("10", "10.00")
    assert rows(charge(base_fee, "150")) == [("flat", "10", "10.00"), ("units", "2.50", "2.50"), ("flat", "1", "1.00")]
    nothing_at_zero = Graduated((Tier(D(0), D(0)), Tier(None, flat_price=D(10))))
    assert totals(charge(nothing_at_zero, "0")) == ("0", "0.00")
    assert totals(charge(nothing_at_zero, "0.5")) == ("10", "10.00")
    volume = Volume((Tier(D(100), flat_price=D(5)), Tier(D(1000), D("0.01"), D(20)), Tier(None, D("0.005"))))
    assert rows(charge(volume, "500")) == [("units", "5.00", "5.00"), ("flat", "20", "20.00")]
    assert totals(charge(volume, "100")) == ("5", "5.00")


def test_included_quantity_is_free_and_tiers_count_what_remains() -> None:
    assert rows(charge(PerUnit(D("0.01")), "800", included=D(1000))) == [("included", "0", "0.00"), ("units", "0.00", "0.00")]
    result = charge(PerUnit(D("0.01")), "1500", included=D(1000))
    assert [(line.kind.value, line.quantity) for line in result.lines] == [("included", D(1000)), ("units", D(500))]
    assert result.rounded == D("5.00")
    # tier bounds count billable units, after the included quantity
    assert charge(Graduated(TIERS), "1500", included=D(500)).amount == D("10.00")


def test_period_minimum_adds_a_true_up_line() -> None:
    result = charge(PerUnit(D("0.01")), "1000", minimum=D("25.00"))
    assert rows(result) == [("units", "10.00", "10.00"), ("minimum", "15.00", "15.00")]
    assert totals(result) == ("25.00", "25.00")
    assert rows(charge(PerUnit(D("0.01")), "3000", minimum=D("25.00"))) == [("units", "30.00", "30.00")]
    assert totals(charge(PerUnit(D("0.01")), "0", minimum=D("25.00"))) == ("25.00", "25.00")  # a commitment


def test_quantity_rounding_comes_before_everything() -> None:
    result = charge(PerUnit(D("0.001")), "10.2", quantity_rounding=Rounding(0, ROUND_UP))
    assert (result.quantity, result.rated_quantity, result.amount) == (D("10.2"), D(11), D("0.011"))
    assert charge(PerUnit(D(1)), "-10.2", quantity_rounding=Rounding(0, ROUND_UP)).rated_quantity == D(-11)  # away from zero


@pytest.mark.parametrize(
    ("money", "amount", "rounded"),
    [
        (Money.of("USD"), "1.005", "1.01"),
        (Money.of("USD"), "-1.005", "-1.01"),
        (Money.of("USD", ROUND_HALF_EVEN), "1.005", "1.00"),
        (Money.of("USD", ROUND_HALF_EVEN), "1.015", "1.02"),
        (Money.of("USD", ROUND_DOWN), "1.009", "1.00"),
        (Money.of("JPY"), "1234.5", "1235"),
        (Money.of("KWD"), "1.0005", "1.001"),
        (Money.of("XTS", minor_units=4), "1.00005", "1.0001"),
    ],
)
def test_money_rounds_to_the_minor_unit(money: Money, amount: str, rounded: str) -> None:
    assert f"{money.round(D(amount)):f}" == rounded


def test_unknown_currencies_and_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="minor_units"):
        Money.of("XTS")
    with pytest.raises(ValueError, match="ROUND_HALF_UP"):
        Money("USD", 2, "HALF_UP")
    with pytest.raises(ValueError, match="ISO 4217"):
        Money("usd", 2)


def test_negative_quantities_mirror_the_usage_lines_without_fees() -> None:
    result = charge(Graduated((Tier(D(100), D("0.10"), D(5)), Tier(None, D("0.05")))), "-150", included=D(50), minimum=D(20))
    assert [(line.kind.value, line.quantity, f"{line.rounded:f}") for line in result.lines] == [
        ("units", D(-100), "-10.00"),
        ("units", D(-50), "-2.50"),
    ]
    assert totals(result) == ("-12.50", "-12.50")
    assert totals(charge(Package(D(1000), D("2.50")), "-1")) == ("-2.50", "-2.50")
    assert totals(charge(Percentage(D("2.9"), min_amount=D(1)), "-100")) == ("-2.900", "-2.90")


def test_zero() -> None:
    for model in (PerUnit(D("0.01")), Graduated(TIERS), Volume(TIERS), Package(D(10), D(1)), Percentage(D(3))):
        assert charge(model, "0").rounded == 0


# --- effective dates ---------------------------------------------------------------------------------

MID_MARCH = datetime(2026, 3, 15, tzinfo=UTC)
CHANGING = RateCard(
    "m",
    (RateVersion(JAN, PerUnit(D("0.01")), ends_before=MID_MARCH), RateVersion(MID_MARCH, PerUnit(D("0.02")))),
)


def test_the_version_at_the_period_start_prices_the_whole_period() -> None:
    march = price(CHANGING, MARCH, D(1000), USD)
    assert (march.rounded, march.version.starts_at, march.pending_change) == (D("10.00"), JAN, MID_MARCH)
    april = price(CHANGING, Period(MARCH.end, datetime(2026, 5, 1, tzinfo=UTC)), D(1000), USD)
    assert (april.rounded, april.pending_change) == (D("20.00"), None)


def test_versions_are_half_open_at_the_period_start() -> None:
    starting_on_the_change = Period(MID_MARCH, MID_MARCH + timedelta(days=30))
    assert CHANGING.version_for(starting_on_the_change).starts_at == MID_MARCH  # starts_at is in effect
    just_before = Period(MID_MARCH - timedelta(microseconds=1), MID_MARCH + timedelta(days=30))
    assert CHANGING.version_for(just_before).starts_at == JAN  # ends_before is not
    assert price(CHANGING, just_before, D(1), USD).pending_change == MID_MARCH


def test_a_change_at_utc_midnight_misses_a_berlin_period_that_started_before_it() -> None:
    change = datetime(2026, 3, 1, tzinfo=UTC)
    cards = RateCard("m", (RateVersion(JAN, PerUnit(D(1)), ends_before=change), RateVersion(change, PerUnit(D(2)))))
    berlin = billing_period(datetime(2026, 3, 10, tzinfo=UTC), BillingCycle(timezone="Europe/Berlin"))
    assert berlin.start == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert price(cards, berlin, D(1), USD).rounded == D("1.00")  # still the old version for all of March
    # a day earlier, the change prices every zone's March: March periods start 2026-02-28T10:00Z at the earliest
    early = datetime(2026, 2, 28, tzinfo=UTC)
    cards = RateCard("m", (RateVersion(JAN, PerUnit(D(1)), ends_before=early), RateVersion(early, PerUnit(D(2)))))
    for timezone in ("Pacific/Kiritimati", "Europe/Berlin", "UTC", "Pacific/Pago_Pago"):
        period = billing_period(datetime(2026, 3, 10, tzinfo=UTC), BillingCycle(timezone=timezone))
        assert price(cards, period, D(1), USD).rounded == D("2.00"), timezone


def test_a_gap_in_the_card_prices_nothing() -> None:
    ended = RateCard("m", (RateVersion(JAN, PerUnit(D(1)), ends_before=MARCH.start),))
    with pytest.raises(NoRateInEffect, match="no version of 'm'"):
        price(ended, MARCH, D(1), USD)


def test_card_problems_name_the_version_and_the_fix() -> None:
    overlapping = RateCard("m", (RateVersion(JAN, PerUnit(D(1))), RateVersion(MID_MARCH, PerUnit(D(2)))))
    assert overlapping.problems() == [
        ("[1].starts_at", "overlaps version [0], which has no ends_before: give [0] ends_before: 2026-03-15T00:00:00Z")
    ]
    unsorted = RateCard("m", (RateVersion(MID_MARCH, PerUnit(D(1))), RateVersion(JAN, PerUnit(D(2)))))
    assert unsorted.problems() == [("[1].starts_at", "versions go oldest first: must be after [0].starts_at")]
    assert RateCard("m", (RateVersion(MID_MARCH, PerUnit(D(1)), ends_before=JAN),)).problems()[0][0] == "[0].ends_before"
    bad_tiers = Graduated((Tier(D(10), D(-1)), Tier(D(5), D(1)), Tier(D(20), D("0.0000000000001"))))
    assert [key for key, _ in bad_tiers.problems()] == [
        "tiers[0].unit_price",
        "tiers[1].up_to",
        "tiers[2].unit_price",
        "tiers[2].up_to",
    ]


@pytest.mark.parametrize(
    ("value", "money_places", "problem"),
    [
        ("0.000000000001", None, None),
        ("0.0000000000001", None, "more than 12 decimal places"),
        ("-1", None, "must not be negative"),
        ("10.001", 2, "at most the currency's 2 minor-unit digit(s)"),
        ("1" + "0" * 26, None, "digits before the point"),
    ],
)
def test_number_problems(value: str, money_places: int | None, problem: str | None) -> None:
    found = number_problem(D(value), money_places=money_places)
    assert found is None if problem is None else problem in (found or "")


# --- plans -----------------------------------------------------------------------------------------


def test_plans_default_assignment_and_overrides() -> None:
    standard = RatePlan(USD, {"m": card(PerUnit(D("0.01"))), "n": card(PerUnit(D(1)))})
    eu = RatePlan(Money.of("EUR"), {"m": card(PerUnit(D("0.009")))})
    rating = Rating(
        {"standard": standard, "eu": eu},
        "standard",
        {"acme": CustomerRating("eu"), "bigco": CustomerRating(None, {"m": card(PerUnit(D("0.005")))})},
    )
    assert rating.price("someone", "m", MARCH, D(1000)) == price(standard.cards["m"], MARCH, D(1000), USD)
    acme = rating.price("acme", "m", MARCH, D(1000))
    assert acme is not None and (acme.currency, acme.rounded) == ("EUR", D("9.00"))
    assert rating.price("acme", "n", MARCH, D(1)) is None  # the eu plan prices no n
    bigco = rating.price("bigco", "m", MARCH, D(1000))
    assert bigco is not None and bigco.rounded == D("5.00")
    assert rating.price("bigco", "n", MARCH, D(1)) is not None  # the rest from the default plan
    assert Rating().price("anyone", "m", MARCH, D(1)) is None
    assert rating.problems({"m", "n"}) == []
    assert rating.problems({"n"})[0] == ("plans.standard.meters.m", "unknown meter 'm' (defined: n)")


# --- properties ------------------------------------------------------------------------------------

quantities = st.decimals(min_value=0, max_value=10**12, places=9, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=10**4, places=12, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw: st.DrawFn, flat: bool = True) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.decimals(min_value=0, max_value=10**9, places=3), min_size=0, max_size=4)))
    ups: list[Decimal | None] = [*bounds, None]
    tiers = []
    for up_to in ups:
        unit = draw(st.one_of(st.none(), prices))
        flat_price = draw(st.one_of(st.none(), prices)) if flat else None
        if unit is None and flat_price is None:
            unit = D(0)
        tiers.append(Tier(up_to, unit, flat_price))
    return tuple(tiers)


modes = st.sampled_from([ROUND_HALF_UP, ROUND_HALF_EVEN, ROUND_UP, ROUND_DOWN])
moneys = st.builds(Money, st.just("USD"), st.integers(min_value=0, max_value=4), modes)
models: st.SearchStrategy[PriceModel] = st.one_of(
    st.builds(PerUnit, prices),
    st.builds(Graduated, tier_lists()),
    st.builds(Volume, tier_lists()),
    st.builds(
        Package, st.decimals(min_value=D("0.001"), max_value=10**6, places=3), prices, st.sampled_from(list(PackageRounding))
    ),
    st.builds(
        Percentage,
        st.decimals(min_value=0, max_value=100, places=4),
        st.one_of(st.none(), st.just(D(1))),
        st.one_of(st.none(), st.just(D(1000))),
    ),
)
versions = st.builds(
    RateVersion,
    st.just(JAN),
    models,
    included=st.one_of(st.just(D(0)), quantities),
    minimum=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=0)),
    quantity_rounding=st.one_of(st.none(), st.builds(Rounding, st.integers(0, 3), modes)),
)


def price_version(version: RateVersion, quantity: Decimal, money: Money = USD) -> Charge:
    return price(RateCard("m", (version,)), MARCH, quantity, money)


@settings(max_examples=300, deadline=None)
@given(version=versions, quantity=st.one_of(quantities, quantities.map(lambda q: -q)), money=moneys)
def test_lines_always_add_up_to_the_totals_exactly(version: RateVersion, quantity: Decimal, money: Money) -> None:
    result = price_version(version, quantity, money)
    with localcontext(EXACT):  # the test's own sums must not round either
        assert result.amount == sum((line.amount for line in result.lines), D(0))
        assert result.rounded == sum((line.rounded for line in result.lines), D(0))
    for line in result.lines:
        assert line.rounded == money.round(line.rounded)  # every shown amount is in minor units
        if line.kind not in (LineKind.MINIMUM, LineKind.FEE_MINIMUM, LineKind.FEE_MAXIMUM):
            assert line.amount == EXACT.multiply(line.quantity, line.unit_price)
            assert line.rounded == money.round(line.amount)


@settings(max_examples=300, deadline=None)
@given(tiers=tier_lists(), q1=quantities, q2=quantities)
def test_graduated_is_monotone_in_quantity(tiers: tuple[Tier, ...], q1: Decimal, q2: Decimal) -> None:
    low, high = sorted((q1, q2))
    a, b = charge(Graduated(tiers), low), charge(Graduated(tiers), high)
    assert a.amount <= b.amount and a.rounded <= b.rounded


@settings(max_examples=300, deadline=None)
@given(tiers=tier_lists(), quantity=quantities)
def test_graduated_is_the_sum_of_per_unit_prices_per_tier(tiers: tuple[Tier, ...], quantity: Decimal) -> None:
    with localcontext(EXACT):  # the test's own sums must not round either
        expected = graduated_by_hand(tiers, quantity)
    assert charge(Graduated(tiers), quantity).amount == expected


def graduated_by_hand(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    expected, after = D(0), None
    for tier in tiers:
        if after is not None and quantity <= after:
            break
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = top - (after or 0)
        if tier.unit_price is not None:
            expected += charge(PerUnit(tier.unit_price), units).amount
        if tier.flat_price is not None:
            expected += tier.flat_price
        after = tier.up_to
    return expected


@settings(max_examples=200, deadline=None)
@given(tiers=tier_lists(), index=st.integers(min_value=0, max_value=3))
def test_a_quantity_on_a_bound_stays_in_the_lower_tier(tiers: tuple[Tier, ...], index: int) -> None:
    assume(index < len(tiers) - 1)
    bound = tiers[index].up_to
    assert bound is not None
    for model in (Graduated(tiers), Volume(tiers)):
        reached = {line.tier.index for line in charge(model, bound).lines if line.tier is not None}
        assert max(reached) == index + 1
        beyond = {line.tier.index for line in charge(model, bound + D("0.000000001")).lines if line.tier is not None}
        assert max(beyond) == index + 2


@settings(max_examples=300, deadline=None)
@given(unit_price=prices, q1=quantities | quantities.map(lambda q: -q), q2=quantities | quantities.map(lambda q: -q))
def test_per_unit_is_additive(unit_price: Decimal, q1: Decimal, q2: Decimal) -> None:
    """Exact amounts add up; rounded ones may differ by the rounding of each (why lines keep both)."""
    model = PerUnit(unit_price)
    with localcontext(EXACT):
        assert charge(model, q1).amount + charge(model, q2).amount == charge(model, q1 + q2).amount


@settings(max_examples=300, deadline=None)
@given(version=versions, quantity=quantities)
def test_a_negative_quantity_mirrors_the_usage_price_without_fees(version: RateVersion, quantity: Decimal) -> None:
    model = version.model
    if isinstance(model, Graduated | Volume):
        model = type(model)(tuple(replace(t, flat_price=None) for t in model.tiers))
    if isinstance(model, Percentage):
        model = Percentage(model.percent)
    rounding = version.quantity_rounding
    assume((quantity if rounding is None else rounding.apply(quantity)) > 0)  # -0 is zero usage, not a credit
    usage_only = replace(version, model=model, included=D(0), minimum=None)
    credit = price_version(version, -quantity)
    mirror = price_version(usage_only, quantity)
    assert credit.amount == EXACT.minus(mirror.amount)
    assert [line.quantity for line in credit.lines] == [EXACT.minus(line.quantity) for line in mirror.lines]


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=400),
    length=st.integers(min_value=1, max_value=40),
    change=st.integers(min_value=0, max_value=450),
    quantity=quantities,
)
def test_a_price_change_prices_from_the_first_period_starting_at_or_after_it(
    start: int, length: int, change: int, quantity: Decimal
) -> None:
    at = JAN + timedelta(days=change)
    cards = RateCard("m", (RateVersion(JAN, PerUnit(D(1)), ends_before=at), RateVersion(at, PerUnit(D(2)))))
    period = Period(JAN + timedelta(days=start), JAN + timedelta(days=start + length))
    result = price(cards, period, quantity, USD)
    assert result.amount == EXACT.multiply(quantity, D(2 if period.start >= at else 1))
    assert result.pending_change == (at if period.start < at < period.end else None)


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_half_up_rounds_x_xx5_away_from_zero(cents: int) -> None:
    amount = D(cents).scaleb(-2) + (D("0.005") if cents >= 0 else D("-0.005"))
    expected = D(cents + (1 if cents >= 0 else -1)).scaleb(-2)
    assert USD.round(amount) == expected
    assert charge(PerUnit(D(1)), amount).rounded == expected
