"""The evaluator's state and step, without Kafka: records in, alert events and changed state out.

:class:`Evaluator` keeps, per (customer, meter, period), the running value of each group
(:class:`udfs.alerting.GroupValue`) and each rule's :class:`udfs.alerting.RuleState`. ``apply``
takes one record of the job's aggregates, finals or corrections topic (schemas/records.py) and
returns the alerts it causes; ``take_changed`` returns the state records to write (the compacted
state topic, keyed by period) since the last call. ``restore`` reads them back. The service
(jobs/alerts/service.py) writes both in one Kafka transaction with its consumer offsets, so what
fired and the values it was judged on never disagree with what was read.

Deterministic: the same records in the same order give the same alerts (ids, values, ``as_of``);
only ``lag_ms`` and ``emitted_ms`` read the clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from udfs.alerting import (
    AlertRule,
    AlertSettings,
    GroupValue,
    RuleState,
    Transition,
    alert_id,
    rule_value,
    step,
)
from udfs.periods import Period, from_epoch_millis
from udfs.pricing import Rating

#: Kinds of input record: which topic it came from.
AGGREGATE, FINAL, CORRECTION = "aggregate", "final", "correction"
#: State-topic keys of period states start with this (others belong to the webhook dead letters).
PERIOD_PREFIX = "period:"
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


@dataclass
class EvaluatorStats:
    records: int = 0
    ignored: int = 0
    alerts: int = 0
    expired: int = 0


class Evaluator:
    """The alert rules of ``settings`` over the job's records; ``rating`` prices the spend rules."""

    def __init__(self, settings: AlertSettings, rating: Rating) -> None:
        self.settings = settings
        self.rating = rating
        self.open_minutes_ms = int(settings.open_minutes.total_seconds() * 1000)
        self.retention_ms = int(settings.retention.total_seconds() * 1000)
        #: The stream's time: the newest ``as_of`` of any period. A period ending ``retention`` before it is forgotten.
        self.stream_ms = 0
        self._swept_hour = 0
        self.periods: dict[str, PeriodState] = {}
        #: (customer, meter) -> its newest period start seen (a newer one resolves the older's alarms).
        self.newest: dict[tuple[str, str], int] = {}
        self.changed: set[str] = set()
        self.stats = EvaluatorStats()

    def watches(self, customer_id: str, meter: str) -> list[AlertRule]:
        return [r for r in self.settings.rules if r.meter == meter and r.applies_to(customer_id)]

    # -- state

    def restore(self, key: str, value: bytes | None) -> None:
        """One state-topic record (the latest per key wins; None: a tombstone)."""
        if key == STREAM_KEY and value is not None:
            self.stream_ms = int(value)
            return
        if not key.startswith(PERIOD_PREFIX):
            return
        if value is None:
            self.periods.pop(key, None)
            return
        state = PeriodState.from_json(json.loads(value))
        self.periods[key] = state
        pair = (state.customer_id, state.meter)
        self.newest[pair] = max(self.newest.get(pair, state.period_start_ms), state.period_start_ms)

    def take_changed(self) -> list[tuple[str, bytes | None]]:
        """The state records changed since the last call (None: a tombstone), to write with the alerts they go with."""
        out: list[tuple[str, bytes | None]] = []
        if self.stream_ms // HOUR_MS > self._swept_hour:  # at most once per hour of stream time
            self._swept_hour = self.stream_ms // HOUR_MS
            for key in [k for k, p in self.periods.items() if self._expired(p.period_end_ms)]:
                del self.periods[key]
                self.changed.discard(key)
                out.append((key, None))
                self.stats.expired += 1
        out += [(key, json.dumps(self.periods[key].to_json(), separators=(",", ":")).encode()) for key in sorted(self.changed)]
        if self.changed or out:
            out.append((STREAM_KEY, str(self.stream_ms).encode()))
        self.changed.clear()
        return out

    def _expired(self, period_end_ms: int) -> bool:
        return period_end_ms <= self.stream_ms - self.retention_ms

    # -- records

    def apply(self, kind: str, record: Mapping[str, Any], *, arrival_ms: int, now_ms: int) -> list[dict[str, Any]]:
        """The alerts ``record`` (of ``kind``: aggregate, final or correction) causes, as alert records."""
        self.stats.records += 1
        customer, meter = str(record["customer_id"]), str(record["meter"])
        rules = self.watches(customer, meter)
        if not rules:
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
        group = state.groups.get(str(record["group_key"]))
        if group is None:
            group = state.groups[str(record["group_key"])] = GroupValue(str(record["aggregation"]))
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
            group.add_correction(record)
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        self.changed.add(key)
        self.stream_ms = max(self.stream_ms, state.as_of_ms)
        alerts = self._evaluate(state, rules, arrival_ms, now_ms)
        pair = (customer, meter)
        if start > self.newest.get(pair, start - 1):
            previous = self.newest.get(pair)
            self.newest[pair] = start
            if previous is not None:
                alerts += self._period_over(customer, meter, start, rules, arrival_ms, now_ms)
        self.stats.alerts += len(alerts)
        return alerts

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
