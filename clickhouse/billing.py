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
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse.queries import EARLIEST, QueryError, Reader, _ch_time, parse_time, plain
from udfs.invoicing import CorrectionRecord, FinalTotal, Invoice, InvoiceItem, build_invoice
from udfs.periods import BillingCycle, Period, PeriodKind, billing_period, local_midnight, zone
from udfs.pricing import EXACT, ZERO, Charge, Graduated, Line, LineKind, Rating, TierBounds, Volume
from udfs.projection import cost_so_far

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
    watermark = row.get("finalized_at_watermark")
    return FinalTotal(
        row["meter"],
        row["group_key"],
        row["aggregation"],
        period,
        Decimal(row["total"]),
        _count(row.get("event_count")),
        _count(row.get("revision")),
        _time(watermark) if watermark else None,
    )


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


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
        _time(row["minute"]) if row.get("minute") else None,
        _count(row.get("event_count")),
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


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for value in values:
        total = EXACT.add(total, value)
    return total


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _line_row(line: Line) -> dict[str, Any]:
    tier = line.tier
    return {
        "kind": line.kind.value,
        "description": line.description,
        "tier": None if tier is None else str(tier),
        "tier_after": None if tier is None else _decimal(tier.after),
        "tier_up_to": None if tier is None else _decimal(tier.up_to),
        "quantity": format(line.quantity, "f"),
        "unit_price": format(line.unit_price, "f"),
        "amount": format(line.amount, "f"),
        "rounded": format(line.rounded, "f"),
    }


def tier_breakdown(charge: Charge) -> list[dict[str, Any]]:
    """Every line of ``charge`` and, for a tiered card, each tier it did not reach (quantity 0), in the card's order."""
    rows: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    reached: set[int] = set()
    for position, line in enumerate(charge.lines):
        if line.tier is not None:
            reached.add(line.tier.index)
            rows.append(((1, line.tier.index, position), _line_row(line)))
        else:
            rows.append(((0 if line.kind is LineKind.INCLUDED else 2, position), _line_row(line)))
    model = charge.version.model
    if isinstance(model, Graduated | Volume):
        after: Decimal | None = None
        for index, tier in enumerate(model.tiers, start=1):
            bounds = TierBounds(index, after, tier.up_to)
            after = tier.up_to
            if index in reached:
                continue
            rows.append(
                (
                    (1, index, -1),
                    {
                        "kind": "not_reached",
                        "description": f"{bounds}: not reached",
                        "tier": str(bounds),
                        "tier_after": _decimal(bounds.after),
                        "tier_up_to": _decimal(bounds.up_to),
                        "quantity": "0",
                        "unit_price": _decimal(tier.unit_price) or "0",
                        "amount": "0",
                        "rounded": "0",
                    },
                )
            )
    return [row for _, row in sorted(rows, key=lambda item: item[0])]


def _charge_document(charge: Charge) -> dict[str, Any]:
    return {
        "quantity": format(charge.quantity, "f"),
        "rated_quantity": format(charge.rated_quantity, "f"),
        "version_starts_at": plain(charge.version.starts_at),
        "model": charge.version.model.kind.value,
        "included": format(charge.version.included, "f"),
        "minimum": _decimal(charge.version.minimum),
        "tiers": tier_breakdown(charge),
        "amount": format(charge.amount, "f"),
        "rounded": format(charge.rounded, "f"),
    }


def _rows_behind(item: InvoiceItem, invoice: Invoice) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if item.final is not None:
        final = item.final
        rows.append(
            {
                "table": "period_finals",
                "period_start": plain(final.period.start),
                "period_end": plain(final.period.end),
                "group_by": json.loads(final.group or "{}"),
                "aggregation": final.aggregation,
                "value": format(final.quantity, "f"),
                "event_count": final.event_count,
                "revision": final.revision,
                "finalized_at_watermark": None if final.finalized_at_watermark is None else plain(final.finalized_at_watermark),
            }
        )
    for record in sorted(item.corrections, key=lambda r: (r.loaded_at, r.minute or r.loaded_at)):
        rows.append(
            {
                "table": "corrections",
                "period_start": plain(record.period.start),
                "period_end": plain(record.period.end),
                "group_by": json.loads(record.group or "{}"),
                "aggregation": record.aggregation,
                "minute": None if record.minute is None else plain(record.minute),
                "sign": record.sign,
                "value": format(record.value, "f"),
                "event_count": record.event_count,
                "loaded_at": plain(record.loaded_at),
                # loaded while the invoice's period ran: this invoice prices it (else an earlier one did)
                "on_this_invoice": record.loaded_at >= invoice.period.start,
            }
        )
    return rows


def explain_document(invoice: Invoice) -> dict[str, Any]:
    """:func:`invoice_document` plus ``items``: per charge, the stored rows behind it and its tier breakdown.

    A usage item's ``charge`` prices the period's final total; a correction item's ``before`` and
    ``charge`` price the corrected period's total without and with the corrections loaded during
    the invoice's period, and its ``lines`` (the invoice's) are their difference.
    """
    document = invoice_document(invoice)
    lines = document["lines"]
    items = []
    for item in invoice.items:
        own = [
            line
            for line, source in zip(lines, invoice.lines, strict=True)
            if (source.section, source.meter, source.group, source.period) == (item.section, item.meter, item.group, item.period)
        ]
        items.append(
            {
                "section": item.section,
                "meter": item.meter,
                "group_by": json.loads(item.group or "{}"),
                "period_start": plain(item.period.start),
                "period_end": plain(item.period.end),
                "rows": _rows_behind(item, invoice),
                "before": None if item.before is None else _charge_document(item.before),
                "charge": _charge_document(item.charge),
                "lines": own,
                "amount": format(_sum(Decimal(x["amount"]) for x in own), "f"),
                "rounded": format(_sum(Decimal(x["rounded"]) for x in own), "f"),
            }
        )
    return {**document, "items": items}


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
    priced = cost_so_far(rating, row["customer_id"], row["meter"], row["aggregation"], period, quantity, at, final=is_final)
    projection, charge, projected = priced.projection, priced.charge, priced.projected
    return {
        "customer_id": row["customer_id"],
        "meter": row["meter"],
        "group_key": row["group_key"],
        "aggregation": row["aggregation"],
        "period_start": row["period_start"],
        "period_end": row["period_end"],
        "is_final": is_final,
        "quantity": plain(quantity),
        "currency": priced.currency,
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
