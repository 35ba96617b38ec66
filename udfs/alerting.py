"""Threshold alerts: rules, the running value of a period, and a state machine that fires each alert once.

A **rule** (the ``alerts`` section, jobs/config.py) watches one meter for some customers (all by
default) and has a strictly increasing list of **thresholds** on one of five values:

- ``usage``: the period's quantity of the meter (its groups combined by the meter's aggregation);
- ``entitlement_pct``: that quantity as a percent of the rule's ``entitlement``;
- ``spend``: the period's cost so far, each group priced by the customer's rate card
  (:meth:`udfs.pricing.Rating.price`, the rounded amount, as an invoice shows it);
- ``projected_spend``: :func:`udfs.projection.project`'s quantity at the stream's time, priced so;
- ``credit_remaining`` (no meter): the customer's prepaid credit left with pending cost
  (:func:`udfs.credits.burn`'s ``remaining`` at the stream's time). It alarms as the value **falls**
  to a threshold (``<=``): :func:`step_falling` runs the same machine on the negated value, so
  thresholds crossed at once give one alert for the lowest; its period is the customer's billing
  period at the stream's time, and a correction never makes it ``final``.

Per (rule, customer, meter, period) every threshold is ``ok``, ``alarm`` or ``resolved``:

- ``ok`` → ``alarm`` when the value reaches the threshold (``>=``). Thresholds crossed at once
  give **one** ``alert.triggered``, for the highest; the lower ones are marked as alarmed too
  (covered), so none of them fires later.
- ``alarm`` → ``resolved`` when the value falls back under (a void, a correction), or when a newer
  period of the customer's meter starts: one ``alert.resolved`` for the highest threshold that
  announced an alarm.
- ``resolved`` is terminal: a (rule, threshold, customer, period) triggers **at most once**.
- Once the period is **final**, a change (a correction) never triggers: when it moves the value
  across thresholds, it gives one ``alert.corrected`` for the highest threshold crossed or uncrossed.

Every alert has a deterministic ``id`` (rule, threshold, customer, meter, period, kind and, for the
kinds that can repeat, their sequence number), so a receiver can drop a redelivered one.

The running value follows ClickHouse's visible segments (clickhouse/migrations/0002_aggregates.sql):
a minute's ``on_time`` segment is re-emitted with a growing ``version`` and replaces its previous
version; each ``late:<event_id>`` segment is counted once. A period's final replaces its segments,
and corrections are applied to the final like an invoice does (:func:`udfs.invoicing.corrected_total`).

Pure Python, no Flink or Kafka imports; jobs/alerts/ runs it over the job's topics.

Why one module: the rules, the running value and the state machine are one contract (what
"crossed" means depends on how a segment replaces its previous version and on when a period is
final); apart, the once-only rule would be restated in several places.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from typing import Any

from udfs.periods import Period, from_epoch_millis, rfc3339_millis
from udfs.pricing import NoRateInEffect, Rating
from udfs.projection import project

ZERO = Decimal(0)
#: Places of a computed value (a percent, a spend): ClickHouse's Decimal(38, 9).
PLACES = 9
_CONTEXT = Context(prec=120)
#: An ``on_time`` segment older than this, behind the newest minute of its key, no longer changes:
#: its value is kept folded, without its version (bounds the state; see docs/pricing.md, "Alerts").
DEFAULT_OPEN_MINUTES = timedelta(hours=1)
#: A period whose end is this far behind the stream's time is forgotten (its state removed; a later
#: record of it is ignored): bounds the state. Longer than any period plus its grace and corrections.
DEFAULT_RETENTION = timedelta(days=400)


class RuleKind(StrEnum):
    USAGE = "usage"
    ENTITLEMENT_PCT = "entitlement_pct"
    SPEND = "spend"
    PROJECTED_SPEND = "projected_spend"
    CREDIT_REMAINING = "credit_remaining"


#: What stands for the meter in a ``credit_remaining`` alert's id (it watches every meter's cost).
CREDIT_METER = "*credit*"


class AlertKind(StrEnum):
    TRIGGERED = "alert.triggered"
    RESOLVED = "alert.resolved"
    CORRECTED = "alert.corrected"


class Status(StrEnum):
    OK = "ok"
    ALARM = "alarm"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Webhook:
    """Where a rule's alerts are POSTed, and the ``whsec_`` secret that signs them (never printed)."""

    url: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Webhook(url={self.url!r}, secret='***')"


