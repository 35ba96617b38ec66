"""The read side of rating (clickhouse/billing.py) on a recording reader: which periods ``--period`` names, when an
invoice is refused, and that every read is a customer-scoped named query given the customer (so the gateway's
access rule applies to it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from clickhouse.access import QUERY_ACCESS
from clickhouse.billing import NotFinal, cost, period_of, read_invoice
from clickhouse.queries import QueryError
from tests.unit.test_invoicing import GRADUATED
from tests.unit.test_pricing import MARCH
from udfs.periods import BillingCycle, PeriodKind


class Recording:
    """A Reader answering each named query with canned rows, recording what was asked."""

    def __init__(self, answers: Mapping[str, list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.asked.append((name, dict(parameters)))
        return [dict(r) for r in self.answers.get(name, [])]


def row(status: str = "final", total: str = "12500", **extra: Any) -> dict[str, Any]:
    return {
        "customer_id": "acme",
        "meter": "api_calls",
        "group_key": "{}",
        "aggregation": "count",
        "period_start": "2026-03-01T00:00:00.000Z",
        "period_end": "2026-04-01T00:00:00.000Z",
        "total": total,
        "status": status,
        "as_of_minute": "2026-03-10T10:00:00.000Z",
        **extra,
    }


@pytest.mark.parametrize(
    ("text", "cycle", "start"),
    [
        ("2026-03", BillingCycle(), datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03", BillingCycle(timezone="Europe/Berlin"), datetime(2026, 2, 28, 23, tzinfo=UTC)),
        ("2026-03", BillingCycle(anchor=15), datetime(2026, 3, 15, tzinfo=UTC)),
        ("2026-02", BillingCycle(anchor=31), datetime(2026, 2, 28, tzinfo=UTC)),
        ("2026-02-28T23:00:00.000Z", BillingCycle(timezone="Europe/Berlin"), datetime(2026, 2, 28, 23, tzinfo=UTC)),
        ("2026-03-02T00:00:00Z", BillingCycle(PeriodKind.DAY), datetime(2026, 3, 2, tzinfo=UTC)),
    ],
)
def test_the_period_a_month_or_a_start_names(text: str, cycle: BillingCycle, start: datetime) -> None:
    assert period_of(text, cycle).start == start


@pytest.mark.parametrize(
    ("text", "cycle", "message"),
    [
        ("2026-03-01T00:00:00Z", BillingCycle(timezone="Europe/Berlin"), "starts at 2026-02-28T23:00:00.000Z"),
        ("2026-03", BillingCycle(PeriodKind.WEEK), "monthly cycles only"),
        ("2026-00", BillingCycle(), "not a month"),
        ("March", BillingCycle(), "not a time"),
    ],
)
def test_what_does_not_name_a_period(text: str, cycle: BillingCycle, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        period_of(text, cycle)


def _final_row() -> dict[str, Any]:
    return {k: v for k, v in row().items() if k not in ("status", "as_of_minute")}


@pytest.mark.parametrize(
    ("periods", "finals", "now", "message"),
    [
        ([row("provisional")], [], datetime(2026, 4, 5, tzinfo=UTC), "not final yet: 1 of 1"),
        ([], [], datetime(2026, 4, 5, tzinfo=UTC), "no usage in the period"),
        ([row()], [_final_row()], datetime(2026, 3, 20, tzinfo=UTC), "runs until 2026-04-01"),
    ],
)
def test_an_invoice_is_refused_until_its_period_is_final(
    periods: list[dict[str, Any]], finals: list[dict[str, Any]], now: datetime, message: str
) -> None:
    reader = Recording({"customer_periods": periods, "customer_finals": finals})
    with pytest.raises(NotFinal, match=message):
        read_invoice(reader, GRADUATED, "acme", MARCH, now=now)


def test_every_read_is_customer_scoped_and_names_the_customer_and_meter() -> None:
    reader = Recording({"customer_periods": [row()], "customer_finals": [_final_row()], "customer_usage": [row("provisional")]})
    invoice = read_invoice(reader, GRADUATED, "acme", MARCH, meter="api_calls", now=datetime(2026, 4, 5, tzinfo=UTC))
    assert invoice.rounded == Decimal("94.50")
    cost(reader, GRADUATED, customer="acme", meter="api_calls", at=datetime(2026, 3, 11, tzinfo=UTC))
    assert {name for name, _ in reader.asked} == {"customer_periods", "customer_finals", "customer_corrections", "customer_usage"}
    for name, parameters in reader.asked:
        assert QUERY_ACCESS[name] == "customer" and parameters["customer"] == "acme" and parameters["meter"] == "api_calls"


def test_cost_rows_price_the_total_and_the_projection_through_the_tiers() -> None:
    reader = Recording({"customer_usage": [row("provisional", "3000")]})
    [found] = cost(reader, GRADUATED, customer="acme", at=datetime(2026, 3, 11, tzinfo=UTC))
    # 10 of March's 31 days: 3,000 -> 9,300 calls; 10 + 16 = 26.00 so far, 10 + 66.40 = 76.40 projected
    assert (found["cost"], found["projected_quantity"], found["projected_cost"]) == ("26.00", "9300", "76.40")
    assert (found["is_final"], found["lag_seconds"], found["projection"]) == (False, 13 * 3600 + 59 * 60, "linear")
    [final] = cost(Recording({"customer_usage": [row()]}), GRADUATED, customer="acme", at=datetime(2026, 4, 11, tzinfo=UTC))
    assert (final["cost"], final["projected_cost"], final["lag_seconds"], final["projection"]) == (
        "94.50",
        "94.50",
        None,
        "final",
    )


def test_everyones_cost_takes_each_keys_newest_period_and_needs_a_rating() -> None:
    older = row(period_start="2026-02-01T00:00:00.000Z", period_end="2026-03-01T00:00:00.000Z", total="1")
    reader = Recording({"usage": [older, row()]})
    rows = cost(reader, GRADUATED, at=datetime(2026, 4, 11, tzinfo=UTC))
    assert [r["period_start"] for r in rows] == ["2026-03-01T00:00:00.000Z"] and reader.asked == [("usage", {"customer": ""})]
    with pytest.raises(QueryError, match="prices nothing"):
        cost(reader, type(GRADUATED)(), at=datetime(2026, 4, 11, tzinfo=UTC))
