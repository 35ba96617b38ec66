"""Pricing: a billing period's usage total of one meter, turned into money, exactly and explainably.

A meter's **rate card** is a list of **versions**, each in effect over ``[starts_at, ends_before)``
and carrying one **price model**:

- ``per_unit``: every unit at one price;
- ``graduated``: each tier's units at that tier's price (tier 1 holds ``[0, up_to]``, a later tier
  ``(previous up_to, up_to]``: a quantity exactly on a bound belongs to the lower tier);
- ``volume``: the whole quantity at the price of the tier it lands in;
- ``package``: a price per package of ``size`` units, the number of packages rounded up or down;
- ``percentage``: a percent of the quantity read as an amount (a fee on a transaction volume),
  optionally clamped to a minimum and a maximum per period.

A graduated or volume tier may carry a ``flat_price`` (alone or with a ``unit_price``), charged once
when the quantity reaches the tier (tier 1 is reached by every quantity >= 0, so its flat price is
a base fee). Around the model, in this order: the quantity is rounded (``quantity_rounding``), the
``included`` (free) quantity is taken off, the model prices what remains, and a period ``minimum``
adds a true-up line when the lines total less.

**A price change inside a period**: the version in effect at the period's *start* prices the whole
period (:func:`price`; the charge names a version that starts inside the period as
``pending_change``). Why: a period is priced from its final total alone, which is what the pipeline
emits, so a replay reprices exactly as live did; tiers apply to the whole period's quantity, which
proration by time could only split with per-version usage the final does not carry.

**Negative quantities** are adjustments: their lines mirror the usage lines of ``|quantity|`` with
negated quantities and amounts, unit prices only. The included quantity, flat prices, the
percentage minimum and maximum and the period minimum do not apply to them: they belong to a
period's usage, not to a correction of it.

**Rounding**: every line keeps its exact ``amount`` beside its ``rounded`` one (the currency's
minor unit, a :mod:`decimal` rounding mode, ``ROUND_HALF_UP`` by default); a charge's totals are the
sums of its lines' columns, so the lines always add up exactly. All arithmetic is
:class:`decimal.Decimal` in a context that traps any inexact result: no float, no silent rounding.

Pure Python, no Flink imports; jobs/config.py reads the ``rating`` section into :class:`Rating`.
docs/pricing.md has a worked example of each rule.

Why one module: the models, the lines they produce, the version rule and the plans that hold them
are one contract (an invoice line must be explainable from the card alone); apart, a rule such as
"adjustments take no flat price" would be restated in several places.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import (
    ROUND_05UP,
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)
from enum import StrEnum
from typing import ClassVar

from udfs.periods import Period, as_utc

#: Most decimal places of a price, a tier bound or any other number of a rate card.
MAX_PLACES = 12
#: Most digits before the point: every number of a card fits ``Decimal(38, 12)``.
MAX_INTEGER_DIGITS = 38 - MAX_PLACES
#: The :mod:`decimal` rounding modes, by their names (which are also their values).
ROUNDING_MODES: tuple[str, ...] = (
    ROUND_HALF_UP,
    ROUND_HALF_EVEN,
    ROUND_HALF_DOWN,
    ROUND_UP,
    ROUND_DOWN,
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_05UP,
)
#: ISO 4217 minor units (digits after the point) of common currencies; another code needs
#: ``minor_units`` in the configuration.
MINOR_UNITS: Mapping[str, int] = {
    **dict.fromkeys(
        "AED ARS AUD BGN BRL CAD CHF CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR MAD MXN MYR NGN NOK NZD "  # noqa: SIM905
        "PEN PHP PKR PLN RON SAR SEK SGD THB TRY TWD UAH USD ZAR".split(),
        2,
    ),
    **dict.fromkeys("CLP ISK JPY KRW PYG UGX VND XAF XOF".split(), 0),  # noqa: SIM905
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),  # noqa: SIM905
}
CURRENCY_CODE = re.compile(r"[A-Z]{3}")

ZERO = Decimal(0)
ONE = Decimal(1)
#: Exact arithmetic: any result that would round raises instead (prices x quantities stay far inside).
EXACT = Context(prec=120, traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow])
#: For the deliberate roundings (quantities, money): ``quantize`` with an explicit mode.
_ROUNDING = Context(prec=120, traps=[InvalidOperation, DivisionByZero, Overflow])


class NoRateInEffect(ValueError):
    """No version of a rate card is in effect at the instant asked about (a gap in the card)."""


def places(value: Decimal) -> int:
    """Digits after the point as written (``1.50`` has 2, ``15`` and ``1E+1`` have 0)."""
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def number_problem(value: Decimal, *, money_places: int | None = None) -> str | None:
    """Why ``value`` cannot stand in a rate card, or None: finite, >= 0, at most :data:`MAX_PLACES`
    places (``money_places`` for an amount the invoice shows as it is)."""
    if not value.is_finite():
        return f"{value} is not a finite number"
    if value < 0:
        return f"{value:f} must not be negative (a credit is a negative quantity, priced by the same card)"
    limit = MAX_PLACES if money_places is None else money_places
    if places(value) > limit:
        if money_places is None:
            return f"{value:f} has more than {MAX_PLACES} decimal places: round it to at most {MAX_PLACES}"
        return f"{value:f} is an amount of money: at most the currency's {money_places} minor-unit digit(s)"
    if value != 0 and value.adjusted() >= MAX_INTEGER_DIGITS:
        return f"{value:f} has more than {MAX_INTEGER_DIGITS} digits before the point"
    return None


# --- rounding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rounding:
    """Round to ``places`` decimal places with a :mod:`decimal` mode (``ROUND_UP``: away from zero)."""

    places: int = 0
    mode: str = ROUND_HALF_UP

    def __post_init__(self) -> None:
        if self.mode not in ROUNDING_MODES:
            raise ValueError(f"{self.mode!r} must be one of {', '.join(ROUNDING_MODES)}")
        if not 0 <= self.places <= MAX_PLACES:
            raise ValueError(f"{self.places} places is out of range 0–{MAX_PLACES}")

    def apply(self, value: Decimal) -> Decimal:
        """``value`` rounded; the sign is kept (modes act on the signed value, as in :mod:`decimal`)."""
        return value.quantize(Decimal(1).scaleb(-self.places), rounding=self.mode, context=_ROUNDING)


@dataclass(frozen=True)
class Money:
    """The currency of a plan and how line amounts round to its minor unit."""

    currency: str = "USD"
    minor_units: int = 2
    mode: str = ROUND_HALF_UP

    def __post_init__(self) -> None:
        Rounding(self.minor_units, self.mode)  # raises for a bad mode or digits
        if not CURRENCY_CODE.fullmatch(self.currency):
            raise ValueError(f"{self.currency!r} is not an ISO 4217 code (three capital letters, e.g. USD)")

    @classmethod
    def of(cls, currency: str, mode: str = ROUND_HALF_UP, minor_units: int | None = None) -> Money:
        """The currency with its ISO 4217 minor units (:data:`MINOR_UNITS`) unless given."""
        if minor_units is None:
            if currency not in MINOR_UNITS:
                raise ValueError(f"unknown currency {currency!r}: give its minor_units (digits after the point)")
            minor_units = MINOR_UNITS[currency]
        return cls(currency, minor_units, mode)

    def round(self, amount: Decimal) -> Decimal:
        """``amount`` to the minor unit (USD, ``ROUND_HALF_UP``: 1.005 -> 1.01, -1.005 -> -1.01)."""
        return Rounding(self.minor_units, self.mode).apply(amount)


# --- price models --------------------------------------------------------------------------------


class ModelKind(StrEnum):
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    PERCENTAGE = "percentage"


class LineKind(StrEnum):
    INCLUDED = "included"  # the free quantity: priced at 0
    UNITS = "units"  # quantity x unit price (per unit, a tier's units, a volume tier)
    FLAT = "flat"  # a tier's flat price
    PACKAGES = "packages"  # packages x package price
    PERCENTAGE = "percentage"  # quantity x percent / 100
    FEE_MINIMUM = "fee_minimum"  # tops a percentage fee up to its minimum
    FEE_MAXIMUM = "fee_maximum"  # caps a percentage fee at its maximum
    MINIMUM = "minimum"  # tops the period up to its minimum


@dataclass(frozen=True)
class TierBounds:
    """Tier ``index`` (1-based) of a graduated or volume card: ``[0, up_to]`` for tier 1, else
    ``(after, up_to]``; ``up_to`` None is unbounded."""

    index: int
    after: Decimal | None
    up_to: Decimal | None

    def __str__(self) -> str:
        low = "0" if self.after is None else f"over {self.after:f}"
        high = ("and above" if self.after is None else "") if self.up_to is None else f"to {self.up_to:f}"
        return f"tier {self.index} ({f'{low} {high}'.strip()})"


@dataclass(frozen=True)
class Line:
    """One explainable line. ``amount`` is exact, ``rounded`` is what the invoice shows.

    For units, packages, flat prices and percentages ``amount == quantity * unit_price`` and
    ``rounded`` is ``amount`` rounded to the minor unit. A bound line (``fee_minimum``,
    ``fee_maximum``, ``minimum``) holds in each column the difference to the bound in that
    column, so each column's total meets the bound exactly; its quantity is 1.
    """

    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    rounded: Decimal
    tier: TierBounds | None = None


def _line(
    kind: LineKind, description: str, quantity: Decimal, unit_price: Decimal, money: Money, tier: TierBounds | None = None
) -> Line:
    amount = EXACT.multiply(quantity, unit_price)
    return Line(kind, description, quantity, unit_price, amount, money.round(amount), tier)


def _bound_line(kind: LineKind, description: str, amount: Decimal, rounded: Decimal) -> Line:
    return Line(kind, description, ONE, amount, amount, rounded)


def _total(lines: list[Line]) -> tuple[Decimal, Decimal]:
    amount, rounded = ZERO, ZERO
    for line in lines:
        amount, rounded = EXACT.add(amount, line.amount), EXACT.add(rounded, line.rounded)
    return amount, rounded


@dataclass(frozen=True)
class PerUnit:
    """Every unit at ``unit_price``."""

    unit_price: Decimal

    kind: ClassVar[ModelKind] = ModelKind.PER_UNIT

    def lines(self, quantity: Decimal, money: Money, *, adjustment: bool) -> list[Line]:
        return [_line(LineKind.UNITS, f"{quantity:f} × {self.unit_price:f}", quantity, self.unit_price, money)]

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        return _number_problems({"unit_price": self.unit_price})


@dataclass(frozen=True)
class Tier:
    """A tier of a graduated or volume card: up to ``up_to`` units (None: unbounded, the last tier).

    ``unit_price`` None charges nothing per unit; ``flat_price`` None charges no flat price.
    """

    up_to: Decimal | None
    unit_price: Decimal | None = None
    flat_price: Decimal | None = None


def _tiers_problems(tiers: tuple[Tier, ...]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not tiers:
        return [("tiers", "at least one tier is required (the last one without up_to)")]
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        path = f"tiers[{index}]"
        found += [
            (f"{path}.{key}", message)
            for key, message in _number_problems(
                {"up_to": tier.up_to, "unit_price": tier.unit_price, "flat_price": tier.flat_price}
            )
        ]
        if tier.unit_price is None and tier.flat_price is None:
            found.append((path, "give unit_price, flat_price or both (unit_price: 0 for a free tier)"))
        last = index == len(tiers) - 1
        if tier.up_to is None and not last:
            found.append((f"{path}.up_to", "only the last tier may be unbounded: give this one an up_to"))
        if tier.up_to is not None and last:
            found.append((f"{path}.up_to", "the last tier takes every unit above the one before: leave its up_to out"))
        if tier.up_to is not None and previous is not None and tier.up_to <= previous:
            found.append(
                (
                    f"{path}.up_to",
                    f"{tier.up_to:f} must be greater than the tier before's up_to {previous:f} (tiers in increasing order)",
                )
            )
        previous = tier.up_to if tier.up_to is not None else previous
    return found


def _bounds(tiers: tuple[Tier, ...]) -> list[TierBounds]:
    bounds, after = [], None
    for index, tier in enumerate(tiers, start=1):
        bounds.append(TierBounds(index, after, tier.up_to))
        after = tier.up_to
    return bounds


def _reaches(quantity: Decimal, bounds: TierBounds) -> bool:
    """Whether ``quantity`` (>= 0) lands in this tier or beyond: tier 1 always, a later one above its ``after``."""
    return bounds.after is None or quantity > bounds.after


@dataclass(frozen=True)
class Graduated:
    """Each tier's units at that tier's unit price, plus the flat price of every tier reached."""

    tiers: tuple[Tier, ...]

    kind: ClassVar[ModelKind] = ModelKind.GRADUATED

    def lines(self, quantity: Decimal, money: Money, *, adjustment: bool) -> list[Line]:
        lines: list[Line] = []
        for tier, bounds in zip(self.tiers, _bounds(self.tiers), strict=True):
            if not _reaches(quantity, bounds):
                break
            top = quantity if bounds.up_to is None else min(quantity, bounds.up_to)
            units = EXACT.subtract(top, bounds.after or ZERO)
            if tier.unit_price is not None:
                lines.append(
                    _line(LineKind.UNITS, f"{bounds}: {units:f} × {tier.unit_price:f}", units, tier.unit_price, money, bounds)
                )
            if tier.flat_price is not None and not adjustment:
                lines.append(_line(LineKind.FLAT, f"{bounds}: flat price", ONE, tier.flat_price, money, bounds))
        return lines

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        return _tiers_problems(self.tiers)


@dataclass(frozen=True)
class Volume:
    """The whole quantity at the unit price of the tier it lands in, plus that tier's flat price."""

    tiers: tuple[Tier, ...]

    kind: ClassVar[ModelKind] = ModelKind.VOLUME

    def lines(self, quantity: Decimal, money: Money, *, adjustment: bool) -> list[Line]:
        for tier, bounds in zip(self.tiers, _bounds(self.tiers), strict=True):
            if bounds.up_to is None or quantity <= bounds.up_to:
                lines = []
                if tier.unit_price is not None:
                    description = f"{bounds}: all {quantity:f} × {tier.unit_price:f}"
                    lines.append(_line(LineKind.UNITS, description, quantity, tier.unit_price, money, bounds))
                if tier.flat_price is not None and not adjustment:
                    lines.append(_line(LineKind.FLAT, f"{bounds}: flat price", ONE, tier.flat_price, money, bounds))
                return lines
        raise AssertionError("the last tier is unbounded")  # Volume.problems() holds to it

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        return _tiers_problems(self.tiers)


