"""Invoices and projections (udfs/invoicing.py, udfs/projection.py): worked examples and the properties they keep."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_pricing import MARCH, TIERS, USD, moneys, quantities, versions
from udfs.invoicing import CorrectionRecord, FinalTotal, build_invoice, corrected_total, correction_lines
from udfs.periods import Period
from udfs.pricing import EXACT, Charge, Graduated, Money, RateCard, RatePlan, RateVersion, Rating, Volume, price
from udfs.projection import Method, project

D = Decimal
FEB = Period(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
APRIL = Period(datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
JAN = datetime(2026, 1, 1, tzinfo=UTC)


def rating_of(model: object, **options: object) -> Rating:
    card = RateCard("api_calls", (RateVersion(JAN, model, **options),))  # type: ignore[arg-type]
    return Rating({"standard": RatePlan(USD, {"api_calls": card})}, "standard")


GRADUATED = rating_of(Graduated(TIERS))


def final(quantity: str, period: Period = FEB, group: str = "{}", aggregation: str = "sum") -> FinalTotal:
    return FinalTotal("api_calls", group, aggregation, period, D(quantity))


def correction(value: str, loaded: datetime, period: Period = FEB, sign: int = 1, aggregation: str = "sum") -> CorrectionRecord:
    return CorrectionRecord("api_calls", "{}", aggregation, period, sign, D(value), loaded)


def sums(lines: object) -> tuple[Decimal, Decimal]:
    with localcontext(EXACT):
        return sum((line.amount for line in lines), D(0)), sum((line.rounded for line in lines), D(0))  # type: ignore[attr-defined]


# --- corrections: combined by the aggregation, priced as a difference --------------------------------


@pytest.mark.parametrize(
    ("aggregation", "total", "corrections", "expected"),
    [
        ("sum", "10", [(1, "2"), (-1, "0.5")], "11.5"),
        ("count", "3", [(1, "1")], "4"),
        ("max", "10", [(1, "7"), (1, "12"), (-1, "99")], "12"),
        ("min", "10", [(1, "7"), (1, "12")], "7"),
        ("unique_count", "10", [(1, "1")], None),
        ("latest", "10", [(1, "1")], None),
        ("latest", "10", [], "10"),
    ],
)
def test_corrected_total_follows_the_aggregation(
    aggregation: str, total: str, corrections: list[tuple[int, str]], expected: str | None
) -> None:
    found = corrected_total(aggregation, D(total), [(s, D(v)) for s, v in corrections])
    assert found == (None if expected is None else D(expected))


def test_a_correction_is_priced_in_the_tier_it_lands_in() -> None:
    # February's final of 900 calls is all in tier 1 (0.01); a correction of +300 lands 100 in tier 1 and 200 in tier 2.
    lines = correction_lines(price_card(D(900)), price_card(D(1200)))
    assert [(line.description, line.quantity, line.amount, line.rounded) for line in lines] == [
        ("tier 1 (0 to 1000): 100 × 0.01", D(100), D("1.00"), D("1.00")),
        ("tier 2 (over 1000 to 10000): 200 × 0.008", D(200), D("1.600"), D("1.60")),
    ]


def test_a_volume_correction_moves_the_whole_quantity_to_its_new_tier() -> None:
    card = RateCard("api_calls", (RateVersion(JAN, Volume(TIERS)),))
    lines = correction_lines(price(card, FEB, D(900), USD), price(card, FEB, D(1100), USD))
    assert [(line.description, line.amount) for line in lines] == [
        ("tier 1 (0 to 1000): -900 × 0.01", D("-9.00")),
        ("tier 2 (over 1000 to 10000): 1100 × 0.008", D("8.800")),
    ]


def price_card(quantity: Decimal) -> Charge:
    return price(RateCard("api_calls", (RateVersion(JAN, Graduated(TIERS)),)), FEB, quantity, USD)


@settings(max_examples=300, deadline=None)
@given(
    version=versions,
    money=moneys,
    base=quantities,
    steps=st.lists(st.one_of(quantities, quantities.map(lambda q: -q)), min_size=1, max_size=4),
)
def test_correction_lines_add_up_and_telescope_to_the_corrected_price(
    version: RateVersion, money: Money, base: Decimal, steps: list[Decimal]
) -> None:
    """Each invoice's correction lines add up to price(after) − price(before) exactly, in both columns, and all the
    invoices' corrections of a period add up to price(final + every correction) − price(final)."""
    card = RateCard("m", (version,))
    total, billed_amount, billed_rounded = base, D(0), D(0)
    with localcontext(EXACT):
        for step in steps:
            before, after = price(card, MARCH, total, money), price(card, MARCH, total + step, money)
            lines = correction_lines(before, after)
            amount, rounded = sums(lines)
            assert (amount, rounded) == (after.amount - before.amount, after.rounded - before.rounded)
            for line in lines:
                if line.kind.value not in ("minimum", "fee_minimum", "fee_maximum"):
                    assert line.amount == line.quantity * line.unit_price
            billed_amount, billed_rounded, total = billed_amount + amount, billed_rounded + rounded, total + step
        first, last = price(card, MARCH, base, money), price(card, MARCH, total, money)
        assert (billed_amount, billed_rounded) == (last.amount - first.amount, last.rounded - first.rounded)