@dataclass(frozen=True)
class AlertRule:
    """One rule: a kind of value of ``meter`` (``''`` for ``credit_remaining``), increasing ``thresholds``, the
    customers it watches (None: all)."""

    name: str
    kind: RuleKind
    meter: str
    thresholds: tuple[Decimal, ...]
    customers: frozenset[str] | None = None
    entitlement: Decimal | None = None
    webhook: Webhook | None = None

    def applies_to(self, customer_id: str) -> bool:
        return self.customers is None or customer_id in self.customers

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for each inconsistency of the rule on its own (keys relative to the rule)."""
        found: list[tuple[str, str]] = []
        if not self.thresholds:
            found.append(("thresholds", "at least one threshold is required"))
        for index in range(1, len(self.thresholds)):
            if self.thresholds[index] <= self.thresholds[index - 1]:
                found.append(
                    (
                        f"thresholds[{index}]",
                        f"{self.thresholds[index]:f} must be greater than {self.thresholds[index - 1]:f}: thresholds increase",
                    )
                )
        if self.kind is RuleKind.ENTITLEMENT_PCT:
            if self.entitlement is None:
                found.append(("entitlement", "required for kind entitlement_pct (the quantity that is 100 %)"))
            elif self.entitlement <= 0:
                found.append(("entitlement", f"{self.entitlement:f} must be greater than 0"))
        elif self.entitlement is not None:
            found.append(("entitlement", f"only used with kind entitlement_pct, not {self.kind}"))
        if self.kind is RuleKind.CREDIT_REMAINING:
            if self.meter:
                found.append(("meter", "kind credit_remaining watches the credit every meter's cost burns: leave meter out"))
            if self.thresholds and self.thresholds[0] < 0:
                found.append(("thresholds[0]", f"{self.thresholds[0]:f} must be 0 or more: remaining credit is never below 0"))
        return found


@dataclass(frozen=True)
class AlertSettings:
    """The ``alerts`` section: rules, the topics the evaluator writes, and how long a minute stays open."""

    rules: tuple[AlertRule, ...] = ()
    #: The alerts topic (None: ``<events topic>-alerts``).
    topic: str | None = None
    #: The compacted state topic (None: ``<events topic>-alerts-state``).
    state_topic: str | None = None
    open_minutes: timedelta = DEFAULT_OPEN_MINUTES
    retention: timedelta = DEFAULT_RETENTION
    #: Emit cost records (the costs topic): the period states of every meter a customer's card prices are
    #: kept, and each changed group's cost so far is written (the configuration: on when ``rating`` exists).
    costs: bool = False


# --- the running value of one (customer, meter, group, period) -----------------------------------


def _dec(text: Any) -> Decimal | None:
    return None if text is None or text == "" else Decimal(str(text))


@dataclass
class GroupValue:
    """One group's period so far: folded segments, the open ``on_time`` minutes' last versions, the final and its corrections."""

    aggregation: str
    total: Decimal = ZERO  # sum or count so far (every segment, open ones included)
    events: int = 0
    high: Decimal | None = None
    low: Decimal | None = None
    distinct: set[str] = field(default_factory=set)
    latest_ms: int | None = None
    latest_value: Decimal | None = None
    #: minute_ms -> (version, its additive value, its event count) of the minute's on_time segment.
    open: dict[int, tuple[int, Decimal, int]] = field(default_factory=dict)
    final: Decimal | None = None
    #: (sign, value, stream time it was applied at: the instant it counts for on an invoice).
    corrections: list[tuple[int, Decimal, int]] = field(default_factory=list)

    def _additive(self, record: Mapping[str, Any]) -> Decimal:
        if self.aggregation == "count":
            return Decimal(int(record.get("event_count") or 0))
        return _dec(record.get("sum")) or _dec(record.get("value")) or ZERO

    def _monotone(self, record: Mapping[str, Any]) -> None:
        high, low = _dec(record.get("max")), _dec(record.get("min"))
        if high is not None:
            self.high = high if self.high is None else max(self.high, high)
        if low is not None:
            self.low = low if self.low is None else min(self.low, low)
        self.distinct.update(record.get("distinct_values") or [])
        latest = record.get("latest_ms")
        if latest is not None and (self.latest_ms is None or int(latest) >= self.latest_ms):
            self.latest_ms, self.latest_value = int(latest), _dec(record.get("latest_value"))

    def add_segment(self, record: Mapping[str, Any], open_minutes_ms: int) -> bool:
        """Apply an aggregate record; False when it is an older version than one already applied (ignored)."""
        minute, version = int(record["minute_ms"]), int(record["version"])
        additive, count = self._additive(record), int(record.get("event_count") or 0)
        if record.get("segment") == "on_time":
            previous = self.open.get(minute)
            if previous is not None:
                if version < previous[0]:
                    return False
                self.total -= previous[1]
                self.events -= previous[2]
            self.open[minute] = (version, additive, count)
            newest = max(self.open)
            for old in [m for m in self.open if m < newest - open_minutes_ms]:
                del self.open[old]
        self.total += additive
        self.events += count
        self._monotone(record)
        return True

    def set_final(self, record: Mapping[str, Any]) -> None:
        self.final = _dec(record.get("value")) or ZERO
        self.open.clear()

    def add_correction(self, record: Mapping[str, Any], at_ms: int = 0) -> None:
        self.corrections.append((-1 if record.get("retract") else 1, _dec(record.get("value")) or ZERO, at_ms))

    def value(self) -> Decimal | None:
        """The period's value: the final with its corrections, else the running value (None: not combinable)."""
        if self.final is not None:
            from udfs.invoicing import corrected_total

            return corrected_total(self.aggregation, self.final, ((s, v) for s, v, _ in self.corrections))
        match self.aggregation:
            case "sum" | "count":
                return self.total
            case "max":
                return self.high
            case "min":
                return self.low
            case "unique_count":
                return Decimal(len(self.distinct))
            case _:
                return self.latest_value

    def to_json(self) -> dict[str, Any]:
        return {
            "aggregation": self.aggregation,
            "total": str(self.total),
            "events": self.events,
            "high": None if self.high is None else str(self.high),
            "low": None if self.low is None else str(self.low),
            "distinct": sorted(self.distinct),
            "latest_ms": self.latest_ms,
            "latest_value": None if self.latest_value is None else str(self.latest_value),
            "open": [[m, v, str(a), n] for m, (v, a, n) in sorted(self.open.items())],
            "final": None if self.final is None else str(self.final),
            "corrections": [[s, str(v), at] for s, v, at in self.corrections],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GroupValue:
        return cls(
            aggregation=d["aggregation"],
            total=Decimal(d["total"]),
            events=int(d["events"]),
            high=_dec(d["high"]),
            low=_dec(d["low"]),
            distinct=set(d["distinct"]),
            latest_ms=d["latest_ms"],
            latest_value=_dec(d["latest_value"]),
            open={int(m): (int(v), Decimal(a), int(n)) for m, v, a, n in d["open"]},
            final=_dec(d["final"]),
            corrections=[(int(c[0]), Decimal(c[1]), int(c[2]) if len(c) > 2 else 0) for c in d["corrections"]],
        )


def combine(aggregation: str, values: Iterable[Decimal]) -> Decimal | None:
    """Groups' values as the meter's one value: summed for ``sum``/``count``/``unique_count``, else the extreme."""
    items = list(values)
    if not items:
        return None
    if aggregation == "min":
        return min(items)
    if aggregation in ("max", "latest"):
        return max(items)
    return sum(items, ZERO)


# --- the state machine of one (rule, customer, meter, period) ------------------------------------


@dataclass
class RuleState:
    """Per threshold its status, which one announced an alarm, the last value and how many corrections were sent."""

    statuses: dict[str, Status] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)
    value: Decimal | None = None
    final: bool = False
    corrected: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "statuses": {k: str(v) for k, v in self.statuses.items()},
            "announced": sorted(self.announced),
            "value": None if self.value is None else str(self.value),
            "final": self.final,
            "corrected": self.corrected,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RuleState:
        return cls(
            {k: Status(v) for k, v in d["statuses"].items()},
            set(d["announced"]),
            _dec(d["value"]),
            bool(d["final"]),
            int(d["corrected"]),
        )