class PackageRounding(StrEnum):
    UP = "up"  # a started package is charged whole
    DOWN = "down"  # only complete packages are charged


@dataclass(frozen=True)
class Package:
    """``price`` per package of ``size`` units; the number of packages rounded ``up`` or ``down``."""

    size: Decimal
    price: Decimal
    rounding: PackageRounding = PackageRounding.UP

    kind: ClassVar[ModelKind] = ModelKind.PACKAGE

    def lines(self, quantity: Decimal, money: Money, *, adjustment: bool) -> list[Line]:
        whole, remainder = EXACT.divide_int(quantity, self.size), EXACT.remainder(quantity, self.size)
        packages = whole + (1 if remainder and self.rounding is PackageRounding.UP else 0)
        description = f"{packages:f} package(s) of {self.size:f} ({quantity:f} rounded {self.rounding.value}) × {self.price:f}"
        return [_line(LineKind.PACKAGES, description, packages, self.price, money)]

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        found = _number_problems({"package_size": self.size, "package_price": self.price})
        if self.size.is_finite() and self.size <= 0:
            found.append(("package_size", f"{self.size:f} must be greater than 0"))
        return found


@dataclass(frozen=True)
class Percentage:
    """``percent`` of the quantity read as an amount, clamped per period to ``min_amount`` and ``max_amount``."""

    percent: Decimal
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None

    kind: ClassVar[ModelKind] = ModelKind.PERCENTAGE

    def lines(self, quantity: Decimal, money: Money, *, adjustment: bool) -> list[Line]:
        rate = self.percent.scaleb(-2, context=EXACT)
        fee = _line(LineKind.PERCENTAGE, f"{self.percent:f}% of {quantity:f}", quantity, rate, money)
        lines = [fee]
        if adjustment:
            return lines
        for bound, kind, below in ((self.min_amount, LineKind.FEE_MINIMUM, True), (self.max_amount, LineKind.FEE_MAXIMUM, False)):
            if bound is None:
                continue
            exact, rounded = (
                (max(EXACT.subtract(bound, fee.amount), ZERO), max(EXACT.subtract(bound, fee.rounded), ZERO))
                if below
                else (min(EXACT.subtract(bound, fee.amount), ZERO), min(EXACT.subtract(bound, fee.rounded), ZERO))
            )
            if exact or rounded:
                what = "minimum" if below else "maximum"
                lines.append(_bound_line(kind, f"fee {what} {bound:f}", exact, rounded))
        return lines

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        money_places = None if money is None else money.minor_units
        found = _number_problems({"percent": self.percent})
        found += _number_problems({"min_amount": self.min_amount, "max_amount": self.max_amount}, money_places)
        if self.min_amount is not None and self.max_amount is not None and self.min_amount > self.max_amount:
            found.append(("max_amount", f"{self.max_amount} must not be below min_amount {self.min_amount}"))
        return found


