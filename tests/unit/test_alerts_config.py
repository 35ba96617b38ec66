"""The ``alerts`` section (jobs/config.py -> udfs/alerting.py): checked at load, every problem with its path, exit 2."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import EXIT_USAGE, main
from jobs.config import ConfigError, load_config
from udfs.alerting import RuleKind

METERS = [
    {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_type": "tokens", "aggregation": "sum"},
]
RATING = {
    "default_plan": "std",
    "plans": {
        "std": {"meters": {"api_calls": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "0.01"}]}}
    },
}
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def write(tmp_path: Path, alerts: Any) -> Path:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump({"meters": METERS, "rating": RATING, "alerts": alerts}))
    return path


def problems(tmp_path: Path, alerts: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, alerts), env=env or {})
    return caught.value.problems


def test_rules_of_every_kind_load(tmp_path: Path) -> None:
    alerts = {
        "rules": [
            {"name": "calls", "kind": "usage", "meter": "api_calls", "thresholds": [1000, "5000.5"]},
            {"name": "quota", "kind": "entitlement_pct", "meter": "tokens", "entitlement": "1000000", "thresholds": [80, 100]},
            {"name": "spend", "kind": "spend", "meter": "api_calls", "thresholds": ["100"], "customers": ["acme"]},
            {
                "name": "forecast",
                "kind": "projected_spend",
                "meter": "api_calls",
                "thresholds": [500],
                "webhook": {"url": "https://hooks.example/alerts", "secret_env": "ACME_HOOK"},
            },
            {"name": "low-credit", "kind": "credit_remaining", "thresholds": ["0", "10.00", 50]},
        ]
    }
    config = load_config(write(tmp_path, alerts), env={"ACME_HOOK": SECRET})
    rules = config.alerts.rules
    assert [r.kind for r in rules] == list(RuleKind)
    assert rules[0].thresholds == (Decimal(1000), Decimal("5000.5")) and rules[0].customers is None
    assert rules[1].entitlement == Decimal(1000000) and rules[2].customers == frozenset({"acme"})
    assert rules[3].webhook is not None and rules[3].webhook.secret == SECRET
    assert rules[4].meter == "" and rules[4].thresholds == (Decimal(0), Decimal("10.00"), Decimal(50))
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"kind": "usage", "meter": "api_cals", "thresholds": [1]}, "alerts.rules[0].meter: unknown meter 'api_cals'"),
        ({"kind": "usage", "meter": "api_calls", "thresholds": [5, 5]}, "alerts.rules[0].thresholds[1]: 5 must be greater"),
        ({"kind": "usage", "meter": "api_calls", "thresholds": [9, 3]}, "alerts.rules[0].thresholds[1]: 3 must be greater"),
        ({"kind": "credit", "meter": "api_calls", "thresholds": [1]}, "alerts.rules[0].kind: 'credit' must be one of usage"),
        ({"kind": "usage", "meter": "api_calls", "thresholds": []}, "alerts.rules[0].thresholds: must be a non-empty list"),
        (
            {"kind": "usage", "meter": "api_calls", "thresholds": ["1e3"]},
            "alerts.rules[0].thresholds[0]: '1e3' must be a decimal",
        ),
        (
            {"kind": "usage", "meter": "api_calls", "thresholds": [1], "customers": [" acme"]},
            "alerts.rules[0].customers[0]: unknown customer",
        ),
        ({"kind": "entitlement_pct", "meter": "api_calls", "thresholds": [1]}, "alerts.rules[0].entitlement: required"),
        ({"kind": "spend", "meter": "tokens", "thresholds": [1]}, "alerts.rules[0].kind: spend needs a price"),
        (
            {"kind": "credit_remaining", "meter": "api_calls", "thresholds": [1]},
            "alerts.rules[0].meter: kind credit_remaining watches the credit every meter's cost burns: leave meter out",
        ),
        (
            {"kind": "credit_remaining", "thresholds": ["-1", 5]},
            "alerts.rules[0].thresholds[0]: -1 must be 0 or more",
        ),
        ({"kind": "credit_remaining", "thresholds": [5, 1]}, "alerts.rules[0].thresholds[1]: 1 must be greater"),
        ({"kind": "usage", "thresholds": [1]}, "alerts.rules[0].meter: required"),
        ({"kind": "usage", "meter": "api_calls", "thresholds": [1], "colour": "red"}, "alerts.rules[0].colour: unknown key"),
        (
            {"kind": "usage", "meter": "api_calls", "thresholds": [1], "webhook": {"url": "ftp://x", "secret_env": "NOPE"}},
            "alerts.rules[0].webhook.url: 'ftp://x' must be an http:// or https:// URL",
        ),
        (
            {"kind": "usage", "meter": "api_calls", "thresholds": [1], "webhook": {"url": "http://x", "secret_env": "NOPE"}},
            "alerts.rules[0].webhook.secret_env: NOPE is not set",
        ),
    ],
)
def test_a_bad_rule_is_named_by_its_key(tmp_path: Path, rule: dict[str, Any], expected: str) -> None:
    found = problems(tmp_path, {"rules": [{"name": "r", **rule}]})
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_at_once_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alerts = {
        "rules": [
            {"name": "a", "kind": "usage", "meter": "nope", "thresholds": [2, 1]},
            {"name": "a", "kind": "bad", "meter": "api_calls", "thresholds": [1]},
        ]
    }
    found = problems(tmp_path, alerts)
    assert len(found) == 4, found
    assert main(["config", "validate", str(write(tmp_path, alerts))]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "alerts.rules[0].meter" in err and "alerts.rules[1].kind" in err and "defined more than once" in err


def test_a_secret_that_is_not_whsec_is_refused_without_showing_it(tmp_path: Path) -> None:
    rule = {"name": "r", "kind": "usage", "meter": "api_calls", "thresholds": [1]}
    found = problems(tmp_path, {"rules": [{**rule, "webhook": {"url": "http://x", "secret_env": "S"}}]}, {"S": "hunter2"})
    assert found == [
        "alerts.rules[0].webhook.secret_env: S must hold whsec_ followed by the base64 of the key (its value not shown)"
    ]


def test_a_credit_rule_with_a_meter_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alerts = {"rules": [{"name": "low", "kind": "credit_remaining", "meter": "tokens", "thresholds": [10]}]}
    assert main(["config", "validate", str(write(tmp_path, alerts))]) == EXIT_USAGE
    assert "alerts.rules[0].meter: kind credit_remaining" in capsys.readouterr().err


def test_a_credit_rule_needs_a_plan_for_its_currency(tmp_path: Path) -> None:
    path = tmp_path / "metering.yaml"
    rules = [
        {"name": "everyone", "kind": "credit_remaining", "thresholds": [10]},
        {"name": "globex", "kind": "credit_remaining", "thresholds": [10], "customers": ["globex"]},
    ]
    path.write_text(yaml.safe_dump({"meters": METERS, "alerts": {"rules": rules}}))  # no rating: no plan, no currency
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert [p.split(":")[0] for p in caught.value.problems] == ["alerts.rules[0].kind", "alerts.rules[1].kind"]
    assert "customer 'globex' has none" in caught.value.problems[1]


def test_cost_records_are_on_with_a_rating_section_and_need_one(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, None), env={}).alerts.costs is True
    assert load_config(write(tmp_path, {"costs": False}), env={}).alerts.costs is False
    unrated = tmp_path / "unrated.yaml"
    unrated.write_text(yaml.safe_dump({"meters": METERS}))
    assert load_config(unrated, env={}).alerts.costs is False
    unrated.write_text(yaml.safe_dump({"meters": METERS, "alerts": {"costs": True}}))
    with pytest.raises(ConfigError) as caught:
        load_config(unrated, env={})
    assert [p for p in caught.value.problems if "alerts.costs" in p] == [
        "alerts.costs: true needs a rating section: the cost records are priced by the customers' rate cards"
    ]
    assert any("alerts.costs" in p for p in problems(tmp_path, {"costs": "often"}))
