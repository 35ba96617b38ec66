"""Money from the stored totals, read-side: invoices (``metering invoice``) and cost so far (``metering query cost``).

Both read only through a :class:`~clickhouse.queries.Reader` and the named, customer-scoped
queries (``customer_periods``, ``customer_finals``, ``customer_corrections``, ``customer_usage``,
``usage``), so a gateway applies its access rule to every read exactly as for ``metering query``:
a customer token reads its own customer only, a meter-scoped one its meters only. Pricing is
udfs/pricing.py, the invoice's rules udfs/invoicing.py, the projection udfs/projection.py;
docs/pricing.md describes all three.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse.queries import EARLIEST, QueryError, Reader, _ch_time, parse_time, plain
from udfs.invoicing import CorrectionRecord, FinalTotal, Invoice, build_invoice
from udfs.periods import BillingCycle, Period, PeriodKind, billing_period, local_midnight, zone
from udfs.pricing import NoRateInEffect, Rating
from udfs.projection import project

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class NotFinal(Exception):
    """The period asked for has no invoice yet: some of its totals are provisional (or it has none)."""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def period_of(text: str, cycle: BillingCycle) -> Period:
    """The billing period ``--period`` names: its start (RFC 3339, as the billing queries print ``period_start``),
    or for monthly cycles a month ``YYYY-MM`` (the period that starts in that month, on the anchor day)."""
    month = _MONTH.match(text.strip())
    if month:
        if cycle.kind is not PeriodKind.MONTH:
            raise QueryError(f"--period={text!r}: a month names a period of monthly cycles only; give the period's start")
        year, number = int(month.group(1)), int(month.group(2))
        if not 1 <= number <= 12:
            raise QueryError(f"--period={text!r}: not a month; e.g. 2026-03")
        first = local_midnight(date(year, number, 1), zone(cycle.timezone))
        start = billing_period(first, cycle)
        if start.start < first:  # the period that contains the 1st started in the month before
            start = billing_period(start.end, cycle)
        return start
    instant = parse_time(text, "--period")
    found = billing_period(instant, cycle)
    if found.start != instant:
        raise QueryError(
            f"--period={text!r} is not the start of a billing period of this customer ({cycle.kind.value}, "
            f"{cycle.timezone}); the period containing it starts at {plain(found.start)}"
        )
    return found


def _final(row: dict[str, Any]) -> FinalTotal:
    period = Period(_time(row["period_start"]), _time(row["period_end"]))
    return FinalTotal(row["meter"], row["group_key"], row["aggregation"], period, Decimal(row["total"]))


def _correction(row: dict[str, Any]) -> CorrectionRecord:
    period = Period(_time(row["period_start"]), _time(row["period_end"]))
    return CorrectionRecord(
        row["meter"],
        row["group_key"],
        row["aggregation"],
        period,
        int(row["sign"]),
        Decimal(row["value"]),
        _time(row["loaded_at"]),
    )


def read_invoice(reader: Reader, rating: Rating, customer: str, period: Period, *, meter: str = "", now: datetime) -> Invoice:
    """The invoice of ``customer`` for ``period``; :class:`NotFinal` while any of its totals is provisional,
    when it has none, or while the period runs (corrections loaded until its end belong to it)."""
    window = {"customer": customer, "meter": meter}
    periods = reader.run(
        "customer_periods",
        {**window, "from": _ch_time(period.start), "to": _ch_time(period.start + timedelta(milliseconds=1))},
    )
    finals = [
        _final(r) for r in reader.run("customer_finals", {**window, "from": _ch_time(EARLIEST), "to": _ch_time(period.end)})
    ]
    own = [f for f in finals if f.period.start == period.start]
    provisional = [r for r in periods if r["status"] != "final"]
    label = plain(period.start)
    if not own and not periods:
        raise NotFinal(f"{customer!r} has no usage in the period starting {label}: there is no final total to invoice")
    if provisional:
        raise NotFinal(
            f"the period starting {label} is not final yet: {len(provisional)} of {len(periods)} totals are provisional "
            "(finals are emitted once the watermark passes the period's end + grace); `metering query cost` shows the "
            "provisional cost"
        )
    if now < period.end:
        raise NotFinal(f"the period starting {label} runs until {plain(period.end)}: its corrections are not all known yet")
    corrections = [_correction(r) for r in reader.run("customer_corrections", {**window, "loaded_before": _ch_time(period.end)})]
    try:
        return build_invoice(customer, period, finals, corrections, rating, as_of=now, is_final=True)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def invoice_document(invoice: Invoice) -> dict[str, Any]:
    """The invoice as JSON-ready data: decimals as exact strings, times RFC 3339, groups as objects."""

    def money(value: Decimal) -> str:
        return format(value, "f")

    return {
        "customer_id": invoice.customer,
        "period_start": plain(invoice.period.start),
        "period_end": plain(invoice.period.end),
        "currency": invoice.currency,
        "as_of": plain(invoice.as_of),
        "is_final": invoice.is_final,
        "lines": [
            {
                "section": line.section,
                "meter": line.meter,
                "group_by": json.loads(line.group or "{}"),
                "period_start": plain(line.period.start),
                "kind": line.kind.value,
                "description": line.description,
                "tier": None if line.tier is None else str(line.tier),
                "tier_after": None if line.tier is None or line.tier.after is None else money(line.tier.after),
                "tier_up_to": None if line.tier is None or line.tier.up_to is None else money(line.tier.up_to),
                "quantity": money(line.quantity),
                "unit_price": money(line.unit_price),
                "amount": money(line.amount),
                "rounded": money(line.rounded),
            }
            for line in invoice.lines
        ],
        "meters": [{"meter": m, "amount": money(a), "rounded": money(r)} for m, a, r in invoice.meter_totals],
        "amount": money(invoice.amount),
        "rounded": money(invoice.rounded),
        "unpriced": [
            {
                "section": u.section,
                "meter": u.meter,
                "group_by": json.loads(u.group or "{}"),
                "period_start": plain(u.period.start),
                "reason": u.reason,
            }
            for u in invoice.unpriced
        ],
    }


def cost(reader: Reader, rating: Rating, *, customer: str = "", meter: str = "", at: datetime) -> list[dict[str, Any]]:
    """Per customer, meter and group, the newest (current) period: its cost so far, projection and lag.

    ``is_final`` rows are priced from the final total, the others from the provisional running
    total (``as_of``: the newest minute with usage; ``lag_seconds``: from the end of that minute to
    ``at``, how far the total may be behind). The projected quantity (udfs/projection.py) is priced
    through the card, tiers and all, not scaled from the cost.
    """
    if not rating.plans:
        raise QueryError("cost: the configuration prices nothing (no rating section): add rating plans (docs/pricing.md)")
    if customer:
        rows = reader.run("customer_usage", {"customer": customer, "meter": meter, "since": _ch_time(EARLIEST)})
    else:
        newest: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in reader.run("usage", {"customer": ""}):
            key = (row["customer_id"], row["meter"], row["group_key"])
            if (not meter or row["meter"] == meter) and (key not in newest or row["period_start"] > newest[key]["period_start"]):
                newest[key] = row
        rows = [newest[k] for k in sorted(newest)]
    return [_cost_row(rating, row, at) for row in rows]


def _cost_row(rating: Rating, row: dict[str, Any], at: datetime) -> dict[str, Any]:
    period = Period(_time(row["period_start"]), _time(row["period_end"]))
    quantity = Decimal(row["total"])
    is_final = row["status"] == "final"
    as_of = row.get("as_of_minute")
    lag = None
    if not is_final and as_of:
        lag = max(0, int((at - (_time(as_of) + timedelta(minutes=1))).total_seconds()))
    projection = project(row["aggregation"], quantity, period, at, final=is_final)
    found = rating.card_for(row["customer_id"], row["meter"])
    try:
        charge = rating.price(row["customer_id"], row["meter"], period, quantity) if found else None
        projected = rating.price(row["customer_id"], row["meter"], period, projection.quantity) if found else None
    except NoRateInEffect:  # a gap in the card at the period's start: no price, shown as such
        charge = projected = None
    return {
        "customer_id": row["customer_id"],
        "meter": row["meter"],
        "group_key": row["group_key"],
        "period_start": row["period_start"],
        "period_end": row["period_end"],
        "is_final": is_final,
        "quantity": plain(quantity),
        "currency": found[1].currency if found else None,
        "cost": None if charge is None else format(charge.rounded, "f"),
        "cost_exact": None if charge is None else format(charge.amount, "f"),
        "as_of": as_of,
        "lag_seconds": lag,
        "projection": projection.method.value,
        "elapsed_share": format(projection.elapsed_share, "f"),
        "projected_quantity": plain(projection.quantity),
        "projected_cost": None if projected is None else format(projected.rounded, "f"),
    }


COST_COLUMNS = [
    "customer_id",
    "meter",
    "period_start",
    "period_end",
    "is_final",
    "quantity",
    "currency",
    "cost",
    "cost_exact",
    "as_of",
    "lag_seconds",
    "projection",
    "elapsed_share",
    "projected_quantity",
    "projected_cost",
    "group_by",
]