PriceModel = PerUnit | Graduated | Volume | Package | Percentage


def _number_problems(numbers: Mapping[str, Decimal | None], money_places: int | None = None) -> list[tuple[str, str]]:
    return [
        (key, problem)
        for key, value in numbers.items()
        if value is not None and (problem := number_problem(value, money_places=money_places)) is not None
    ]


# --- versions and cards --------------------------------------------------------------------------


@dataclass(frozen=True)
class RateVersion:
    """One version of a meter's price, in effect over ``[starts_at, ends_before)`` (None: open-ended).

    ``quantity_rounding`` (None: none) rounds the period's quantity first; ``included`` units are
    free; ``minimum`` is the least the period costs (a true-up line makes up the difference).
    """

    starts_at: datetime
    model: PriceModel
    ends_before: datetime | None = None
    included: Decimal = ZERO
    minimum: Decimal | None = None
    quantity_rounding: Rounding | None = None

    def in_effect(self, instant: datetime) -> bool:
        return self.starts_at <= instant and (self.ends_before is None or instant < self.ends_before)

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        """(field, message) for every inconsistency; ``money`` also checks amounts against its minor units."""
        found: list[tuple[str, str]] = []
        if self.starts_at.tzinfo is None or (self.ends_before is not None and self.ends_before.tzinfo is None):
            found.append(("starts_at", "instants need an offset, e.g. 2026-01-01T00:00:00Z"))
        elif self.ends_before is not None and self.ends_before <= self.starts_at:
            found.append(("ends_before", f"must be after starts_at ({_iso(self.starts_at)})"))
        found += _number_problems({"included": self.included})
        money_places = None if money is None else money.minor_units
        found += _number_problems({"minimum": self.minimum}, money_places)
        found += self.model.problems(money)
        return found