# --- an invoice ---------------------------------------------------------------------------------------


def test_the_invoice_prices_its_finals_and_carries_corrections_loaded_while_it_ran() -> None:
    """March's invoice: March's final (12,500 calls) and the corrections to February loaded during March (+300, −20).
    The one loaded in February (+50) was an earlier invoice's: it counts as 'before'; the one loaded in April is not here."""
    finals = [final("900"), final("12500", MARCH)]
    corrections = [
        correction("50", datetime(2026, 2, 20, tzinfo=UTC)),  # loaded before March: an earlier invoice's
        correction("300", datetime(2026, 3, 3, 12, tzinfo=UTC)),
        correction("-20", datetime(2026, 3, 30, tzinfo=UTC)),
        correction("1000", datetime(2026, 4, 2, tzinfo=UTC)),  # loaded after March: April's invoice
        correction("5", datetime(2026, 3, 10, tzinfo=UTC), MARCH),  # to March itself: never on March's invoice
    ]
    invoice = build_invoice("acme", MARCH, finals, corrections, GRADUATED, as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True)
    usage = [line for line in invoice.lines if line.section == "usage"]
    fixes = [line for line in invoice.lines if line.section == "correction"]
    assert [line.amount for line in usage] == [D("10.00"), D("72.000"), D("12.500")]
    # before: 900 + 50 = 950; after: 950 + 300 − 20 = 1230 -> 50 more in tier 1, 230 in tier 2
    assert [(line.description, line.amount) for line in fixes] == [
        ("correction to 2026-02-01T00:00:00.000Z: tier 1 (0 to 1000): 50 × 0.01", D("0.50")),
        ("correction to 2026-02-01T00:00:00.000Z: tier 2 (over 1000 to 10000): 230 × 0.008", D("1.840")),
    ]
    assert all(line.period == FEB for line in fixes)
    assert (invoice.amount, invoice.rounded) == (D("96.840"), D("96.84"))
    assert invoice.meter_totals == (("api_calls", D("96.840"), D("96.84")),)
    assert invoice.currency == "USD" and invoice.is_final and not invoice.unpriced


def test_uncombinable_corrections_and_unpriced_meters_are_listed_not_guessed() -> None:
    finals = [final("3", FEB, aggregation="unique_count"), FinalTotal("tokens", "{}", "sum", MARCH, D(5))]
    corrections = [correction("1", datetime(2026, 3, 2, tzinfo=UTC), aggregation="unique_count")]
    invoice = build_invoice("acme", MARCH, finals, corrections, GRADUATED, as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True)
    assert invoice.lines == () and invoice.amount == 0
    assert [(u.section, u.meter) for u in invoice.unpriced] == [("usage", "tokens"), ("correction", "api_calls")]


