"""The evaluator's cost records (``alerts.costs``): one per changed group per transaction, final over running,
corrections applied, the same after a restore, and priced as the read side prices the same totals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse.billing import _cost_row
from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, Evaluator
from schemas.records import COST
from tests.unit.test_alert_evaluator import P0, P1, aggregate, correction, final, run
from udfs.alerting import AlertSettings
from udfs.periods import from_epoch_millis, rfc3339_millis
from udfs.pricing import Graduated, Money, RateCard, RatePlan, RateVersion, Rating, Tier

D = Decimal
#: 100 calls free, then 0.01 each up to 1,000, then 0.005: the projection is priced through the tiers.
CARD = RateCard(
    "api_calls",
    (
        RateVersion(
            datetime(2026, 1, 1, tzinfo=UTC), Graduated((Tier(D(100), D(0)), Tier(D(1000), D("0.01")), Tier(None, D("0.005"))))
        ),
    ),
)
RATING = Rating({"std": RatePlan(Money(), {"api_calls": CARD})}, "std")
COSTS = AlertSettings(costs=True)
DAY = 86_400_000


def brief(records: list[dict[str, Any]]) -> list[tuple[str, str, bool, str | None]]:
    return [(r["group_key"], r["quantity"], r["is_final"], r["cost"]) for r in records]


def test_one_record_per_changed_group_per_transaction_and_none_when_nothing_changed() -> None:
    evaluator = Evaluator(COSTS, RATING)
    run(
        evaluator,
        [
            (AGGREGATE, aggregate(P0 + DAY, 1, 300)),
            (AGGREGATE, aggregate(P0 + DAY, 2, 400)),  # a newer version of the same minute: replaces 300
            (AGGREGATE, aggregate(P0 + DAY, 1, 50, group="eu")),
        ],
    )
    records = evaluator.take_costs(now_ms=7)
    assert all(tuple(r) == COST.names for r in records)
    assert brief(records) == [("", "400", False, "3.00"), ("eu", "50", False, "0.00")]
    assert records[0]["currency"] == "USD" and records[0]["as_of_ms"] == P0 + DAY + 60_000 and records[0]["emitted_ms"] == 7
    # the same version again, and an older one: nothing changed, nothing emitted
    run(evaluator, [(AGGREGATE, aggregate(P0 + DAY, 2, 400)), (AGGREGATE, aggregate(P0 + DAY, 1, 300))])
    assert evaluator.take_costs(now_ms=8) == []
    # one group changes: only its record
    run(evaluator, [(AGGREGATE, aggregate(P0 + 2 * DAY, 1, 100, group="eu"))])
    assert brief(evaluator.take_costs(now_ms=9)) == [("eu", "150", False, "0.50")]


def test_the_final_replaces_the_running_value_and_corrections_apply() -> None:
    evaluator = Evaluator(COSTS, RATING)
    run(evaluator, [(AGGREGATE, aggregate(P0 + DAY, 1, 600))])
    assert brief(evaluator.take_costs(now_ms=1)) == [("", "600", False, "5.00")]
    run(evaluator, [(FINAL, final(1200))])
    (record,) = evaluator.take_costs(now_ms=2)
    assert brief([record]) == [("", "1200", True, "10.00")]
    assert record["projected_quantity"] == "1200" and record["projected_cost"] == "10.00" and record["as_of_ms"] == P1
    run(evaluator, [(CORRECTION, correction(200))])
    assert brief(evaluator.take_costs(now_ms=3)) == [("", "1400", True, "11.00")]
    run(evaluator, [(CORRECTION, correction(200, retract=True))])
    assert brief(evaluator.take_costs(now_ms=4)) == [("", "1200", True, "10.00")]


def test_a_restored_evaluator_emits_the_same_records() -> None:
    first = [(AGGREGATE, aggregate(P0 + DAY, 1, 300)), (AGGREGATE, aggregate(P0 + DAY, 1, 20, group="eu"))]
    then = [
        (AGGREGATE, aggregate(P0 + DAY, 2, 350)),
        (AGGREGATE, aggregate(P0 + DAY, 1, 20, group="eu")),  # unchanged: no record, before or after the restore
        (FINAL, final(900)),
        (CORRECTION, correction(5)),
    ]
    steady = Evaluator(COSTS, RATING)
    run(steady, first)
    steady.take_costs(now_ms=1)
    state = steady.take_changed()
    restored = Evaluator(COSTS, RATING)
    for key, value in state:
        restored.restore(key, value)
    outputs = []
    for evaluator in (steady, restored):
        per_transaction = []
        for record in then:
            run(evaluator, [record])
            per_transaction.append(evaluator.take_costs(now_ms=2))
        outputs.append(per_transaction)
    assert outputs[0] == outputs[1]
    assert [brief(t) for t in outputs[0]] == [
        [("", "350", False, "2.50")],
        [],
        [("", "900", True, "8.00")],
        [("", "905", True, "8.05")],
    ]


def test_the_records_price_as_the_read_side_prices_the_same_totals() -> None:
    evaluator = Evaluator(COSTS, RATING)
    run(evaluator, [(AGGREGATE, aggregate(P0 + 3 * DAY, 1, 900)), (AGGREGATE, aggregate(P0 + DAY, 1, 40, group="eu"))])
    for record in evaluator.take_costs(now_ms=1):
        row = {
            "customer_id": record["customer_id"],
            "meter": record["meter"],
            "group_key": record["group_key"],
            "aggregation": record["aggregation"],
            "period_start": rfc3339_millis(from_epoch_millis(record["period_start_ms"])),
            "period_end": rfc3339_millis(from_epoch_millis(record["period_end_ms"])),
            "total": record["quantity"],
            "status": "final" if record["is_final"] else "provisional",
            "as_of_minute": None,
        }
        read = _cost_row(RATING, row, from_epoch_millis(record["as_of_ms"]))
        assert read["projection"] == "linear"
        for name in ("quantity", "currency", "cost", "cost_exact", "projected_quantity", "projected_cost"):
            assert Decimal(read[name]) == Decimal(record[name]) if name != "currency" else read[name] == record[name], name


def test_off_it_keeps_no_period_a_rule_does_not_watch_and_emits_nothing() -> None:
    evaluator = Evaluator(AlertSettings(), RATING)
    run(evaluator, [(AGGREGATE, aggregate(P0 + DAY, 1, 300))])
    assert evaluator.take_costs(now_ms=1) == [] and evaluator.periods == {}
