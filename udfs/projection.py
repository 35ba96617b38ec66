"""Projecting a period's usage to its end: linear extrapolation of the period-to-date rate.

For an additive meter (``sum``, ``count``) whose period ``[start, end)`` is still open at ``at``::

    projected = quantity × (end − start) / (at − start)

with durations in whole milliseconds and the result rounded half-even to 9 decimal places (the
precision ClickHouse stores quantities in). It assumes usage keeps the average rate of the period so
far; it knows nothing of weekdays, seasons or a customer that stopped. Early in a period the ratio
is large (one busy hour of a 30-day month projects ×720), so read it with the elapsed share.

Not extrapolated (``held``): ``max``, ``min``, ``latest`` and ``unique_count`` do not grow with
time in proportion, so their projection is the value so far. A final period, or one whose end is
at or before ``at``, projects to its total as it is. Pure Python, no Flink imports.

:func:`cost_so_far` prices a quantity and its projection through the customer's card: the one rule
the read side (``metering query cost``, clickhouse/billing.py) and the stream's cost records
(jobs/alerts/evaluator.py) share, so both give the same figures for the same totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum

from udfs.periods import Period, as_utc
from udfs.pricing import Charge, NoRateInEffect, Rating

#: The additive aggregations: their period total grows with the time that passes.
ADDITIVE = frozenset({"sum", "count"})
#: Places of a projected quantity (ClickHouse's Decimal(38, 9)).
PLACES = 9
_CONTEXT = Context(prec=120)


class Method(StrEnum):
    FINAL = "final"  # the period is final: its total
    ENDED = "ended"  # the period has ended (in its grace window): its total so far
    LINEAR = "linear"  # quantity × duration / elapsed
    HELD = "held"  # not additive (max, min, latest, unique_count), or no time elapsed: the value so far


@dataclass(frozen=True)
class Projection:
    """A projected quantity to the period's end, how it was made and the share of the period elapsed (0–1)."""

    quantity: Decimal
    method: Method
    elapsed_share: Decimal


def _millis(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def project(aggregation: str, quantity: Decimal, period: Period, at: datetime, *, final: bool = False) -> Projection:
    """``quantity``, the period's total so far at ``at``, projected to the period's end (module docstring)."""
    at = as_utc(at)
    duration = _millis(period.duration)
    elapsed = min(max(_millis(at - period.start), 0), duration)
    share = (
        (Decimal(elapsed) / Decimal(duration)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN, _CONTEXT) if duration else Decimal(1)
    )
    if final:
        return Projection(quantity, Method.FINAL, Decimal(1))
    if elapsed >= duration:
        return Projection(quantity, Method.ENDED, Decimal(1))
    if aggregation not in ADDITIVE or elapsed == 0:
        return Projection(quantity, Method.HELD, share)
    exact = _CONTEXT.divide(_CONTEXT.multiply(quantity, Decimal(duration)), Decimal(elapsed))
    return Projection(exact.quantize(Decimal(1).scaleb(-PLACES), ROUND_HALF_EVEN, _CONTEXT), Method.LINEAR, share)


@dataclass(frozen=True)
class CostSoFar:
    """A period's quantity and its projection, each priced by the customer's card (None: unpriced)."""

    projection: Projection
    #: The plan's currency; None when the card does not price the meter.
    currency: str | None
    charge: Charge | None
    projected: Charge | None


def cost_so_far(
    rating: Rating,
    customer_id: str,
    meter: str,
    aggregation: str,
    period: Period,
    quantity: Decimal,
    at: datetime,
    *,
    final: bool,
) -> CostSoFar:
    """``quantity`` (the period's total so far, or its final) priced, and :func:`project`'s quantity at ``at`` priced
    through the card too (tiers and all, never the cost scaled). A gap in the card at the period's start prices nothing."""
    projection = project(aggregation, quantity, period, at, final=final)
    found = rating.card_for(customer_id, meter)
    if found is None:
        return CostSoFar(projection, None, None, None)
    try:
        charge = rating.price(customer_id, meter, period, quantity)
        projected = rating.price(customer_id, meter, period, projection.quantity)
    except NoRateInEffect:
        charge = projected = None
    return CostSoFar(projection, found[1].currency, charge, projected)
