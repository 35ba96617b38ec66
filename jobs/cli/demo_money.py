"""The demo's alerts and prepaid credits: evaluate the alerts while the job runs, grant credit, check both.

The alert service is the one `metering alerts run` runs (jobs/alerts/service.py), on a thread of
the demo, started before the job so it evaluates the job's output as it streams; once the job
ended it stops when it has read every partition to its end. The grants are recorded with the code
of `metering credits grant` and the balances read with that of `metering credits show`; the checks
against the recomputation are in jobs/demo_money.py.
"""

from __future__ import annotations

import getpass
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from jobs.demo_money import (
    Key,
    alert_bounds,
    alert_problems,
    balance_problems,
    credit_alert_problems,
    demo_grant_rows,
    demo_grants,
    expected_balances,
    stream_cost_problems,
)
from udfs.credits import Balance, Rollover
from udfs.periods import from_epoch_millis

if TYPE_CHECKING:
    from clickhouse.client import Storage
    from jobs.alerts.service import AlertService, RunStats
    from jobs.config import Config
    from jobs.demo import Comparison


@dataclass
class AlertsRun:
    """`metering alerts run` on a thread: ``finish`` lets it read to the end of the job's output, then stops it."""

    service: AlertService
    thread: threading.Thread
    error: list[BaseException] = field(default_factory=list)

    @classmethod
    def start(cls, config: Config) -> AlertsRun:
        from jobs.alerts.service import AlertService

        service = AlertService(config)
        run = cls(service, threading.Thread(target=lambda: None, name="demo-alerts", daemon=True))

        def evaluate() -> None:
            try:
                service.run()
            except BaseException as exc:  # reported by finish
                run.error.append(exc)

        run.thread = threading.Thread(target=evaluate, name="demo-alerts", daemon=True)
        run.thread.start()
        return run

    def finish(self, timeout_s: float = 600.0) -> RunStats:
        """Stop once every input partition is read to its end; raises what the service raised, or on a timeout."""
        self.service.until_idle = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.service.stop.set()
            self.thread.join(30)
            raise TimeoutError(f"the alerts evaluator did not catch up with the job's output in {timeout_s:.0f} s")
        if self.error:
            raise RuntimeError(f"the alerts evaluator failed: {self.error[0]!r}") from self.error[0]
        return self.service.stats


def check_alerts(
    result: Comparison,
    config: Config,
    finals: Mapping[Key, tuple[Decimal, int]],
    corrections: Mapping[Key, tuple[Decimal, int]],
    loaded: Sequence[Mapping[str, Any]],
    events: int,
) -> list[dict[str, Any]]:
    """Check the alerts on the topic and in the table against the recomputed totals; returns those on the topic."""
    from jobs.alerts.service import read_alerts

    on_topic = read_alerts(config)
    bounds = alert_bounds(finals, corrections, config)
    problems = alert_problems(bounds, config.alerts.rules, on_topic, {str(r["id"]) for r in loaded})
    problems += credit_alert_problems(finals, config, demo_grants(config, demo_grant_rows(events)), on_topic)
    kinds: dict[str, int] = defaultdict(int)
    for alert in on_topic:
        kinds[alert["kind"]] += 1
    result.check(
        "alerts",
        not problems and bool(on_topic),
        f"{len(on_topic)} alerts ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}) for "
        f"{len(bounds)} (rule, customer, period)s and the granted customers' credit, each once on the topic and loaded; "
        f"{len(problems)} disagree with the recomputed totals" + (f" (e.g. {problems[0]})" if problems else ""),
    )
    return on_topic


def render_alerts(alerts: Sequence[Mapping[str, Any]]) -> str:
    """Per customer, rule and period: the thresholds announced (with the value then) and resolved."""
    rows: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    order = {"alert.triggered": 0, "alert.corrected": 1, "alert.resolved": 2}

    def judged(a: Mapping[str, Any]) -> tuple[Any, ...]:  # a batch's alerts share emitted_ms: order them by the value's way
        value = Decimal(a["value"]) * (-1 if a.get("rule_kind") == "credit_remaining" else 1)
        return (a["customer_id"], a["rule"], a["period_start_ms"], a["emitted_ms"], order[a["kind"]], value)

    for a in sorted(alerts, key=judged):
        value = f" ({Decimal(a['value']).normalize():f})" if a["kind"] != "alert.resolved" else ""
        word = {"alert.triggered": "", "alert.resolved": "resolved ", "alert.corrected": "corrected "}[a["kind"]]
        rows[(a["customer_id"], a["rule"], int(a["period_start_ms"]))].append(f"{word}{a['threshold']}{value}")
    lines = ["\n   alerts fired (metering alerts run, evaluated while the job's output streamed):"]
    for (customer, rule, start), items in sorted(rows.items()):
        lines.append(f"     {customer:<12} {rule:<10} {from_epoch_millis(start):%Y-%m-%d}  " + ", ".join(items))
    return "\n".join(lines)