@dataclass(frozen=True)
class RateCard:
    """A meter's versions, oldest first, none overlapping (gaps allowed: no price then)."""

    meter: str
    versions: tuple[RateVersion, ...]

    def problems(self, money: Money | None = None) -> list[tuple[str, str]]:
        """(field, message) per problem; fields are ``[index].key`` into ``versions``."""
        found = [(_at(index, key), message) for index, v in enumerate(self.versions) for key, message in v.problems(money)]
        return found + self.order_problems()

    def order_problems(self) -> list[tuple[str, str]]:
        """The versions' order and overlaps: oldest first, each ending before the next starts."""
        if not self.versions:
            return [("", "at least one version is required")]
        if any(v.starts_at.tzinfo is None or (v.ends_before is not None and v.ends_before.tzinfo is None) for v in self.versions):
            return []  # reported per version; naive instants do not compare
        found: list[tuple[str, str]] = []
        for index in range(1, len(self.versions)):
            before, this = self.versions[index - 1], self.versions[index]
            if this.starts_at <= before.starts_at:
                found.append((f"[{index}].starts_at", f"versions go oldest first: must be after [{index - 1}].starts_at"))
            elif before.ends_before is None or before.ends_before > this.starts_at:
                end = "has no ends_before" if before.ends_before is None else f"ends {_iso(before.ends_before)}"
                found.append(
                    (
                        f"[{index}].starts_at",
                        f"overlaps version [{index - 1}], which {end}: give [{index - 1}] ends_before: {_iso(this.starts_at)}",
                    )
                )
        return found

    def version_at(self, instant: datetime) -> RateVersion:
        """The version in effect at ``instant``; :class:`NoRateInEffect` in a gap."""
        for version in self.versions:
            if version.in_effect(as_utc(instant)):
                return version
        raise NoRateInEffect(f"no version of {self.meter!r}'s rate card is in effect at {_iso(as_utc(instant))}")

    def version_for(self, period: Period) -> RateVersion:
        """The version that prices ``period``: the one in effect at its start, for the whole period."""
        return self.version_at(period.start)

    def change_within(self, period: Period) -> datetime | None:
        """The first instant inside ``period`` (after its start) at which another version starts, if any."""
        for version in self.versions:
            if period.start < version.starts_at < period.end:
                return version.starts_at
        return None