def test_a_customer_without_a_plan_has_no_invoice() -> None:
    with pytest.raises(ValueError, match="no rating plan"):
        build_invoice("acme", MARCH, [], [], Rating(), as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True)


@settings(max_examples=100, deadline=None)
@given(
    totals=st.lists(
        st.tuples(st.sampled_from(["{}", '{"m":"a"}', '{"m":"b"}']), quantities), min_size=1, max_size=4, unique_by=lambda t: t[0]
    ),
    fixes=st.lists(st.tuples(quantities, st.integers(0, 59)), max_size=5),
    version=versions,
)
def test_invoice_lines_add_up_to_the_meter_totals_and_the_total(
    totals: list[tuple[str, Decimal]], fixes: list[tuple[Decimal, int]], version: RateVersion
) -> None:
    rating = Rating({"p": RatePlan(USD, {"api_calls": RateCard("api_calls", (version,))})}, "p")
    finals = [final(str(q), MARCH, group) for group, q in totals] + [final(str(q), FEB, group) for group, q in totals]
    corrections = [
        CorrectionRecord("api_calls", totals[0][0], "sum", FEB, 1, value, datetime(2026, 2, 1, tzinfo=UTC) + timedelta(days=day))
        for value, day in fixes
    ]
    invoice = build_invoice("acme", MARCH, finals, corrections, rating, as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True)
    assert sums(invoice.lines) == (invoice.amount, invoice.rounded)
    with localcontext(EXACT):  # the test's own sums must not round either
        by_meter = tuple(sum((t[i] for t in invoice.meter_totals), D(0)) for i in (1, 2))
    assert sums(invoice.lines) == by_meter


# --- the projection -----------------------------------------------------------------------------------


def test_linear_projection_of_an_additive_meter() -> None:
    # 10 days of a 31-day March: 1,000 calls so far project to 3,100.
    result = project("count", D(1000), MARCH, datetime(2026, 3, 11, tzinfo=UTC))
    assert (result.quantity, result.method, result.elapsed_share) == (D("3100.000000000"), Method.LINEAR, D("0.3226"))


@pytest.mark.parametrize(
    ("aggregation", "at", "final", "method"),
    [
        ("max", datetime(2026, 3, 11, tzinfo=UTC), False, Method.HELD),
        ("unique_count", datetime(2026, 3, 11, tzinfo=UTC), False, Method.HELD),
        ("sum", datetime(2026, 3, 1, tzinfo=UTC), False, Method.HELD),  # nothing elapsed yet
        ("sum", datetime(2026, 4, 2, tzinfo=UTC), False, Method.ENDED),  # in the grace window
        ("sum", datetime(2026, 3, 11, tzinfo=UTC), True, Method.FINAL),
    ],
)
def test_what_is_not_extrapolated(aggregation: str, at: datetime, final: bool, method: Method) -> None:
    result = project(aggregation, D("12.5"), MARCH, at, final=final)
    assert (result.quantity, result.method) == (D("12.5"), method)


@settings(max_examples=300, deadline=None)
@given(
    quantity=st.one_of(quantities, quantities.map(lambda q: -q)),
    seconds=st.integers(min_value=1, max_value=31 * 86400 - 1),
)
def test_the_projection_is_the_rate_so_far_over_the_whole_period(quantity: Decimal, seconds: int) -> None:
    at = MARCH.start + timedelta(seconds=seconds)
    result = project("sum", quantity, MARCH, at)
    with localcontext() as context:
        context.prec = 120
        exact = quantity * D(31 * 86400) / D(seconds)
    assert result.method is Method.LINEAR and abs(result.quantity - exact) <= D("0.0000000005")
    assert abs(result.quantity) >= abs(quantity)  # never below what was used so far


# --- docs/pricing.md's worked invoice -------------------------------------------------------------------


