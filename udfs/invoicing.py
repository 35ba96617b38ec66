"""Invoices: a billing period's final totals priced by the customer's cards, plus corrections as their own lines.

An invoice of period P holds:

- **usage lines**: each (meter, group) final total of P priced by :meth:`Rating.price` (a group is
  priced on its own: tiers, included units and minimums apply per group), and each priced meter
  without usage in P priced at quantity 0 when that costs something (a minimum, a flat fee);
- **correction lines**: the corrections to earlier periods that reached the store (their
  ``loaded_at``) while P ran, ``[P.start, P.end)``. A correction never changes the final cost of
  its own period Q. For each (meter, group, Q) the lines are the difference

      price(final_Q + corrections to Q up to P's end) − price(final_Q + corrections to Q before P's start)

  priced with Q's card version, netted per line kind and tier (:func:`correction_lines`), so the
  tier a correction lands in is right and the corrections of Q, summed over all invoices, add up
  to exactly what pricing Q's corrected total would have cost, in both columns.

How a correction combines with a total follows its meter's aggregation (:func:`corrected_total`):
``sum``/``count`` add the signed values, ``max``/``min`` take the extreme of the final and the
added values; ``unique_count`` and ``latest`` corrections carry no distinct sets or event times, so
they cannot be combined and are listed as unpriced, as is a total no card version prices
(:class:`~udfs.pricing.NoRateInEffect`) or a meter the customer's plan has no card for.

Every amount is exact: an invoice's and a meter's totals are the sums of their lines' columns. Pure
Python, no Flink imports; clickhouse/billing.py reads the inputs, docs/pricing.md shows an example.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from udfs.periods import Period, rfc3339_millis
from udfs.pricing import EXACT, ZERO, Charge, Line, LineKind, Money, NoRateInEffect, Rating, TierBounds, price

#: Line kinds whose line holds a difference to a bound (quantity 1, unit price = amount): netted by amount.
BOUND_KINDS = frozenset({LineKind.MINIMUM, LineKind.FEE_MINIMUM, LineKind.FEE_MAXIMUM})


@dataclass(frozen=True)
class FinalTotal:
    """A final period total of one (meter, group) as stored; the stored row's other columns when read from one."""

    meter: str
    group: str
    aggregation: str
    period: Period
    quantity: Decimal
    event_count: int | None = None
    revision: int | None = None
    finalized_at_watermark: datetime | None = None


@dataclass(frozen=True)
class CorrectionRecord:
    """A stored correction: the period it corrects, its sign and value, and when it reached the store."""

    meter: str
    group: str
    aggregation: str
    period: Period
    sign: int
    value: Decimal
    loaded_at: datetime
    minute: datetime | None = None
    event_count: int | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """One line of an invoice: ``section`` ``usage`` (period P's final) or ``correction`` (to ``period``)."""

    section: str
    meter: str
    group: str
    period: Period
    kind: LineKind
    description: str
    tier: TierBounds | None
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    rounded: Decimal


@dataclass(frozen=True)
class Unpriced:
    """A total or corrections the invoice could not price, and why."""

    section: str
    meter: str
    group: str
    period: Period
    reason: str


@dataclass(frozen=True)
class InvoiceItem:
    """What one charge of an invoice was priced from (``metering invoice --explain``).

    ``usage``: ``charge`` prices ``final``, the period's final total. ``correction`` (of ``period``, an earlier
    one): ``before`` prices its final with the ``corrections`` loaded before the invoice's period, ``charge``
    with those loaded until its end too; the invoice's lines of the item are their difference.
    """

    section: str
    meter: str
    group: str
    period: Period
    charge: Charge
    before: Charge | None = None
    final: FinalTotal | None = None
    corrections: tuple[CorrectionRecord, ...] = ()


@dataclass(frozen=True)
class Invoice:
    """An invoice of one customer and period: lines, totals per meter and for the invoice (exact and rounded)."""

    customer: str
    period: Period
    currency: str
    as_of: datetime
    is_final: bool
    lines: tuple[InvoiceLine, ...]
    meter_totals: tuple[tuple[str, Decimal, Decimal], ...]
    amount: Decimal
    rounded: Decimal
    unpriced: tuple[Unpriced, ...] = field(default=())
    #: per charge, the stored rows and the charges behind its lines, in the order of the lines
    items: tuple[InvoiceItem, ...] = field(default=())


