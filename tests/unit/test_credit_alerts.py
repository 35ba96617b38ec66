"""``credit_remaining`` alerts: the falling state machine, the evaluator over ledger rows and usage, restore."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, LEDGER, Evaluator
from schemas.records import ALERT, CREDIT_LEDGER
from tests.unit.test_alert_evaluator import P0, P1, P2, aggregate, correction, final, run
from udfs.alerting import CREDIT_METER, AlertRule, AlertSettings, RuleKind, RuleState, alert_id, step_falling
from udfs.pricing import Money, PerUnit, RateCard, RatePlan, RateVersion, Rating

D = Decimal
CARD = RateCard("api_calls", (RateVersion(datetime(2026, 1, 1, tzinfo=UTC), PerUnit(D("0.01"))),))
RATING = Rating({"std": RatePlan(Money(), {"api_calls": CARD})}, "std")
LOW = AlertRule("low-credit", RuleKind.CREDIT_REMAINING, "", (D("0"), D("20.00"), D("50.00")))
SETTINGS = AlertSettings((LOW,))
FEB_20 = P0 - 9 * 86_400_000


def ledger(
    grant_id: str, amount: str = "0", action: str = "grant", at_ms: int = FEB_20, customer: str = "acme"
) -> dict[str, Any]:
    record = {
        "customer_id": customer,
        "grant_id": grant_id,
        "action": action,
        "amount": amount,
        "currency": "USD",
        "priority": 10,
        "effective_at_ms": at_ms,
        "expires_at_ms": None,
        "rollover": "carry",
        "recorded_at_ms": at_ms,
        "recorded_by": "local:ops",
        "reason": "test",
    }
    assert tuple(record) == CREDIT_LEDGER.names
    return record


def brief(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(a["kind"], a["threshold"], a["value"], a["reason"]) for a in alerts]


def test_step_falling_alarms_at_or_below_and_names_the_lowest_crossed() -> None:
    thresholds, state = (D(0), D(20), D(50)), RuleState()
    assert step_falling(thresholds, state, D(70)) == []
    [down] = step_falling(thresholds, state, D(50))  # at the threshold: an alarm (<=)
    assert (down.kind, down.threshold, down.value, down.previous) == ("alert.triggered", D(50), D(50), D(70))
    [down] = step_falling(thresholds, state, D(0))  # 20 and 0 at once: one alert, the lowest
    assert (down.kind, down.threshold, down.value) == ("alert.triggered", D(0), D(0))
    [up] = step_falling(thresholds, state, D(30))  # back above 0 and 20: resolved, for the lowest that announced
    assert (up.kind, up.threshold, up.value, up.reason) == ("alert.resolved", D(0), D(30), "under_threshold")
    assert step_falling(thresholds, state, D(0)) == []  # resolved is terminal within the period
    [over] = step_falling(thresholds, state, D(0), period_over=True)
    assert (over.kind, over.threshold, over.reason) == ("alert.resolved", D(50), "new_period")


def test_the_worked_example_of_docs_pricing() -> None:
    """docs/pricing.md, "Alerts", "A worked example: credit remaining": the table's alerts, step by step."""
    evaluator = Evaluator(SETTINGS, RATING)
    steps = [
        [(AGGREGATE, aggregate(P0, P0 + 10_000, 3_000))],  # 30.00 of cost, no credit yet
        [(LEDGER, ledger("g1", "100.00"))],
        [(AGGREGATE, aggregate(P0, P0 + 20_000, 6_000))],
        [(AGGREGATE, aggregate(P0 + 60_000, P0 + 70_000, 4_500))],
        [(LEDGER, ledger("g2", "50.00", at_ms=P0))],
        [(AGGREGATE, aggregate(P1, P1 + 10_000, 1_000, period=(P1, P2)))],
    ]
    got = [brief(run(evaluator, step)) for step in steps]
    assert got == [
        [],
        [],
        [("alert.triggered", "50.00", "40.00", "")],
        [("alert.triggered", "0", "0.00", "")],
        [("alert.resolved", "0", "45.00", "under_threshold")],
        [("alert.resolved", "50.00", "45.00", "new_period"), ("alert.triggered", "50.00", "35.00", "")],
    ]
    balance = evaluator.credit_balance("acme")
    assert balance is not None and (balance.remaining, balance.consumed_pending) == (D("35.00"), D("115.00"))


def test_alerts_carry_the_true_values_a_period_and_a_deterministic_id() -> None:
    evaluator = Evaluator(SETTINGS, RATING)
    alerts = run(evaluator, [(LEDGER, ledger("g1", "30.00")), (AGGREGATE, aggregate(P0, P0 + 10_000, 1_500))])
    [alert] = alerts
    assert tuple(alert) == ALERT.names
    assert (alert["rule_kind"], alert["meter"], alert["threshold"], alert["value"], alert["previous_value"]) == (
        "credit_remaining",
        "",
        "20.00",
        "15.00",
        None,  # the grant came before any usage, at the stream's time 0, when it had not taken effect
    )
    assert (alert["period_start_ms"], alert["period_end_ms"], alert["final"]) == (P0, P1, False)
    assert alert["id"] == alert_id("low-credit", D("20.00"), "acme", CREDIT_METER, P0, "alert.triggered")


