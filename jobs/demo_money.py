"""The demo's money checks beyond the final cost: the alerts that fired and the prepaid credit balances.

Both are judged against the independent recomputation (jobs/demo.py's ``Expected``): the alerts
from the recomputed final totals, the balances from the recomputed totals invoiced and burned
through the demo's grants.

- **Alerts.** The demo's rules watch meters whose events cannot be amended, so their running
  values only grow: a threshold at or under the recomputed final must have been announced
  (by its own ``alert.triggered`` or a higher one's, several crossed at once giving one alert), none
  above it may trigger, a correction after the final may only report thresholds between the final
  and the corrected value, a resolution only a threshold that triggered. Which lower thresholds got
  their own alert depends on how the job's updates were batched, so it is not checked; the
  highest triggered is. Every alert must be on the alerts topic once and loaded.
- **Credits.** The grants of ``DEMO_GRANTS`` burn each billing period's invoice: the recomputed
  finals priced by the rate cards (udfs/invoicing.py, as the final cost check) and, on the
  invoice of the period the correction was loaded in, the recomputed corrections. ``burn`` of
  those must give the balance `metering credits show` reads from ClickHouse, exactly.
- **Stream-rated cost.** Every row of the ``costs`` table must be the recomputed final with its
  corrections, priced by the card.

Why one module: the demo's rules, grants and the checks that judge what they produce are one
contract with the recomputation (jobs/demo.py); apart, a rule's threshold and the check that
relies on it staying far from the recomputed values would drift.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse.credits import currency_of
from jobs.config import Config
from udfs.alerting import AlertRule, RuleKind
from udfs.credits import Balance, CostLine, Grant, Rollover, burn, period_cost_lines
from udfs.invoicing import CorrectionRecord, FinalTotal, corrected_total
from udfs.periods import billing_period, epoch_millis, from_epoch_millis, rfc3339_millis

#: (customer, meter, group, period start ms), as jobs/demo.py keys totals.
Key = tuple[str, str, str, int]
ZERO = Decimal(0)


def demo_alerts(events: int) -> dict[str, Any]:
    """The demo's alert rules (docs/pricing.md, "Alerts"), for a workload of ``events`` lines.

    The usage and spend rules watch meters no amendment changes (their events cannot be amended:
    a count and a maximum), so a value only grows and which thresholds must fire follows from the
    recomputed finals alone. ``credit-low`` watches the credit of the customers ``DEMO_GRANTS``
    grants: one runs out in its first period by far, the other keeps far more than the thresholds,
    so the most severe threshold each period reaches does not depend on the order of the records.
    The quota and the credit threshold scale with the workload, so a small run crosses them too.
    """
    return {
        "rules": [
            {
                "name": "api-quota",
                "kind": "entitlement_pct",
                "meter": "api_calls",
                "entitlement": str(max(1, events // 20)),
                "thresholds": ["25", "50", "100"],
            },
            {
                "name": "storage-spend",
                "kind": "spend",
                "meter": "storage_peak_bytes",
                "thresholds": ["100.00", "197.00", "250.00"],
            },
            {
                "name": "credit-low",
                "kind": "credit_remaining",
                "thresholds": ["0", f"{Decimal(2500) * Decimal(events) / 1_000_000:.2f}"],
                "customers": sorted({g["customer"] for g in DEMO_GRANTS}),
            },
        ]
    }


#: The demo's exhaustion policies (docs/pricing.md, "Exhaustion policy").
DEMO_CREDITS: dict[str, Any] = {
    "exhaustion": "overage",
    "customers": {"acme": {"exhaustion": "block"}, "globex": {"exhaustion": "grace_pct", "grace_pct": "10"}},
}

#: Prepayments made at the start of the contract (back-dated, so they cover the demo's periods), for
#: a workload of a million events (``demo_grant_rows`` scales them): acme's two grants run out (the
#: priority-5 one first), globex keeps credit.
DEMO_GRANTS: tuple[dict[str, Any], ...] = (
    {
        "grant_id": "demo-acme-trial",
        "customer": "acme",
        "amount": "500.00",
        "priority": 5,
        "effective_at": "2026-03-01T00:00:00Z",
        "expires_at": "2026-04-15T00:00:00Z",
        "reason": "trial credit",
    },
    {
        "grant_id": "demo-acme-prepaid",
        "customer": "acme",
        "amount": "10000.00",
        "priority": 10,
        "effective_at": "2026-03-01T00:00:00Z",
        "expires_at": None,
        "reason": "annual prepayment",
    },
    {
        "grant_id": "demo-globex-prepaid",
        "customer": "globex",
        "amount": "60000.00",
        "priority": 10,
        "effective_at": "2026-02-01T00:00:00Z",
        "expires_at": None,
        "reason": "annual prepayment",
    },
)


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def demo_grant_rows(events: int) -> list[dict[str, Any]]:
    """``DEMO_GRANTS`` with amounts scaled to a workload of ``events`` lines (cents, at least 1.00)."""
    scale = Decimal(events) / 1_000_000
    return [{**g, "amount": f"{max(Decimal(1), (Decimal(g['amount']) * scale)).quantize(Decimal('0.01'))}"} for g in DEMO_GRANTS]


def demo_grants(config: Config, rows: Sequence[Mapping[str, Any]]) -> list[Grant]:
    """Grant rows (``demo_grant_rows``) as the ledger's grants, in the currency of each customer's plan."""
    out = []
    for g in rows:
        currency, _ = currency_of(config.rating, g["customer"])
        effective = _time(g["effective_at"])
        assert effective is not None
        out.append(
            Grant(
                g["grant_id"],
                g["customer"],
                Decimal(g["amount"]),
                currency,
                effective,
                _time(g["expires_at"]),
                int(g["priority"]),
                Rollover.CARRY,
            )
        )
    return out


# --- alerts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertBounds:
    """One (rule, customer, period): the recomputed value at the final and after its corrections."""

    final: Decimal | None
    corrected: Decimal | None


def _rule_value(rule: AlertRule, config: Config, customer: str, start_ms: int, groups: Mapping[str, Decimal]) -> Decimal | None:
    """The value the rule judges, from recomputed group totals (groups summed: the demo's usage rules watch a count)."""
    if not groups:
        return None
    if rule.kind is RuleKind.SPEND:
        period = billing_period(from_epoch_millis(start_ms), config.billing.policy_for(customer).cycle)
        total = ZERO
        for quantity in groups.values():
            charge = config.rating.price(customer, rule.meter, period, quantity)
            if charge is None:
                return None
            total += charge.rounded
        return total
    quantity = sum(groups.values(), ZERO)
    if rule.kind is RuleKind.ENTITLEMENT_PCT:
        assert rule.entitlement is not None
        return quantity * 100 / rule.entitlement
    return quantity


def alert_bounds(
    finals: Mapping[Key, tuple[Decimal, int]], corrections: Mapping[Key, tuple[Decimal, int]], config: Config
) -> dict[tuple[str, str, int], AlertBounds]:
    """Per (rule, customer, period start ms) of the demo's rules: the recomputed value at the final and corrected."""
    out: dict[tuple[str, str, int], AlertBounds] = {}
    for rule in config.alerts.rules:
        if rule.kind not in (RuleKind.USAGE, RuleKind.ENTITLEMENT_PCT, RuleKind.SPEND):
            continue
        at_final: dict[tuple[str, int], dict[str, Decimal]] = defaultdict(dict)
        after: dict[tuple[str, int], dict[str, Decimal]] = defaultdict(dict)
        for (customer, meter, group, start), (value, _) in finals.items():
            if meter == rule.meter and rule.applies_to(customer):
                at_final[(customer, start)][group] = value
                after[(customer, start)][group] = value
        aggregation = next(str(m.aggregation) for m in config.meters if m.name == rule.meter)
        for (customer, meter, group, start), (value, _) in corrections.items():
            if meter == rule.meter and rule.applies_to(customer):
                base = after[(customer, start)].get(group, ZERO)
                after[(customer, start)][group] = corrected_total(aggregation, base, [(1, value)]) or base
        for customer, start in after:
            out[(rule.name, customer, start)] = AlertBounds(
                _rule_value(rule, config, customer, start, at_final.get((customer, start), {})),
                _rule_value(rule, config, customer, start, after[(customer, start)]),
            )
    return out


def alert_problems(
    bounds: Mapping[tuple[str, str, int], AlertBounds],
    rules: Sequence[AlertRule],
    on_topic: Sequence[Mapping[str, Any]],
    loaded_ids: Iterable[str],
) -> list[str]:
    """What is wrong with the alerts that fired (module docstring); empty when they agree with the recomputation."""
    problems: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    for alert in on_topic:
        counts[alert["id"]] += 1
    problems += [f"alert {i} is on the alerts topic {n} times" for i, n in sorted(counts.items()) if n > 1]
    missing = sorted(set(counts) - set(loaded_ids))
    problems += [f"alert {i} is on the topic but not in the alerts table" for i in missing[:3]]
    by_key: dict[tuple[str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for alert in on_topic:
        by_key[(alert["rule"], alert["customer_id"], int(alert["period_start_ms"]))].append(alert)
    for rule in rules:
        for (name, customer, start), limits in sorted(bounds.items()):
            if name != rule.name:
                continue
            alerts = by_key.pop((name, customer, start), [])
            where = f"{name} {customer} {rfc3339_millis(from_epoch_millis(start))}"
            final = limits.final if limits.final is not None else limits.corrected
            if final is None:
                continue
            due = [t for t in rule.thresholds if t <= final]
            triggered = [Decimal(a["threshold"]) for a in alerts if a["kind"] == "alert.triggered"]
            if max(triggered, default=None) != max(due, default=None):
                problems.append(f"{where}: highest triggered {max(triggered, default=None)}, expected {max(due, default=None)}")
            low, high = sorted((final, limits.corrected if limits.corrected is not None else final))
            for a in alerts:
                threshold = Decimal(a["threshold"])
                if a["kind"] == "alert.corrected" and not low < threshold <= high:
                    problems.append(f"{where}: alert.corrected for {threshold}, outside ({low}, {high}]")
                if a["kind"] == "alert.resolved" and threshold not in triggered:
                    problems.append(f"{where}: alert.resolved for {threshold}, which never triggered")
    checked = {name for name, _, _ in bounds}
    strays = sorted(k for k in by_key if k[0] in checked)
    problems += [f"{k}: alerts for a period the recomputation has no total of" for k in strays[:3]]
    return problems


# --- cost rated in the stream --------------------------------------------------------------------


def stream_cost_problems(
    rows: Sequence[Mapping[str, Any]],
    finals: Mapping[Key, tuple[Decimal, int]],
    corrections: Mapping[Key, tuple[Decimal, int]],
    config: Config,
) -> list[str]:
    """The evaluator's newest cost record per (customer, meter, group, period) against the recomputation.

    After the bounded run every period is final, and a final's stream cost counts its corrections:
    the quantity must be the recomputed final with the recomputed corrections applied (by the
    meter's aggregation), the cost that quantity priced by the customer's card. Keys whose
    corrections cannot be combined with a total (``unique_count``, ``latest``) are skipped.
    """
    aggregation = {m.name: str(m.aggregation) for m in config.meters}
    problems: list[str] = []
    seen: set[Key] = set()
    for row in rows:
        key: Key = (
            str(row["customer_id"]),
            str(row["meter"]),
            json.dumps(json.loads(str(row["group_key"]) or "{}"), sort_keys=True),
            int(row["period_start_ms"]),
        )
        seen.add(key)
        if not row["is_final"]:
            problems.append(f"{key}: still provisional after the bounded run")
            continue
        base = finals.get(key, (ZERO, 0))[0]
        extra = corrections.get(key)
        want = base if extra is None else corrected_total(aggregation[key[1]], base, [(1, extra[0])])
        if want is None:
            continue
        if Decimal(row["quantity"]) != want:
            problems.append(f"{key}: stream quantity {row['quantity']}, recomputed {want}")
            continue
        period = billing_period(from_epoch_millis(key[3]), config.billing.policy_for(key[0]).cycle)
        charge = config.rating.price(key[0], key[1], period, want)
        got = None if row["cost"] is None else Decimal(row["cost"])
        if (None if charge is None else charge.rounded) != got:
            problems.append(f"{key}: stream cost {got}, the recomputed quantity priced {charge.rounded if charge else None}")
    missing = sorted((set(finals) | set(corrections)) - seen)
    problems += [f"{k}: no cost record" for k in missing[:3]]
    return problems


# --- credits -------------------------------------------------------------------------------------


def _cost_lines(
    customer: str,
    finals: Mapping[Key, tuple[Decimal, int]],
    corrections: Mapping[Key, tuple[Decimal, int]],
    config: Config,
    now: datetime,
) -> list[CostLine]:
    """The customer's invoices as cost lines (udfs.credits.period_cost_lines, the store's rule): its recomputed finals
    priced per billing period, and the recomputed corrections on the invoice of the period holding ``now`` (loaded
    just before)."""
    aggregation = {m.name: str(m.aggregation) for m in config.meters}
    cycle = config.billing.policy_for(customer).cycle
    totals = [
        FinalTotal(meter, group, aggregation[meter], billing_period(from_epoch_millis(start), cycle), value)
        for (c, meter, group, start), (value, _) in finals.items()
        if c == customer
    ]
    records = [
        CorrectionRecord(meter, group, aggregation[meter], billing_period(from_epoch_millis(start), cycle), 1, value, now)
        for (c, meter, group, start), (value, _) in corrections.items()
        if c == customer
    ]
    return period_cost_lines(customer, totals, [], records, config.rating, cycle, now)


def credit_alert_problems(
    finals: Mapping[Key, tuple[Decimal, int]],
    config: Config,
    grants: Sequence[Grant],
    on_topic: Sequence[Mapping[str, Any]],
) -> list[str]:
    """For each ``credit_remaining`` rule, granted customer and billing period with usage: the most severe threshold
    announced must be the lowest at or above the credit the recomputation leaves at the period's end (the earlier
    periods' invoices settled, its own pending), or none when the credit stays above every threshold."""
    problems: list[str] = []
    for rule in config.alerts.rules:
        if rule.kind is not RuleKind.CREDIT_REMAINING:
            continue
        for customer in sorted({g.customer for g in grants if rule.applies_to(g.customer)}):
            cycle = config.billing.policy_for(customer).cycle
            own = [g for g in grants if g.customer == customer]
            invoices = _cost_lines(customer, finals, {}, config, datetime.max.replace(tzinfo=UTC))
            for index, invoice in enumerate(invoices):
                period = billing_period(datetime.fromisoformat(invoice.label.replace("Z", "+00:00")), cycle)
                lines = [replace(line, settled=i < index) for i, line in enumerate(invoices[: index + 1])]
                left = burn(own, [], lines, cycle, period.end - timedelta(milliseconds=1)).remaining
                due = min((t for t in rule.thresholds if t >= left), default=None)
                fired = [
                    Decimal(a["threshold"])
                    for a in on_topic
                    if a["rule"] == rule.name
                    and a["customer_id"] == customer
                    and int(a["period_start_ms"]) == epoch_millis(period.start)
                    and a["kind"] == "alert.triggered"
                ]
                if min(fired, default=None) != due:
                    where = f"{rule.name} {customer} {rfc3339_millis(period.start)}"
                    problems.append(
                        f"{where}: most severe triggered {min(fired, default=None)}, expected {due} (credit left {left})"
                    )
    return problems


def expected_balances(
    finals: Mapping[Key, tuple[Decimal, int]],
    corrections: Mapping[Key, tuple[Decimal, int]],
    config: Config,
    grants: Sequence[Grant],
    now: datetime,
) -> dict[str, Balance]:
    """Each granted customer's balance as of ``now``: the recomputed totals invoiced per billing period, burned.

    The corrections were all loaded by the demo's loader, just before ``now``: they are priced on
    the invoice of the billing period holding ``now``, pending.
    """
    out: dict[str, Balance] = {}
    for customer in sorted({g.customer for g in grants}):
        lines = _cost_lines(customer, finals, corrections, config, now)
        cycle = config.billing.policy_for(customer).cycle
        out[customer] = burn([g for g in grants if g.customer == customer], [], lines, cycle, now)
    return out


#: The amounts of a balance (udfs/credits.py ``Balance``'s decimal fields), each compared.
BALANCE_FIELDS = tuple(f.name for f in fields(Balance) if f.type in ("Decimal", Decimal))


def balance_problems(expected: Mapping[str, Balance], read: Mapping[str, Balance]) -> list[str]:
    """Each field of each customer's balance that differs between the recomputation and what ClickHouse gave."""
    problems = []
    for customer in sorted(set(expected) | set(read)):
        if customer not in read or customer not in expected:
            problems.append(f"{customer}: a balance on one side only")
            continue
        for name in BALANCE_FIELDS:
            want, got = getattr(expected[customer], name), getattr(read[customer], name)
            if want != got:
                problems.append(f"{customer} {name}: read {got}, expected {want}")
    return problems