# --- pricing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """A priced period of one meter: its lines and their totals (exact and rounded).

    ``amount`` and ``rounded`` are the sums of the lines' columns: the lines add up exactly.
    ``rated_quantity`` is ``quantity`` after the card's quantity rounding. ``version`` is the
    version that priced the period; ``pending_change`` the start of a version inside the period,
    which prices only from the next period on.
    """

    meter: str
    currency: str
    quantity: Decimal
    rated_quantity: Decimal
    version: RateVersion
    lines: tuple[Line, ...]
    amount: Decimal
    rounded: Decimal
    pending_change: datetime | None = None


def price_lines(version: RateVersion, quantity: Decimal, money: Money) -> tuple[Decimal, list[Line]]:
    """The rated quantity and the lines of one version for a period's ``quantity``."""
    with localcontext(EXACT):  # an operator written without EXACT still cannot round silently
        return _price_lines(version, quantity, money)


def _price_lines(version: RateVersion, quantity: Decimal, money: Money) -> tuple[Decimal, list[Line]]:
    if version.quantity_rounding is not None:
        quantity = version.quantity_rounding.apply(quantity)
    if quantity < 0:  # an adjustment: the usage lines of |quantity|, mirrored
        mirrored = version.model.lines(EXACT.minus(quantity), money, adjustment=True)
        return quantity, [_negated(line, money) for line in mirrored]
    lines: list[Line] = []
    billable = quantity
    if version.included > 0:
        free = min(quantity, version.included)
        lines.append(_line(LineKind.INCLUDED, f"{free:f} of {version.included:f} included", free, ZERO, money))
        billable = EXACT.subtract(quantity, free)
    lines += version.model.lines(billable, money, adjustment=False)
    if version.minimum is not None:
        amount, rounded = _total(lines)
        exact, shown = max(EXACT.subtract(version.minimum, amount), ZERO), max(EXACT.subtract(version.minimum, rounded), ZERO)
        if exact or shown:
            lines.append(_bound_line(LineKind.MINIMUM, f"period minimum {version.minimum:f}", exact, shown))
    return quantity, lines