def check_stream_costs(result: Comparison, config: Config, storage: Storage, expected: Any) -> None:
    """The cost the alert evaluator rated in the stream (the ``costs`` table, newest per key) against the recomputation."""
    columns = ("customer_id", "meter", "group_key", "period_start_ms", "quantity", "cost", "is_final")
    sql = (
        "SELECT customer_id, meter, group_key, toUnixTimestamp64Milli(period_start), toString(quantity), toString(cost), "
        "is_final FROM costs FINAL"
    )
    rows = [dict(zip(columns, values, strict=True)) for values in storage.query_rows(sql)]
    problems = stream_cost_problems(rows, expected.finals, expected.corrections, config)
    result.check(
        "stream-rated cost",
        bool(rows) and not problems,
        f"{len(rows)} (customer, meter, group, period) costs rated by metering alerts run (table costs); "
        f"{len(problems)} differ from the recomputed totals priced by the rate cards"
        + (f" (e.g. {problems[0]})" if problems else ""),
    )


def record_grants(config: Config, events: int, now: datetime) -> list[str]:
    """Record the demo's grants as `metering credits grant` does: checked against the ledger topic and published to it
    (the loader copies them into the ledger table, the alert evaluator reads them there); returns one line per grant."""
    from clickhouse.credits import grant
    from jobs.cli.credits import publisher, recorded_ledger

    out = []
    recorded = recorded_ledger(config)
    publish = publisher(config)
    for g in demo_grant_rows(events):
        row = grant(
            config.rating,
            recorded,
            customer=g["customer"],
            amount=g["amount"],
            priority=int(g["priority"]),
            effective_at=datetime.fromisoformat(g["effective_at"].replace("Z", "+00:00")),
            expires_at=None if g["expires_at"] is None else datetime.fromisoformat(g["expires_at"].replace("Z", "+00:00")),
            rollover=Rollover.CARRY,
            reason=g["reason"],
            recorded_by=f"local:{getpass.getuser()}",
            now=now,
            grant_id=g["grant_id"],
            publish=publish,
        )
        recorded.append(row)
        ends = f", expires {g['expires_at']}" if g["expires_at"] else ""
        out.append(
            f"   credit grant {row.grant_id}: {row.customer} {row.amount} {row.currency}, priority {row.priority}, "
            f"effective {g['effective_at']}{ends} ({g['reason']})"
        )
    return out


def check_balances(result: Comparison, config: Config, storage: Storage, expected: Any, events: int, now: datetime) -> str:
    """Read each granted customer's balance (as `metering credits show`) and check it against the recomputation."""
    from clickhouse.credits import balance_of
    from clickhouse.queries import StorageReader

    reader = StorageReader(storage)
    grants = demo_grants(config, demo_grant_rows(events))
    read: dict[str, Balance] = {}
    for customer in sorted({g.customer for g in grants}):
        _, balance, _ = balance_of(reader, config.rating, config.billing.policy_for(customer).cycle, customer, now)
        read[customer] = balance
    want = expected_balances(expected.finals, expected.corrections, config, grants, now)
    problems = balance_problems(want, read)
    result.check(
        "credit balances",
        not problems,
        f"{len(grants)} grants to {len(read)} customers burned by their invoices; "
        f"{len(problems)} figures differ from the recomputed invoices burned the same way"
        + (f" (e.g. {problems[0]})" if problems else ""),
    )
    return render_balances(read, config)


def render_balances(balances: Mapping[str, Balance], config: Config) -> str:
    lines = ["\n   prepaid credit (metering credits show, as of now):"]
    for customer, b in sorted(balances.items()):
        policy = config.credits.policy_for(customer)
        state = "over" if b.over(policy) else "within"
        lines.append(
            f"     {customer:<12} granted {b.granted:>10,.2f}  consumed {b.consumed_settled:>10,.2f} settled + "
            f"{b.consumed_pending:,.2f} pending  remaining {b.remaining:>10,.2f}  expired {b.expired:,.2f}  "
            f"uncovered {b.uncovered_settled + b.uncovered_pending:,.2f}  ({policy.exhaustion}: {state})"
        )
    return "\n".join(lines)