def test_the_worked_invoice_of_the_docs() -> None:
    """The March invoice of docs/pricing.md ("A worked example"), from the totals its table lists, as the CLI prints it."""
    from clickhouse.billing import invoice_document
    from jobs.cli.invoice import render_invoice
    from tests.unit.test_pricing_docs import PAGE, rating_of

    page = PAGE.read_text()
    section = page.split("### A worked example", 1)[1]
    example = re.search(r"```yaml\n(# example\n.*?)```", section, re.S)
    shown = re.search(r"```text\n\$ metering invoice --customer acme --period 2026-03\n(.*?)```", section, re.S)
    assert example is not None and shown is not None
    finals = [
        final("900"),
        final("12500", MARCH, aggregation="count"),
        FinalTotal("tokens", '{"model":"large"}', "sum", MARCH, D(1234567)),
        final("100", APRIL),
    ]
    corrections = [
        correction("300", datetime(2026, 3, 3, 12, tzinfo=UTC)),
        correction("20", datetime(2026, 3, 30, tzinfo=UTC), sign=-1),
        correction("1000", datetime(2026, 4, 2, tzinfo=UTC)),
    ]
    invoice = build_invoice(
        "acme", MARCH, finals, corrections, rating_of(example.group(1)), as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True
    )
    assert render_invoice(invoice_document(invoice), "table") == shown.group(1)


def test_a_period_no_card_version_covers_is_listed_unpriced() -> None:
    card = RateCard("api_calls", (RateVersion(datetime(2026, 3, 1, tzinfo=UTC), Graduated(TIERS)),))  # from March on
    rating = Rating({"standard": RatePlan(USD, {"api_calls": card})}, "standard")
    corrections = [correction("5", datetime(2026, 3, 2, tzinfo=UTC))]
    invoice = build_invoice(
        "acme",
        MARCH,
        [final("900"), final("10", MARCH)],
        corrections,
        rating,
        as_of=datetime(2026, 4, 5, tzinfo=UTC),
        is_final=True,
    )
    assert invoice.rounded == D("0.10") and [(u.section, "no version" in u.reason) for u in invoice.unpriced] == [
        ("correction", True)
    ]


def test_a_priced_meter_without_usage_still_owes_its_minimum_and_flat_fee() -> None:
    """March has calls only: the seats card's minimum and the support card's base fee are owed all the same."""
    from udfs.pricing import PerUnit, Tier

    cards = {
        "api_calls": RateCard("api_calls", (RateVersion(JAN, Graduated(TIERS)),)),
        "seats": RateCard("seats", (RateVersion(JAN, PerUnit(D("4")), minimum=D("20.00")),)),
        "support": RateCard("support", (RateVersion(JAN, Graduated((Tier(D(10), flat_price=D(50)), Tier(None, D(1))))),)),
        "storage": RateCard("storage", (RateVersion(JAN, PerUnit(D("0.1"))),)),  # nothing at 0: no line
        "later": RateCard("later", (RateVersion(datetime(2026, 6, 1, tzinfo=UTC), PerUnit(D(1)), minimum=D(5)),)),
    }
    rating = Rating({"standard": RatePlan(USD, cards)}, "standard")
    assert rating.meters_of("acme") == ["api_calls", "later", "seats", "storage", "support"]
    invoice = build_invoice(
        "acme", MARCH, [final("500", MARCH)], [], rating, as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True
    )
    assert [(line.meter, line.kind.value, line.rounded) for line in invoice.lines] == [
        ("api_calls", "units", D("5.00")),
        ("seats", "units", D("0.00")),  # the card's lines at 0, then the true-up
        ("seats", "minimum", D("20.00")),
        ("support", "flat", D("50.00")),
    ]
    assert invoice.rounded == D("75.00") and not invoice.unpriced
    used = build_invoice("acme", MARCH, [final("500", MARCH), FinalTotal("seats", "{}", "sum", MARCH, D(7))], [], rating,
                         as_of=datetime(2026, 4, 5, tzinfo=UTC), is_final=True)  # fmt: skip
    assert [(line.meter, line.rounded) for line in used.lines if line.meter == "seats"] == [("seats", D("28.00"))]
