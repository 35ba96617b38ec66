"""The evaluator's state and step, without Kafka: records in, alert events and changed state out.

:class:`Evaluator` keeps, per (customer, meter, period), the running value of each group
(:class:`udfs.alerting.GroupValue`) and each rule's :class:`udfs.alerting.RuleState`. ``apply``
takes one record of the job's aggregates, finals or corrections topic (schemas/records.py) and
returns the alerts it causes; ``take_changed`` returns the state records to write (the compacted
state topic, keyed by period) since the last call. ``restore`` reads them back. The service
(jobs/alerts/service.py) writes both in one Kafka transaction with its consumer offsets, so what
fired and the values it was judged on never disagree with what was read.

``credit_remaining`` rules: a ledger record (the credit ledger topic, schemas/records.py
``CREDIT_LEDGER``) goes into its customer's :class:`CreditState` (on the state topic too). For a
customer such a rule watches, the period states of every meter the customer's plan prices are kept
(not only of meters a rule names); after each record of the customer, the balance is
:func:`udfs.credits.burn` of its grants over the cost lines of those period states
(:func:`udfs.credits.period_cost_lines`, the store's rule) as of the customer's stream time (the
newest ``as_of`` of its own periods: other customers' partitions do not move it), and each rule
steps with :func:`udfs.alerting.step_falling`.

Cost records (``settings.costs``): the period states of every meter a customer's card prices are
kept (as for a credit customer), and ``take_costs`` returns, per group a record changed since the
last call (its value, finality or its period's ``as_of``), one cost record (schemas/records.py
``COST``): its quantity priced by the card with its projection at the period's ``as_of``
(:func:`udfs.projection.cost_so_far`, the read side's rule). Whether a group changed is judged
from the state before and after each record, so a restored evaluator emits what one that never
stopped would.

Deterministic: the same records in the same order give the same alerts (ids, values, ``as_of``);
only ``lag_ms`` and ``emitted_ms`` read the clock.

Why one module: the period states and the credit states are one state (one stream time, one state
topic, one ``take_changed`` per transaction, and a credit balance is read from the period states
as each record changes them); apart, what a restore must bring back together would be split.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from udfs.alerting import (
    CREDIT_METER,
    AlertRule,
    AlertSettings,
    GroupValue,
    RuleKind,
    RuleState,
    Status,
    Transition,
    alert_id,
    rule_value,
    step,
    step_falling,
)
from udfs.credits import Balance, CostLine, customer_balance, ledger_entries, period_cost_lines
from udfs.invoicing import CorrectionRecord, FinalTotal
from udfs.periods import BillingCycle, Period, as_utc, billing_period, from_epoch_millis
from udfs.pricing import Rating
from udfs.projection import cost_so_far

#: Kinds of input record: which topic it came from.
AGGREGATE, FINAL, CORRECTION, LEDGER = "aggregate", "final", "correction", "ledger"
#: State-topic keys of period states start with this (others: credit states, the webhook dead letters).
PERIOD_PREFIX = "period:"
#: State-topic keys of customers' credit states (their ledger rows, the credit rules' states).
CREDIT_PREFIX = "credit:"
#: The state-topic key of the stream's time (the newest ``as_of`` seen), which expiry is judged by.
STREAM_KEY = "stream"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass
class PeriodState:
    """One customer's meter in one period: its groups' values and each rule's state."""

    customer_id: str
    meter: str
    aggregation: str
    period_start_ms: int
    period_end_ms: int
    as_of_ms: int = 0
    groups: dict[str, GroupValue] = field(default_factory=dict)
    rules: dict[str, RuleState] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return state_key(self.customer_id, self.meter, self.period_start_ms)

    @property
    def final(self) -> bool:
        return bool(self.groups) and all(g.final is not None for g in self.groups.values())

    @property
    def period(self) -> Period:
        return Period(from_epoch_millis(self.period_start_ms), from_epoch_millis(self.period_end_ms))

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "meter": self.meter,
            "aggregation": self.aggregation,
            "period_start_ms": self.period_start_ms,
            "period_end_ms": self.period_end_ms,
            "as_of_ms": self.as_of_ms,
            "groups": {k: g.to_json() for k, g in self.groups.items()},
            "rules": {k: r.to_json() for k, r in self.rules.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PeriodState:
        return cls(
            d["customer_id"],
            d["meter"],
            d["aggregation"],
            int(d["period_start_ms"]),
            int(d["period_end_ms"]),
            int(d["as_of_ms"]),
            {k: GroupValue.from_json(g) for k, g in d["groups"].items()},
            {k: RuleState.from_json(r) for k, r in d["rules"].items()},
        )


def state_key(customer_id: str, meter: str, period_start_ms: int) -> str:
    return f"{PERIOD_PREFIX}{json.dumps([customer_id, meter, period_start_ms], separators=(',', ':'))}"


def credit_key(customer_id: str) -> str:
    return f"{CREDIT_PREFIX}{json.dumps([customer_id], separators=(',', ':'))}"


@dataclass
class CreditState:
    """One customer's ledger rows (by action and grant id), the ``credit_remaining`` rules' states in the billing
    period ``period_start_ms``..``period_end_ms``, and the cost lines of periods whose state has expired."""

    customer_id: str
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)
    period_start_ms: int = 0
    period_end_ms: int = 0
    rules: dict[str, RuleState] = field(default_factory=dict)
    #: The customer's stream time at its last evaluation (kept when its period states expire).
    as_of_ms: int = 0
    #: label -> (at_ms, amount, settled): lines kept when their periods' states were forgotten (retention).
    kept_lines: dict[str, tuple[int, str, bool]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "ledger": self.ledger,
            "period_start_ms": self.period_start_ms,
            "period_end_ms": self.period_end_ms,
            "rules": {k: r.to_json() for k, r in self.rules.items()},
            "as_of_ms": self.as_of_ms,
            "kept_lines": {k: list(v) for k, v in self.kept_lines.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CreditState:
        return cls(
            d["customer_id"],
            dict(d["ledger"]),
            int(d["period_start_ms"]),
            int(d["period_end_ms"]),
            {k: RuleState.from_json(r) for k, r in d["rules"].items()},
            int(d.get("as_of_ms", 0)),
            {k: (int(at), str(amount), bool(settled)) for k, (at, amount, settled) in d.get("kept_lines", {}).items()},
        )


def _millis(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = from_epoch_millis(0)


@dataclass
class EvaluatorStats:
    records: int = 0
    ignored: int = 0
    alerts: int = 0
    expired: int = 0
    costs: int = 0


class Evaluator:
    """The alert rules of ``settings`` over the job's records; ``rating`` prices the spend rules."""

    def __init__(self, settings: AlertSettings, rating: Rating, cycle_of: Callable[[str], BillingCycle] | None = None) -> None:
        self.settings = settings
        self.rating = rating
        #: The customer's billing cycle (``billing``): the periods a credit rule's alarms last for.
        self.cycle_of = cycle_of or (lambda _customer: BillingCycle())
        self.open_minutes_ms = int(settings.open_minutes.total_seconds() * 1000)
        self.retention_ms = int(settings.retention.total_seconds() * 1000)
        #: The stream's time: the newest ``as_of`` of any period. A period ending ``retention`` before it is forgotten.
        self.stream_ms = 0
        self._swept_hour = 0
        self.periods: dict[str, PeriodState] = {}
        self.credits: dict[str, CreditState] = {}
        #: customer -> the keys of its period states (the cost lines of its credit).
        self.by_customer: dict[str, set[str]] = {}
        #: (customer, meter) -> its newest period start seen (a newer one resolves the older's alarms).
        self.newest: dict[tuple[str, str], int] = {}
        self.changed: set[str] = set()
        #: (period state key, group key) of the groups whose cost changed since the last ``take_costs``.
        self.costs_changed: set[tuple[str, str]] = set()
        self.stats = EvaluatorStats()

    def watches(self, customer_id: str, meter: str) -> list[AlertRule]:
        return [r for r in self.settings.rules if r.meter == meter and r.applies_to(customer_id)]

    def credit_rules(self, customer_id: str) -> list[AlertRule]:
        return [r for r in self.settings.rules if r.kind is RuleKind.CREDIT_REMAINING and r.applies_to(customer_id)]

    def _keeps(self, customer_id: str, meter: str) -> bool:
        """Whether the meter's cost is needed: cost records are on, or its cost burns a watched credit (the customer
        has a credit rule), and the customer's plan prices it."""
        wanted = self.settings.costs or bool(self.credit_rules(customer_id))
        return wanted and self.rating.card_for(customer_id, meter) is not None

    # -- state

    def restore(self, key: str, value: bytes | None) -> None:
        """One state-topic record (the latest per key wins; None: a tombstone)."""
        if key == STREAM_KEY and value is not None:
            self.stream_ms = int(value)
            return
        if key.startswith(CREDIT_PREFIX):
            if value is None:
                self.credits.pop(key, None)
            else:
                self.credits[key] = CreditState.from_json(json.loads(value))
            return
        if not key.startswith(PERIOD_PREFIX):
            return
        if value is None:
            dropped = self.periods.pop(key, None)
            if dropped is not None:
                self.by_customer.get(dropped.customer_id, set()).discard(key)
            return
        state = PeriodState.from_json(json.loads(value))
        self.periods[key] = state
        self.by_customer.setdefault(state.customer_id, set()).add(key)
        pair = (state.customer_id, state.meter)
        self.newest[pair] = max(self.newest.get(pair, state.period_start_ms), state.period_start_ms)

    def take_changed(self) -> list[tuple[str, bytes | None]]:
        """The state records changed since the last call (None: a tombstone), to write with the alerts they go with."""
        out: list[tuple[str, bytes | None]] = []
        if self.stream_ms // HOUR_MS > self._swept_hour:  # at most once per hour of stream time
            self._swept_hour = self.stream_ms // HOUR_MS
            expired = [k for k, p in self.periods.items() if self._expired(p.period_end_ms)]
            self._keep_lines({self.periods[k].customer_id for k in expired})
            for key in expired:
                state = self.periods.pop(key)
                self.by_customer.get(state.customer_id, set()).discard(key)
                self.changed.discard(key)
                out.append((key, None))
                self.stats.expired += 1
        out += [(key, json.dumps(self._state(key).to_json(), separators=(",", ":")).encode()) for key in sorted(self.changed)]
        if self.changed or out:
            out.append((STREAM_KEY, str(self.stream_ms).encode()))
        self.changed.clear()
        return out

    def _state(self, key: str) -> PeriodState | CreditState:
        return self.credits[key] if key.startswith(CREDIT_PREFIX) else self.periods[key]

    def _expired(self, period_end_ms: int) -> bool:
        return period_end_ms <= self.stream_ms - self.retention_ms

    def _keep_lines(self, customers: set[str]) -> None:
        """Before a credit customer's expiring period states are removed, keep the cost lines of the billing periods
        that ended by then: the credit they consumed stays consumed."""
        for customer in sorted(customers):
            credit = self.credits.get(credit_key(customer))
            if credit is None:
                continue
            cutoff = self.stream_ms - self.retention_ms
            credit.as_of_ms = self.customer_ms(customer)
            for line in self._cost_lines(customer, from_epoch_millis(credit.as_of_ms)):
                if _millis(line.at) <= cutoff:
                    credit.kept_lines[line.label] = (_millis(line.at), f"{line.amount:f}", line.settled)
            self.changed.add(credit_key(customer))

    # -- records

    def apply(self, kind: str, record: Mapping[str, Any], *, arrival_ms: int, now_ms: int) -> list[dict[str, Any]]:
        """The alerts ``record`` (of ``kind``: aggregate, final, correction or ledger) causes, as alert records."""
        self.stats.records += 1
        if kind == LEDGER:
            return self._ledger(record, arrival_ms, now_ms)
        customer, meter = str(record["customer_id"]), str(record["meter"])
        rules = self.watches(customer, meter)
        if not rules and not self._keeps(customer, meter):
            self.stats.ignored += 1
            return []
        start, end = int(record["period_start_ms"]), int(record["period_end_ms"])
        key = state_key(customer, meter, start)
        if self._expired(end):  # forgotten (or about to be): it cannot fire again
            self.stats.ignored += 1
            return []
        state = self.periods.get(key)
        if state is None:
            state = self.periods[key] = PeriodState(customer, meter, str(record["aggregation"]), start, end)
            self.by_customer.setdefault(customer, set()).add(key)
        group = state.groups.get(str(record["group_key"]))
        if group is None:
            group = state.groups[str(record["group_key"])] = GroupValue(str(record["aggregation"]))
        before = (group.value(), group.final is not None, state.as_of_ms)
        if kind == AGGREGATE:
            if not group.add_segment(record, self.open_minutes_ms):
                self.stats.ignored += 1
                return []
            state.as_of_ms = max(state.as_of_ms, int(record["minute_ms"]) + MINUTE_MS)
        elif kind == FINAL:
            group.set_final(record)
            state.as_of_ms = max(state.as_of_ms, min(int(record["finalized_at_watermark_ms"]), end))
        elif kind == CORRECTION:
            if group.final is None:  # a correction of a period whose final this evaluator never saw: its running value
                group.set_final({"value": str(group.value() or 0)})
            group.add_correction(record, self.customer_ms(customer))
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        self.changed.add(key)
        if self.settings.costs and (group.value(), group.final is not None, state.as_of_ms) != before:
            self.costs_changed.add((key, str(record["group_key"])))
        self.stream_ms = max(self.stream_ms, state.as_of_ms)
        alerts = self._evaluate(state, rules, arrival_ms, now_ms)
        pair = (customer, meter)
        if start > self.newest.get(pair, start - 1):
            previous = self.newest.get(pair)
            self.newest[pair] = start
            if previous is not None:
                alerts += self._period_over(customer, meter, start, rules, arrival_ms, now_ms)
        alerts += self._credit(customer, arrival_ms, now_ms)
        self.stats.alerts += len(alerts)
        return alerts

    # -- cost records

    def take_costs(self, now_ms: int) -> list[dict[str, Any]]:
        """One cost record per group changed since the last call (module docstring), in key order; call it before
        ``take_changed``, which may forget expired periods."""
        out: list[dict[str, Any]] = []
        for key, group_key in sorted(self.costs_changed):
            state = self.periods.get(key)
            if state is not None and self.rating.card_for(state.customer_id, state.meter) is not None:
                record = cost_record(state, group_key, self.rating, now_ms)
                if record is not None:
                    out.append(record)
        self.costs_changed.clear()
        self.stats.costs += len(out)
        return out

    # -- credit

    def _ledger(self, record: Mapping[str, Any], arrival_ms: int, now_ms: int) -> list[dict[str, Any]]:
        """A ledger row: kept by (action, grant id), so a row published twice counts once; then the customer's credit.

        Kept for every customer (a few rows each), so a rule added later finds the grants made before it."""
        customer = str(record["customer_id"])
        key = credit_key(customer)
        credit = self.credits.setdefault(key, CreditState(customer))
        credit.ledger[f"{record['action']}:{record['grant_id']}"] = dict(record)
        self.changed.add(key)
        alerts = self._credit(customer, arrival_ms, now_ms)
        self.stats.alerts += len(alerts)
        return alerts

    def _cost_lines(self, customer: str, now: datetime) -> list[CostLine]:
        """The customer's cost lines from its period states (:func:`udfs.credits.period_cost_lines`) and the kept ones."""
        finals: list[FinalTotal] = []
        running: list[FinalTotal] = []
        corrections: list[CorrectionRecord] = []
        for key in sorted(self.by_customer.get(customer, ())):
            state = self.periods[key]
            for name, group in sorted(state.groups.items()):
                if group.final is not None:
                    finals.append(FinalTotal(state.meter, name, state.aggregation, state.period, group.final))
                elif (value := group.value()) is not None:
                    running.append(FinalTotal(state.meter, name, state.aggregation, state.period, value))
                corrections += [
                    CorrectionRecord(state.meter, name, state.aggregation, state.period, sign, value, from_epoch_millis(at))
                    for sign, value, at in group.corrections
                ]
        lines = period_cost_lines(customer, finals, running, corrections, self.rating, self.cycle_of(customer), now)
        credit = self.credits.get(credit_key(customer))
        kept = credit.kept_lines if credit is not None else {}
        return [
            *(CostLine(label, from_epoch_millis(at), Decimal(amount), settled) for label, (at, amount, settled) in kept.items()),
            *(line for line in lines if line.label not in kept),
        ]

    def customer_ms(self, customer: str) -> int:
        """The customer's stream time: the newest ``as_of`` of its periods (its records' event time, so it does not
        depend on how the partitions of other customers interleave with its own)."""
        credit = self.credits.get(credit_key(customer))
        times = [self.periods[k].as_of_ms for k in self.by_customer.get(customer, ())]
        return max([credit.as_of_ms if credit is not None else 0, *times])

    def credit_balance(self, customer: str) -> Balance | None:
        """The customer's credit balance as of its stream time (None: no plan, so no currency, or no ledger row)."""
        name = self.rating.plan_of(customer)
        plan = self.rating.plans.get(name) if name is not None else None
        credit = self.credits.get(credit_key(customer))
        if plan is None or credit is None:
            return None
        now = from_epoch_millis(self.customer_ms(customer))
        grants, voids = ledger_entries(credit.ledger.values())
        lines = self._cost_lines(customer, now)
        return customer_balance(grants, voids, lines, self.cycle_of(customer), now, plan.money.currency)

    def _credit(self, customer: str, arrival_ms: int, now_ms: int) -> list[dict[str, Any]]:
        """Step the customer's ``credit_remaining`` rules to its balance now (a newer billing period first resolves
        the alarms of the one before)."""
        rules = self.credit_rules(customer)
        key = credit_key(customer)
        credit = self.credits.get(key)
        if not rules or credit is None:
            return []
        alerts: list[dict[str, Any]] = []
        credit.as_of_ms = self.customer_ms(customer)
        period = billing_period(from_epoch_millis(credit.as_of_ms), self.cycle_of(customer))
        start = _millis(period.start)
        if start > credit.period_start_ms:
            for rule in rules:
                state = credit.rules.get(rule.name)
                if state is not None and state.value is not None and Status.ALARM in state.statuses.values():
                    for t in step_falling(rule.thresholds, state, -state.value, period_over=True):
                        alerts.append(self._credit_alert(rule, credit, t, arrival_ms, now_ms))
            credit.period_start_ms, credit.period_end_ms, credit.rules = start, _millis(period.end), {}
            self.changed.add(key)
        balance = self.credit_balance(customer)
        if balance is None or balance.granted <= 0:  # no credit (yet): nothing to run out of
            return alerts
        for rule in rules:
            state = credit.rules.setdefault(rule.name, RuleState())
            if state.value is not None and -state.value == balance.remaining:
                continue
            for t in step_falling(rule.thresholds, state, balance.remaining):
                alerts.append(self._credit_alert(rule, credit, t, arrival_ms, now_ms))
            self.changed.add(key)
        return alerts

    def _credit_alert(self, rule: AlertRule, credit: CreditState, t: Transition, arrival_ms: int, now_ms: int) -> dict[str, Any]:
        start, customer = credit.period_start_ms, credit.customer_id
        return {
            "id": alert_id(rule.name, t.threshold, customer, CREDIT_METER, start, t.kind, t.sequence),
            "kind": str(t.kind),
            "rule": rule.name,
            "rule_kind": str(rule.kind),
            "customer_id": customer,
            "meter": "",
            "threshold": f"{t.threshold:f}",
            "value": f"{t.value:f}",
            "previous_value": None if t.previous is None else f"{t.previous:f}",
            "period_start_ms": start,
            "period_end_ms": credit.period_end_ms,
            "final": False,
            "sequence": t.sequence,
            "reason": t.reason,
            "as_of_ms": credit.as_of_ms,
            "lag_ms": max(0, now_ms - arrival_ms),
            "emitted_ms": now_ms,
        }

    def _evaluate(
        self, state: PeriodState, rules: list[AlertRule], arrival_ms: int, now_ms: int, *, period_over: bool = False
    ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        final = state.final
        for rule in rules:
            value = rule_value(
                rule, state.customer_id, state.aggregation, state.groups, state.period, state.as_of_ms, self.rating, final=final
            )
            if value is None:
                continue
            rule_state = state.rules.setdefault(rule.name, RuleState())
            for transition in step(rule.thresholds, rule_state, value, final=final, period_over=period_over):
                alerts.append(self._alert(rule, state, transition, arrival_ms, now_ms))
        return alerts

    def _period_over(
        self, customer: str, meter: str, newest: int, rules: list[AlertRule], arrival_ms: int, now_ms: int
    ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        for key, state in sorted(self.periods.items()):
            if state.customer_id != customer or state.meter != meter or state.period_start_ms >= newest or state.final:
                continue
            if any(s.value == "alarm" for r in state.rules.values() for s in r.statuses.values()):
                alerts += self._evaluate(state, rules, arrival_ms, now_ms, period_over=True)
                self.changed.add(key)
        return alerts

    @staticmethod
    def _alert(rule: AlertRule, state: PeriodState, t: Transition, arrival_ms: int, now_ms: int) -> dict[str, Any]:
        return {
            "id": alert_id(rule.name, t.threshold, state.customer_id, state.meter, state.period_start_ms, t.kind, t.sequence),
            "kind": str(t.kind),
            "rule": rule.name,
            "rule_kind": str(rule.kind),
            "customer_id": state.customer_id,
            "meter": state.meter,
            "threshold": f"{t.threshold:f}",
            "value": f"{t.value:f}",
            "previous_value": None if t.previous is None else f"{t.previous:f}",
            "period_start_ms": state.period_start_ms,
            "period_end_ms": state.period_end_ms,
            "final": state.final,
            "sequence": t.sequence,
            "reason": t.reason,
            "as_of_ms": state.as_of_ms,
            "lag_ms": max(0, now_ms - arrival_ms),
            "emitted_ms": now_ms,
        }


def cost_record(state: PeriodState, group_key: str, rating: Rating, now_ms: int) -> dict[str, Any] | None:
    """The cost record (schemas/records.py ``COST``) of one group of ``state`` now (None: it has no value)."""
    group = state.groups[group_key]
    quantity = group.value()
    if quantity is None:
        return None
    final = group.final is not None
    at = from_epoch_millis(state.as_of_ms)
    priced = cost_so_far(rating, state.customer_id, state.meter, state.aggregation, state.period, quantity, at, final=final)
    charge, projected = priced.charge, priced.projected
    return {
        "customer_id": state.customer_id,
        "meter": state.meter,
        "group_key": group_key,
        "aggregation": state.aggregation,
        "period_start_ms": state.period_start_ms,
        "period_end_ms": state.period_end_ms,
        "quantity": f"{quantity:f}",
        "currency": priced.currency,
        "cost": None if charge is None else f"{charge.rounded:f}",
        "cost_exact": None if charge is None else f"{charge.amount:f}",
        "projected_quantity": f"{priced.projection.quantity:f}",
        "projected_cost": None if projected is None else f"{projected.rounded:f}",
        "is_final": final,
        "as_of_ms": state.as_of_ms,
        "emitted_ms": now_ms,
    }