def corrected_total(aggregation: str, total: Decimal, corrections: Iterable[tuple[int, Decimal]]) -> Decimal | None:
    """``total`` with ``(sign, value)`` corrections applied by the meter's aggregation; None when they cannot combine."""
    items = list(corrections)
    if aggregation in ("sum", "count"):
        for sign, value in items:
            total = EXACT.add(total, value if sign >= 0 else EXACT.minus(value))
        return total
    added = [value for sign, value in items if sign > 0]
    if aggregation == "max":
        return max([total, *added])
    if aggregation == "min":
        return min([total, *added])
    return total if not items else None


def _net_key(line: Line) -> tuple[object, ...]:
    tier = line.tier.index if line.tier is not None else None
    return (line.kind, tier) if line.kind in BOUND_KINDS else (line.kind, tier, line.unit_price)


def _describe(kind: LineKind, tier: TierBounds | None, quantity: Decimal, unit_price: Decimal) -> str:
    where = f"{tier}: " if tier is not None else ""
    if kind is LineKind.FLAT:
        return f"{where}flat price"
    if kind is LineKind.INCLUDED:
        return f"{quantity:f} included"
    if kind in BOUND_KINDS:
        return {LineKind.MINIMUM: "period minimum", LineKind.FEE_MINIMUM: "fee minimum"}.get(kind, "fee maximum") + " (change)"
    if kind is LineKind.PACKAGES:
        return f"{quantity:f} package(s) × {unit_price:f}"
    if kind is LineKind.PERCENTAGE:
        return f"{quantity:f} × {unit_price:f} (percentage)"
    return f"{where}{quantity:f} × {unit_price:f}"


def correction_lines(before: Charge, after: Charge) -> list[Line]:
    """The lines of ``after`` − ``before`` (two charges of one card version), netted per kind, tier and unit price.

    A unit line's quantity and amounts are the differences of the two charges' lines (unit price
    unchanged, so ``amount == quantity × unit_price``); a bound line (minimum, fee bounds) holds
    the difference of its amounts with quantity 1. ``rounded`` is the difference of the rounded
    amounts, so the lines add up to ``after.rounded − before.rounded`` exactly (and ``amount``
    to ``after.amount − before.amount``). Lines that net to nothing are left out.
    """
    order: list[tuple[object, ...]] = []
    net: dict[tuple[object, ...], list[Decimal]] = {}
    meta: dict[tuple[object, ...], Line] = {}
    for sign, charge in ((-1, before), (1, after)):
        for line in charge.lines:
            key = _net_key(line)
            if key not in net:
                order.append(key)
                net[key] = [ZERO, ZERO, ZERO]
                meta[key] = line
            sums = net[key]
            for i, value in enumerate((line.quantity, line.amount, line.rounded)):
                sums[i] = EXACT.add(sums[i], value if sign > 0 else EXACT.minus(value))
    out: list[Line] = []
    for key in order:
        quantity, amount, rounded = net[key]
        line = meta[key]
        if line.kind in BOUND_KINDS:
            quantity, unit_price = Decimal(1), amount
            if not amount and not rounded:
                continue
        else:
            unit_price = line.unit_price
            if not quantity and not amount and not rounded:
                continue
        out.append(
            Line(
                line.kind, _describe(line.kind, line.tier, quantity, unit_price), quantity, unit_price, amount, rounded, line.tier
            )
        )
    return out


def _period_label(period: Period) -> str:
    return rfc3339_millis(period.start)


def _idle_meter_charges(customer: str, period: Period, used: set[str], rating: Rating) -> list[tuple[str, Charge]]:
    """What each priced meter without usage in ``period`` still costs: its card priced at quantity 0.

    A period minimum or a flat fee is owed whether or not the customer used the meter; a card that
    charges nothing at 0 adds no line. No version in effect at the period's start: nothing is owed.
    """
    out: list[tuple[str, Charge]] = []
    for meter in rating.meters_of(customer):
        if meter in used:
            continue
        try:
            charge = rating.price(customer, meter, period, ZERO)
        except NoRateInEffect:
            continue
        if charge is not None and (charge.amount or charge.rounded):
            out.append((meter, charge))
    return out


def _usage_lines(final: FinalTotal, charge: Charge) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            "usage",
            final.meter,
            final.group,
            final.period,
            line.kind,
            line.description,
            line.tier,
            line.quantity,
            line.unit_price,
            line.amount,
            line.rounded,
        )
        for line in charge.lines
    ]