def test_no_grant_no_alarm_and_other_customers_apart() -> None:
    evaluator = Evaluator(SETTINGS, RATING)
    records = [
        (AGGREGATE, aggregate(P0, P0 + 10_000, 1_000_000)),  # 10,000.00 of cost, no credit
        (LEDGER, ledger("late", "500.00", at_ms=P2)),  # takes effect after the stream's time: not seen yet
        (LEDGER, ledger("b1", "70.00", customer="bob")),
    ]
    assert run(evaluator, records) == []
    bob = run(evaluator, [(AGGREGATE, aggregate(P0, P0 + 10_000, 5_000, customer="bob"))])
    assert [(a["customer_id"], a["threshold"], a["value"]) for a in bob] == [("bob", "20.00", "20.00")]


def test_ledger_rows_in_any_order_and_published_twice_give_the_same_alerts() -> None:
    rows = [
        (LEDGER, ledger("g1", "40.00")),
        (LEDGER, ledger("g2", "30.00")),
        (LEDGER, ledger("g2", action="void", at_ms=P0 - 86_400_000)),  # voided before March: pays nothing of it
        (LEDGER, ledger("g1", "40.00")),  # published twice (a retried command): counted once
    ]
    usage = [
        (AGGREGATE, aggregate(P0, P0 + 10_000, 1_000)),
        (AGGREGATE, aggregate(P0 + 60_000, P0 + 70_000, 1_500)),
        (FINAL, final(2_500)),
        (CORRECTION, correction(2_000)),
    ]
    outcomes = set()
    for order in itertools.permutations(rows):
        evaluator = Evaluator(SETTINGS, RATING)
        alerts = run(evaluator, [*order, *usage])
        outcomes.add(tuple((a["id"], a["value"]) for a in alerts))
    assert len(outcomes) == 1
    # g2 is void before March: 40.00 - 10.00, then - 25.00; the final's watermark starts April (March's alarms
    # resolve, April's fire anew), and the correction's 20.00 is April's cost: nothing left
    assert [value for _, value in next(iter(outcomes))] == ["30.00", "15.00", "15.00", "15.00", "0.00"]


def test_a_correction_burns_in_the_billing_period_it_is_applied_in() -> None:
    evaluator = Evaluator(SETTINGS, RATING)
    run(evaluator, [(LEDGER, ledger("g1", "100.00")), (AGGREGATE, aggregate(P0, P0 + 10_000, 2_000)), (FINAL, final(2_000))])
    run(evaluator, [(AGGREGATE, aggregate(P1, P1 + 10_000, 1_000, period=(P1, P2)))])  # April has begun
    alerts = run(evaluator, [(CORRECTION, correction(3_500))])  # a late 3,500 calls of March, on April's invoice
    assert brief(alerts) == [("alert.triggered", "50.00", "35.00", "")]  # 100 - 20 (March) - 10 - 35 (April)
    balance = evaluator.credit_balance("acme")
    assert balance is not None and (balance.consumed_settled, balance.consumed_pending) == (D("20.00"), D("45.00"))


def test_state_restored_from_its_records_gives_the_same_alerts() -> None:
    records = [
        (LEDGER, ledger("g1", "100.00")),
        *[(AGGREGATE, aggregate(P0 + 60_000 * n, P0 + 60_000 * n + 10_000, 1_000)) for n in range(12)],
        (LEDGER, ledger("g2", "60.00", at_ms=P0)),
        (AGGREGATE, aggregate(P1, P1 + 10_000, 500, period=(P1, P2))),
    ]
    expected = run(Evaluator(SETTINGS, RATING), records)
    assert len(expected) >= 4
    for cut in (1, 6, 13):
        first = Evaluator(SETTINGS, RATING)
        got = run(first, records[:cut])
        second = Evaluator(SETTINGS, RATING)
        for key, value in first.take_changed():
            second.restore(key, value)
        got += run(second, records[cut:])
        assert [(a["id"], a["value"]) for a in got] == [(a["id"], a["value"]) for a in expected], cut


def test_a_forgotten_period_keeps_the_credit_it_consumed() -> None:
    from datetime import timedelta

    settings = AlertSettings((LOW,), retention=timedelta(days=30))
    evaluator = Evaluator(settings, RATING)
    run(evaluator, [(LEDGER, ledger("g1", "100.00")), (AGGREGATE, aggregate(P0, P0 + 10_000, 4_000)), (FINAL, final(4_000))])
    evaluator.take_changed()
    later = (P2, P2 + 31 * 86_400_000)  # May: March ended more than 30 days before it
    run(evaluator, [(AGGREGATE, aggregate(P2, P2 + 10_000, 100, period=later))])
    changed = dict(evaluator.take_changed())
    assert changed[f'period:["acme","api_calls",{P0}]'] is None
    balance = evaluator.credit_balance("acme")
    assert balance is not None and balance.remaining == D("59.00")  # March's 40.00 stays consumed, May's 1.00 pending


def test_other_customers_records_interleaved_anyhow_change_no_credit_alert() -> None:
    mine = [
        (LEDGER, ledger("g1", "40.00")),
        (AGGREGATE, aggregate(P0, P0 + 10_000, 2_500)),
        (FINAL, final(2_500)),
        (CORRECTION, correction(1_000)),
    ]
    theirs = [(AGGREGATE, aggregate(P1, P1 + 10_000, 7, period=(P1, P2), customer="bob"))]  # bob is in April already
    alone = run(Evaluator(SETTINGS, RATING), mine)
    for cut in range(len(mine) + 1):
        mixed = run(Evaluator(SETTINGS, RATING), [*mine[:cut], *theirs, *mine[cut:]])
        assert [(a["id"], a["value"], a["as_of_ms"]) for a in mixed] == [(a["id"], a["value"], a["as_of_ms"]) for a in alone]
