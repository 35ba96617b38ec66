"""The alert state machine (udfs/alerting.py): once-only triggers, resolutions, corrections after the final, running values."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from udfs.alerting import (
    AlertKind,
    AlertRule,
    GroupValue,
    RuleKind,
    RuleState,
    Status,
    Transition,
    alert_id,
    combine,
    rule_value,
    step,
)
from udfs.periods import Period, epoch_millis
from udfs.pricing import Money, PerUnit, RateCard, RatePlan, RateVersion, Rating

T = (Decimal(50), Decimal(80), Decimal(100))
MARCH = Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
HOUR_MS = 3_600_000


def kinds(transitions: list[Transition]) -> list[tuple[str, Decimal]]:
    return [(str(t.kind), t.threshold) for t in transitions]


def test_several_thresholds_crossed_at_once_give_one_alert_for_the_highest() -> None:
    state = RuleState()
    assert step(T, state, Decimal(10), final=False) == []
    assert kinds(step(T, state, Decimal(85), final=False)) == [("alert.triggered", Decimal(80))]
    assert state.statuses == {"50": Status.ALARM, "80": Status.ALARM}
    assert step(T, state, Decimal(90), final=False) == []  # still above: nothing new
    assert kinds(step(T, state, Decimal(100), final=False)) == [("alert.triggered", Decimal(100))]


def test_a_threshold_fires_at_most_once_even_when_the_value_goes_down_and_up_again() -> None:
    state = RuleState()
    step(T, state, Decimal(60), final=False)
    assert kinds(step(T, state, Decimal(40), final=False)) == [("alert.resolved", Decimal(50))]
    assert step(T, state, Decimal(60), final=False) == []  # resolved is terminal
    assert state.statuses["50"] is Status.RESOLVED


def test_a_covered_threshold_resolves_silently_and_the_announced_one_is_reported() -> None:
    state = RuleState()
    step(T, state, Decimal(85), final=False)  # 50 covered, 80 announced
    assert kinds(step(T, state, Decimal(60), final=False)) == [("alert.resolved", Decimal(80))]
    assert step(T, state, Decimal(40), final=False) == []  # 50 never announced


def test_a_new_period_resolves_the_alarms_of_the_old_one() -> None:
    state = RuleState()
    step(T, state, Decimal(60), final=False)
    resolved = step(T, state, Decimal(60), final=False, period_over=True)
    assert kinds(resolved) == [("alert.resolved", Decimal(50))] and resolved[0].reason == "new_period"


def test_after_the_final_a_correction_is_corrected_never_a_second_alarm() -> None:
    state = RuleState()
    assert kinds(step(T, state, Decimal(70), final=True)) == [("alert.triggered", Decimal(50))]
    up = step(T, state, Decimal(120), final=True)
    assert kinds(up) == [("alert.corrected", Decimal(100))] and up[0].sequence == 1 and up[0].previous == Decimal(70)
    down = step(T, state, Decimal(75), final=True)
    assert kinds(down) == [("alert.corrected", Decimal(100))] and down[0].sequence == 2
    assert step(T, state, Decimal(76), final=True) == []  # no threshold crossed either way


def test_state_survives_its_json_form() -> None:
    state = RuleState()
    step(T, state, Decimal(85), final=True)
    again = RuleState.from_json(state.to_json())
    assert again == state and step(T, again, Decimal(101), final=True)[0].kind is AlertKind.CORRECTED


@pytest.mark.parametrize("seed", range(30))
def test_property_each_threshold_triggers_at_most_once_and_only_before_the_final(seed: int) -> None:
    rng = random.Random(seed)
    state = RuleState()
    triggered: list[Decimal] = []
    final = False
    for _ in range(60):
        final = final or rng.random() < 0.1
        was_final = state.final
        for t in step(T, state, Decimal(rng.randint(0, 130)), final=final, period_over=rng.random() < 0.03):
            if t.kind is AlertKind.TRIGGERED:
                assert not was_final
                triggered.append(t.threshold)
            assert (t.kind is AlertKind.CORRECTED) == (t.sequence > 0)
    assert len(triggered) == len(set(triggered))
    assert triggered == sorted(triggered)  # a lower threshold never fires after a higher one


def test_alert_ids_are_deterministic_and_differ_by_every_part() -> None:
    base = ("r", Decimal("80"), "acme", "api_calls", 1, "alert.triggered", 0)
    assert alert_id(*base) == alert_id("r", Decimal("80.0"), "acme", "api_calls", 1, "alert.triggered", 0)
    ids = {alert_id(*base)}
    for index, other in enumerate(("s", Decimal(81), "bob", "tokens", 2, "alert.resolved", 1)):
        changed = list(base)
        changed[index] = other
        ids.add(alert_id(*changed))  # type: ignore[arg-type]
    assert len(ids) == 8


def segment(minute: int, version: int, total: str, count: int, seg: str = "on_time") -> dict[str, object]:
    return {"minute_ms": minute, "version": version, "segment": seg, "sum": total, "value": total, "event_count": count}


def test_an_on_time_segment_replaces_its_previous_version_and_late_segments_add() -> None:
    g = GroupValue("sum")
    g.add_segment(segment(0, 10, "5", 1), HOUR_MS)
    g.add_segment(segment(0, 20, "7", 2), HOUR_MS)  # the minute's running value: replaces 5
    g.add_segment(segment(0, 15, "6", 1), HOUR_MS)  # an older version: ignored
    g.add_segment(segment(60_000, 70_000, "3", 1), HOUR_MS)
    g.add_segment(segment(0, 1, "-2", -1, "late:e9"), HOUR_MS)  # a void's retraction
    assert g.value() == Decimal(8) and g.events == 2
    g.set_final({"value": "8"})
    g.add_correction({"value": "4", "retract": False})
    g.add_correction({"value": "1", "retract": True})
    assert g.value() == Decimal(11)
    assert GroupValue.from_json(g.to_json()) == g


def test_open_minutes_are_pruned_behind_the_newest() -> None:
    g = GroupValue("count")
    g.add_segment(segment(0, 10, "0", 3), HOUR_MS)
    g.add_segment(segment(2 * HOUR_MS, 2 * HOUR_MS + 10, "0", 2), HOUR_MS)
    assert list(g.open) == [2 * HOUR_MS] and g.value() == Decimal(5)


def test_groups_combine_by_aggregation() -> None:
    assert combine("sum", [Decimal(1), Decimal(2)]) == 3
    assert combine("max", [Decimal(1), Decimal(2)]) == 2
    assert combine("min", [Decimal(1), Decimal(2)]) == 1
    assert combine("sum", []) is None


def _rating() -> Rating:
    card = RateCard("api_calls", (RateVersion(datetime(2026, 1, 1, tzinfo=UTC), PerUnit(Decimal("0.01"))),))
    return Rating({"std": RatePlan(Money(), {"api_calls": card})}, "std")


def test_rule_values_of_each_kind() -> None:
    g = GroupValue("count")
    g.add_segment(segment(epoch_millis(MARCH.start), 1, "0", 1000), HOUR_MS)
    groups = {"": g, "eu": GroupValue("count", total=Decimal(500))}
    half = epoch_millis(MARCH.start) + (epoch_millis(MARCH.end) - epoch_millis(MARCH.start)) // 2
    rating = _rating()

    def value(kind: RuleKind, entitlement: Decimal | None = None) -> Decimal | None:
        rule = AlertRule("r", kind, "api_calls", T, entitlement=entitlement)
        return rule_value(rule, "acme", "count", groups, MARCH, half, rating, final=False)

    assert value(RuleKind.USAGE) == 1500
    assert value(RuleKind.ENTITLEMENT_PCT, Decimal(3000)) == Decimal("50.000000000")
    assert value(RuleKind.SPEND) == Decimal("15.00")
    assert value(RuleKind.PROJECTED_SPEND) == Decimal("30.00")  # each group doubled at half time, priced
    unpriced = AlertRule("r", RuleKind.SPEND, "tokens", T)
    assert rule_value(unpriced, "acme", "count", groups, MARCH, half, rating, final=False) is None


def test_rule_problems() -> None:
    rule = AlertRule("r", RuleKind.ENTITLEMENT_PCT, "m", (Decimal(80), Decimal(80)))
    assert [k for k, _ in rule.problems()] == ["thresholds[1]", "entitlement"]
    assert [k for k, _ in AlertRule("r", RuleKind.USAGE, "m", (), entitlement=Decimal(1)).problems()] == [
        "thresholds",
        "entitlement",
    ]