def build_invoice(
    customer: str,
    period: Period,
    finals: Sequence[FinalTotal],
    corrections: Sequence[CorrectionRecord],
    rating: Rating,
    *,
    as_of: datetime,
    is_final: bool,
) -> Invoice:
    """The invoice of ``customer`` for ``period`` (module docstring).

    ``finals``: the customer's final totals of ``period`` and of every period a correction names;
    ``corrections``: the customer's corrections loaded before ``period.end``. :class:`ValueError`
    when the customer has no plan (nothing to price with) or the plan's cards disagree on currency.
    """
    money = _money_of(rating, customer)
    lines: list[InvoiceLine] = []
    unpriced: list[Unpriced] = []
    items: list[InvoiceItem] = []
    by_key = {(f.meter, f.group, f.period.start): f for f in finals}
    for final in sorted((f for f in finals if f.period.start == period.start), key=lambda f: (f.meter, f.group)):
        try:
            charge = rating.price(customer, final.meter, final.period, final.quantity)
        except NoRateInEffect as exc:
            unpriced.append(Unpriced("usage", final.meter, final.group, final.period, str(exc)))
            continue
        if charge is None:
            unpriced.append(Unpriced("usage", final.meter, final.group, final.period, "the customer's plan prices no such meter"))
            continue
        lines += _usage_lines(final, charge)
        items.append(InvoiceItem("usage", final.meter, final.group, final.period, charge, final=final))
    used = {f.meter for f in finals if f.period.start == period.start}
    for meter, charge in _idle_meter_charges(customer, period, used, rating):
        idle = FinalTotal(meter, "{}", "", period, ZERO)
        lines += _usage_lines(idle, charge)
        items.append(InvoiceItem("usage", meter, idle.group, period, charge))
    targets: dict[tuple[str, str, datetime], list[CorrectionRecord]] = {}
    for record in corrections:
        if record.period.start < period.start and record.loaded_at < period.end:
            targets.setdefault((record.meter, record.group, record.period.start), []).append(record)
    for (meter, group, start), records in sorted(targets.items()):
        new = [r for r in records if r.loaded_at >= period.start]
        if not new:
            continue
        target = records[0].period
        found = rating.card_for(customer, meter)
        if found is None:
            unpriced.append(Unpriced("correction", meter, group, target, "the customer's plan prices no such meter"))
            continue
        old = [r for r in records if r.loaded_at < period.start]
        base = by_key.get((meter, group, start))
        base_quantity = base.quantity if base is not None else ZERO
        aggregation = records[0].aggregation
        before_total = corrected_total(aggregation, base_quantity, ((r.sign, r.value) for r in old))
        after_total = corrected_total(aggregation, base_quantity, ((r.sign, r.value) for r in records))
        if before_total is None or after_total is None:
            unpriced.append(
                Unpriced("correction", meter, group, target, f"{aggregation} corrections cannot be combined with a total")
            )
            continue
        card, card_money = found
        try:
            before, after = price(card, target, before_total, card_money), price(card, target, after_total, card_money)
        except NoRateInEffect as exc:
            unpriced.append(Unpriced("correction", meter, group, target, str(exc)))
            continue
        lines += _correction_invoice_lines(meter, group, target, before, after)
        items.append(InvoiceItem("correction", meter, group, target, after, before, base, tuple(records)))
    return _assemble(customer, period, money.currency, as_of, is_final, lines, unpriced, items)


def _correction_invoice_lines(meter: str, group: str, target: Period, before: Charge, after: Charge) -> list[InvoiceLine]:
    label = _period_label(target)
    return [
        InvoiceLine(
            "correction",
            meter,
            group,
            target,
            line.kind,
            f"correction to {label}: {line.description}",
            line.tier,
            line.quantity,
            line.unit_price,
            line.amount,
            line.rounded,
        )
        for line in correction_lines(before, after)
    ]


def _money_of(rating: Rating, customer: str) -> Money:
    name = rating.plan_of(customer)
    plan = rating.plans.get(name) if name is not None else None
    if plan is None:
        raise ValueError(f"customer {customer!r} has no rating plan: set rating.default_plan or rating.customers.{customer}.plan")
    return plan.money


def _assemble(
    customer: str,
    period: Period,
    currency: str,
    as_of: datetime,
    is_final: bool,
    lines: list[InvoiceLine],
    unpriced: list[Unpriced],
    items: list[InvoiceItem],
) -> Invoice:
    totals: dict[str, tuple[Decimal, Decimal]] = {}
    amount, rounded = ZERO, ZERO
    for line in lines:
        meter_amount, meter_rounded = totals.get(line.meter, (ZERO, ZERO))
        totals[line.meter] = (EXACT.add(meter_amount, line.amount), EXACT.add(meter_rounded, line.rounded))
        amount, rounded = EXACT.add(amount, line.amount), EXACT.add(rounded, line.rounded)
    meter_totals = tuple((meter, a, r) for meter, (a, r) in sorted(totals.items()))
    return Invoice(
        customer, period, currency, as_of, is_final, tuple(lines), meter_totals, amount, rounded, tuple(unpriced), tuple(items)
    )
