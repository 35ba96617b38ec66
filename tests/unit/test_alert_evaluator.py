"""The evaluator over the job's record shapes (jobs/alerts/evaluator.py): values, finals, corrections, restore."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, Evaluator
from schemas.records import AGGREGATE as AGGREGATE_RECORD
from schemas.records import ALERT
from schemas.records import CORRECTION as CORRECTION_RECORD
from schemas.records import FINAL as FINAL_RECORD
from udfs.alerting import AlertRule, AlertSettings, RuleKind
from udfs.pricing import Rating

P0, P1, P2 = 1_772_323_200_000, 1_775_001_600_000, 1_777_593_600_000  # 2026-03-01, 04-01, 05-01 UTC
RULE = AlertRule("calls", RuleKind.USAGE, "api_calls", (Decimal(10), Decimal(20), Decimal(30)))
SETTINGS = AlertSettings((RULE,))


def _value(total: int) -> dict[str, Any]:
    return {
        "value": str(total),
        "event_count": total,
        "sum": str(total),
        "max": None,
        "min": None,
        "distinct_values": [],
        "latest_ms": None,
        "latest_value": None,
    }


def _key(customer: str = "acme", group: str = "") -> dict[str, Any]:
    return {"customer_id": customer, "meter": "api_calls", "group_key": group, "aggregation": "count"}


def aggregate(minute: int, version: int, total: int, period: tuple[int, int] = (P0, P1), **key: str) -> dict[str, Any]:
    record = {
        **_key(**key),
        "minute_ms": minute,
        "day_start_ms": P0,
        "period_start_ms": period[0],
        "period_end_ms": period[1],
        "segment": "on_time",
        "version": version,
        **_value(total),
    }
    assert tuple(record) == AGGREGATE_RECORD.names
    return record


def final(total: int, **key: str) -> dict[str, Any]:
    record = {**_key(**key), "period_start_ms": P0, "period_end_ms": P1, "finalized_at_watermark_ms": P1 + 1, **_value(total)}
    assert tuple(record) == FINAL_RECORD.names
    return record


def correction(total: int, retract: bool = False) -> dict[str, Any]:
    record = {
        **_key(),
        "period_start_ms": P0,
        "period_end_ms": P1,
        "minute_ms": P0,
        "retract": retract,
        "event_id": "e1",
        **_value(total),
    }
    assert tuple(record) == CORRECTION_RECORD.names
    return record


def run(evaluator: Evaluator, records: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind, record in records:
        out += evaluator.apply(kind, record, arrival_ms=0, now_ms=5)
    return out


def brief(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(a["kind"], a["threshold"], a["value"]) for a in alerts]


def test_versions_replace_groups_add_and_a_final_then_corrections() -> None:
    evaluator = Evaluator(SETTINGS, Rating())
    alerts = run(
        evaluator,
        [
            (AGGREGATE, aggregate(P0, P0 + 10_000, 6)),
            (AGGREGATE, aggregate(P0, P0 + 20_000, 9)),  # replaces 6: 9, nothing crossed
            (AGGREGATE, aggregate(P0, P0 + 20_000, 4, group="eu")),  # another group: 13
            (AGGREGATE, aggregate(P0 + 60_000, P0 + 70_000, 18)),  # 31: crosses 20 and 30 at once
            (FINAL, final(27)),  # the default group's final: 27 + 4, and eu still running
            (FINAL, final(4, group="eu")),  # every group final: 31, no change
            (CORRECTION, correction(5, retract=True)),  # 26: under 30 after the final
            (CORRECTION, correction(1)),  # 27: nothing crossed
        ],
    )
    assert brief(alerts) == [
        ("alert.triggered", "10", "13"),
        ("alert.triggered", "30", "31"),
        ("alert.corrected", "30", "26"),
    ]
    assert all(tuple(a) == ALERT.names for a in alerts)
    assert alerts[2]["final"] is True and alerts[2]["sequence"] == 1 and alerts[2]["previous_value"] == "31"
    assert len({a["id"] for a in alerts}) == 3


def test_a_new_period_resolves_the_old_ones_alarms_and_other_customers_are_apart() -> None:
    evaluator = Evaluator(SETTINGS, Rating())
    alerts = run(
        evaluator,
        [
            (AGGREGATE, aggregate(P0, P0 + 10_000, 12)),
            (AGGREGATE, aggregate(P0, P0 + 10_000, 50, customer="bob")),
            (AGGREGATE, aggregate(P1, P1 + 10_000, 1, period=(P1, P2))),
        ],
    )
    assert [(a["kind"], a["customer_id"], a["reason"]) for a in alerts] == [
        ("alert.triggered", "acme", ""),
        ("alert.triggered", "bob", ""),
        ("alert.resolved", "acme", "new_period"),
    ]


def test_state_restored_from_its_records_gives_the_same_alerts() -> None:
    records = [(AGGREGATE, aggregate(P0 + 60_000 * n, P0 + 60_000 * n + 10_000, 3)) for n in range(12)]
    whole = Evaluator(SETTINGS, Rating())
    expected = run(whole, records)
    first = Evaluator(SETTINGS, Rating())
    got = run(first, records[:5])
    saved = first.take_changed()
    second = Evaluator(SETTINGS, Rating())
    for key, value in saved:
        second.restore(key, value)
    got += run(second, records[5:])
    assert [a["id"] for a in got] == [a["id"] for a in expected] and len(expected) == 3


def test_records_of_meters_no_rule_watches_change_nothing() -> None:
    evaluator = Evaluator(SETTINGS, Rating())
    other = {**aggregate(P0, P0 + 10_000, 99), "meter": "tokens"}
    assert run(evaluator, [(AGGREGATE, other)]) == [] and evaluator.take_changed() == []


def test_the_worked_example_of_docs_pricing() -> None:
    """docs/pricing.md, "Alerts", "A worked example": the table's alerts, step by step."""
    from datetime import UTC, datetime

    from udfs.pricing import Money, PerUnit, RateCard, RatePlan, RateVersion

    card = RateCard("api_calls", (RateVersion(datetime(2026, 1, 1, tzinfo=UTC), PerUnit(Decimal("0.001"))),))
    rating = Rating({"std": RatePlan(Money(), {"api_calls": card})}, "std")
    quota = AlertRule(
        "quota", RuleKind.ENTITLEMENT_PCT, "api_calls", (Decimal(50), Decimal(80), Decimal(100)), None, Decimal(100000)
    )
    spend = AlertRule("spend", RuleKind.SPEND, "api_calls", (Decimal("100.00"),))
    evaluator = Evaluator(AlertSettings((quota, spend)), rating)
    late = {**aggregate(P0 + 60_000, 1, -10_000), "segment": "late:e-void"}  # voids of 10,000 calls, as one segment
    steps = [
        [(AGGREGATE, aggregate(P0, P0 + 10_000, 45_000))],
        [(AGGREGATE, aggregate(P0, P0 + 20_000, 85_000))],
        [(AGGREGATE, late)],
        [(AGGREGATE, aggregate(P0 + 120_000, P0 + 130_000, 45_000))],
        [(FINAL, final(120_000))],
        [(CORRECTION, correction(30_000, retract=True))],
    ]
    got = [[(a["rule"], a["kind"], a["threshold"], a["value"]) for a in run(evaluator, step)] for step in steps]
    assert got == [
        [],
        [("quota", "alert.triggered", "80", "85.000000000")],
        [("quota", "alert.resolved", "80", "75.000000000")],
        [("quota", "alert.triggered", "100", "120.000000000"), ("spend", "alert.triggered", "100.00", "120.00")],
        [],
        [("quota", "alert.corrected", "100", "90.000000000"), ("spend", "alert.corrected", "100.00", "90.00")],
    ]