@dataclass(frozen=True)
class Transition:
    """What one evaluation decided: an alert of ``kind`` for ``threshold``, with the value before and now."""

    kind: AlertKind
    threshold: Decimal
    value: Decimal
    previous: Decimal | None
    sequence: int = 0
    reason: str = ""


def _key(threshold: Decimal) -> str:
    return f"{threshold.normalize():f}"


def step(
    thresholds: tuple[Decimal, ...], state: RuleState, value: Decimal, *, final: bool, period_over: bool = False
) -> list[Transition]:
    """Move ``state`` to ``value`` (the period's value now) and return the alerts to send (module docstring).

    ``final``: the period is final with this value (a final's arrival, or a correction after it);
    ``period_over``: a newer period started, so every alarm of this one resolves.
    """
    previous, was_final = state.value, state.final
    state.value = value
    out: list[Transition] = []
    if was_final:  # after the final, a change is a correction, never an alarm
        before = {t for t in thresholds if previous is not None and previous >= t}
        now = {t for t in thresholds if value >= t}
        if before != now:
            state.corrected += 1
            out.append(Transition(AlertKind.CORRECTED, max(before ^ now), value, previous, state.corrected))
        return out
    crossed = [t for t in thresholds if value >= t and state.statuses.get(_key(t), Status.OK) is Status.OK]
    if crossed and not period_over:
        for t in crossed:
            state.statuses[_key(t)] = Status.ALARM
        state.announced.add(_key(crossed[-1]))
        out.append(Transition(AlertKind.TRIGGERED, crossed[-1], value, previous))
    back = [t for t in thresholds if state.statuses.get(_key(t)) is Status.ALARM and (period_over or value < t)]
    for t in back:
        state.statuses[_key(t)] = Status.RESOLVED
    announced = [t for t in back if _key(t) in state.announced]
    if announced:
        reason = "new_period" if period_over else "under_threshold"
        out.append(Transition(AlertKind.RESOLVED, announced[-1], value, previous, reason=reason))
    state.final = final
    return out