def _negated(line: Line, money: Money) -> Line:
    amount = EXACT.minus(line.amount)
    return Line(
        line.kind,
        f"adjustment: {line.description}",
        EXACT.minus(line.quantity),
        line.unit_price,
        amount,
        money.round(amount),
        line.tier,
    )


def price(card: RateCard, period: Period, quantity: Decimal, money: Money) -> Charge:
    """Price ``quantity``, the period's total of ``card.meter``, with the version in effect at ``period.start``.

    That version prices the whole period even when another starts inside it (named in
    ``pending_change``); :class:`NoRateInEffect` when none is in effect at the start.
    """
    version = card.version_for(period)
    rated, lines = price_lines(version, quantity, money)
    amount, rounded = _total(lines)
    return Charge(card.meter, money.currency, quantity, rated, version, tuple(lines), amount, rounded, card.change_within(period))


# --- plans ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatePlan:
    """A set of rate cards (by meter) in one currency."""

    money: Money = field(default_factory=Money)
    cards: Mapping[str, RateCard] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomerRating:
    """A customer's plan (None: the default plan) and its own cards, which replace the plan's for their meters."""

    plan: str | None = None
    cards: Mapping[str, RateCard] = field(default_factory=dict)


@dataclass(frozen=True)
class Rating:
    """The ``rating`` section: plans, the default plan, and customers' assignments and overrides.

    Empty (the default) rates nothing: :meth:`card_for` is None for every customer and meter.
    """

    plans: Mapping[str, RatePlan] = field(default_factory=dict)
    default_plan: str | None = None
    customers: Mapping[str, CustomerRating] = field(default_factory=dict)

    def plan_of(self, customer_id: str) -> str | None:
        """The name of the customer's plan: its assignment, else the default plan."""
        own = self.customers.get(customer_id)
        return own.plan if own is not None and own.plan is not None else self.default_plan

    def card_for(self, customer_id: str, meter: str) -> tuple[RateCard, Money] | None:
        """The customer's card for ``meter`` (its own, else its plan's) and its plan's money; None: unpriced."""
        name = self.plan_of(customer_id)
        plan = self.plans.get(name) if name is not None else None
        if plan is None:
            return None
        own = self.customers.get(customer_id)
        card = own.cards.get(meter) if own is not None else None
        if card is None:
            card = plan.cards.get(meter)
        return None if card is None else (card, plan.money)

    def meters_of(self, customer_id: str) -> list[str]:
        """The meters the customer's plan (or its own cards) prices, sorted."""
        name = self.plan_of(customer_id)
        plan = self.plans.get(name) if name is not None else None
        own = self.customers.get(customer_id)
        return sorted({*(plan.cards if plan is not None else {}), *(own.cards if own is not None else {})})

    def price(self, customer_id: str, meter: str, period: Period, quantity: Decimal) -> Charge | None:
        """:func:`price` with the customer's card; None when the meter is not priced for them."""
        found = self.card_for(customer_id, meter)
        return None if found is None else price(found[0], period, quantity, found[1])

    def problems(self, meters: set[str]) -> list[tuple[str, str]]:
        """(field, message) for references that do not resolve: plans, meters (``meters``: the configured names)."""
        found: list[tuple[str, str]] = []
        if self.plans and self.default_plan is None:
            found.append(
                ("default_plan", f"required: the plan of every customer not assigned one ({', '.join(sorted(self.plans))})")
            )
        if self.default_plan is not None and self.default_plan not in self.plans:
            found.append(("default_plan", _unknown("plan", self.default_plan, set(self.plans))))
        for name, plan in self.plans.items():
            found += [
                (f"plans.{name}.meters.{meter}", _unknown("meter", meter, meters)) for meter in plan.cards if meter not in meters
            ]
        for customer, own in self.customers.items():
            if own.plan is not None and own.plan not in self.plans:
                found.append((f"customers.{customer}.plan", _unknown("plan", own.plan, set(self.plans))))
            found += [
                (f"customers.{customer}.meters.{meter}", _unknown("meter", meter, meters))
                for meter in own.cards
                if meter not in meters
            ]
            if own.cards and self.plan_of(customer) is None:
                found.append(
                    (
                        f"customers.{customer}.meters",
                        "a customer's own cards need a plan (its currency): set plan or rating.default_plan",
                    )
                )
        return found