def test_a_period_long_past_is_forgotten_and_its_late_records_ignored() -> None:
    from datetime import timedelta

    settings = AlertSettings((RULE,), retention=timedelta(days=30))
    evaluator = Evaluator(settings, Rating())
    run(evaluator, [(AGGREGATE, aggregate(P0, P0 + 10_000, 12))])
    first = evaluator.take_changed()
    assert [k for k, _ in first] == [f'period:["acme","api_calls",{P0}]', "stream"]
    later = (P2, P2 + 31 * 86_400_000)  # May: March ended more than 30 days before it
    run(evaluator, [(AGGREGATE, aggregate(P2, P2 + 10_000, 1, period=later))])
    changed = dict(evaluator.take_changed())
    assert changed[f'period:["acme","api_calls",{P0}]'] is None and evaluator.stats.expired == 1
    assert run(evaluator, [(CORRECTION, correction(500))]) == []  # March is forgotten: no alert
    restored = Evaluator(settings, Rating())
    for key, value in [*first, *changed.items()]:
        restored.restore(key, value)
    assert list(restored.periods) == [f'period:["acme","api_calls",{P2}]'] and restored.stream_ms == evaluator.stream_ms
    assert run(restored, [(CORRECTION, correction(500))]) == []


def test_a_minutes_versions_read_out_of_the_jobs_order_count_twice_so_the_job_keys_its_outputs_by_customer() -> None:
    """The evaluator needs a group's ``on_time`` versions in the order the job wrote them, and the job keeps it.

    A minute is folded (its version forgotten) once a minute an hour newer has arrived; a later
    version of it read after that is added whole, on top of the earlier one. Unkeyed, Kafka's sticky
    partitioner spread one group's records over the partitions, so a reader taking one partition
    ahead of another counted minutes twice (the alerts e2e test saw thresholds fire that the usage
    never reached). Keyed by customer, a customer's records stay in one partition, in order.
    """
    from unittest.mock import MagicMock

    from infra.settings import PROJECT_ROOT
    from jobs.config import load_config
    from jobs.flink.metering_job import FINALIZED_SINKS, RunOptions, build

    day = 86_400_000
    written = [aggregate(P0, P0 + 10_000, 5), aggregate(P0, P0 + 20_000, 8), aggregate(P0 + day, P0 + day + 10_000, 3)]
    in_order = Evaluator(SETTINGS, Rating())
    run(in_order, [(AGGREGATE, r) for r in written])
    ahead = Evaluator(SETTINGS, Rating())  # the next day's record from another partition first
    run(ahead, [(AGGREGATE, r) for r in (written[0], written[2], written[1])])
    assert [p.groups[""].value() for p in (*in_order.periods.values(), *ahead.periods.values())] == [11, 16]

    t_env = MagicMock()
    build(load_config(PROJECT_ROOT / "config" / "metering.example.yaml", env={}), RunOptions(), MagicMock(), t_env)
    tables = {c.args[0].split()[3]: c.args[0] for c in t_env.execute_sql.call_args_list if "'connector' = " in c.args[0]}
    inserts = [c.args[0] for c in t_env.create_statement_set.return_value.add_insert_sql.call_args_list]
    for _, name in FINALIZED_SINKS.values():
        table = f"{name.replace('-', '_')}_sink"
        assert "'key.fields' = 'customer_id'" in tables[table] and "'key.format' = 'raw'" in tables[table]
        assert any(i.startswith(f"INSERT INTO {table} SELECT customer_id, record FROM finalized") for i in inserts)