def step_falling(
    thresholds: tuple[Decimal, ...], state: RuleState, value: Decimal, *, period_over: bool = False
) -> list[Transition]:
    """:func:`step` for a value that alarms as it falls to a threshold (``value <= threshold``), never final.

    The machine runs on the negated value and thresholds (``state.value`` holds the negated value);
    the transitions come back with the true ones, so several crossed at once name the lowest.
    """
    negated = tuple(-t for t in reversed(thresholds))
    out = step(negated, state, -value, final=False, period_over=period_over)
    return [replace(t, threshold=-t.threshold, value=-t.value, previous=None if t.previous is None else -t.previous) for t in out]


def alert_id(
    rule: str, threshold: Decimal, customer_id: str, meter: str, period_start_ms: int, kind: str, sequence: int = 0
) -> str:
    """The alert's deterministic id: the same alert always has the same id (receivers dedupe by it)."""
    text = "\x1f".join([rule, _key(threshold), customer_id, meter, str(period_start_ms), kind, str(sequence)])
    return "alr_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def entitlement_of(rules: Iterable[AlertRule], customer_id: str, meter: str) -> Decimal | None:
    """The customer's limit for ``meter``: the smallest entitlement of the ``entitlement_pct`` rules that watch it."""
    found = [
        r.entitlement
        for r in rules
        if r.kind is RuleKind.ENTITLEMENT_PCT and r.meter == meter and r.applies_to(customer_id) and r.entitlement is not None
    ]
    return min(found, default=None)


# --- the value a rule watches --------------------------------------------------------------------


def quantize(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-PLACES), ROUND_HALF_EVEN, _CONTEXT)


def rule_value(
    rule: AlertRule,
    customer_id: str,
    aggregation: str,
    groups: Mapping[str, GroupValue],
    period: Period,
    as_of_ms: int,
    rating: Rating,
    *,
    final: bool,
) -> Decimal | None:
    """The value ``rule`` compares with its thresholds, for a customer's period of its meter (None: cannot be valued)."""
    values = {name: v for name, g in groups.items() if (v := g.value()) is not None}
    if rule.kind in (RuleKind.USAGE, RuleKind.ENTITLEMENT_PCT):
        combined = combine(aggregation, values.values())
        if combined is None:
            return None
        if rule.kind is RuleKind.USAGE:
            return combined
        assert rule.entitlement is not None
        return quantize(_CONTEXT.divide(_CONTEXT.multiply(combined, Decimal(100)), rule.entitlement))
    spend = ZERO
    at = from_epoch_millis(as_of_ms)
    for quantity in values.values():
        if rule.kind is RuleKind.PROJECTED_SPEND:
            quantity = project(aggregation, quantity, period, at, final=final).quantity
        try:
            charge = rating.price(customer_id, rule.meter, period, quantity)
        except NoRateInEffect:
            return None
        if charge is None:
            return None
        spend += charge.rounded
    return spend


def iso_ms(millis: int) -> str:
    return rfc3339_millis(from_epoch_millis(millis))