def _at(index: int, key: str) -> str:
    return f"[{index}].{key}" if key else f"[{index}]"


def _iso(instant: datetime) -> str:
    """An instant as RFC 3339, UTC written ``Z``."""
    return instant.isoformat().replace("+00:00", "Z")


def _unknown(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r} (defined: {', '.join(sorted(known)) or 'none'}){hint}"


def explain(charge: Charge) -> str:
    """The charge as text: a header, one row per line (exact and rounded amount) and the totals (docs/pricing.md shows these)."""
    rated = f" (rated {charge.rated_quantity:f})" if charge.rated_quantity != charge.quantity else ""
    rows = [
        f"{charge.meter}: quantity {charge.quantity:f}{rated}, {charge.currency}, version from {_iso(charge.version.starts_at)}",
        _row("line", "exact", "rounded"),
        *(_row(line.description, f"{line.amount:f}", f"{line.rounded:f}") for line in charge.lines),
        _row("total", f"{charge.amount:f}", f"{charge.rounded:f}"),
    ]
    if charge.pending_change is not None:
        rows.append(f"  a new version starts at {_iso(charge.pending_change)}: it prices periods from the next one on")
    return "\n".join(rows)


def _row(description: str, exact: str, rounded: str) -> str:
    return f"  {description:<60} {exact:>16} {rounded:>10}"
