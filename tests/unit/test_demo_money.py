"""jobs/demo_money.py: the demo's checks of the alerts that fired and of the credit balances."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.config import Config, load_config
from jobs.demo import demo_document
from jobs.demo_money import (
    AlertBounds,
    alert_bounds,
    alert_problems,
    balance_problems,
    credit_alert_problems,
    demo_grant_rows,
    demo_grants,
    expected_balances,
    stream_cost_problems,
)
from udfs.alerting import alert_id
from udfs.credits import burn
from udfs.periods import epoch_millis

MARCH = epoch_millis(datetime(2026, 3, 1, tzinfo=UTC))
APRIL = epoch_millis(datetime(2026, 4, 1, tzinfo=UTC))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    document = demo_document("x", "127.0.0.1:1", tmp_path / "chdb", events=20_000)  # quota: 1,000 calls is 100 %
    document["billing"]["customers"] = {"acme": {"timezone": "UTC", "grace": "48h"}}
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={})


def _alert(
    kind: str, threshold: str, value: str, start: int = MARCH, rule: str = "api-quota", sequence: int = 0
) -> dict[str, Any]:
    meter = "api_calls" if rule == "api-quota" else "storage_peak_bytes"
    return {
        "id": alert_id(rule, Decimal(threshold), "acme", meter, start, kind, sequence),
        "kind": kind,
        "rule": rule,
        "customer_id": "acme",
        "threshold": threshold,
        "value": value,
        "period_start_ms": start,
    }


def test_the_bounds_are_the_recomputed_final_and_corrected_values(config: Config) -> None:
    finals = {
        ("acme", "api_calls", "{}", MARCH): (Decimal(620), 620),
        ("acme", "storage_peak_bytes", "{}", MARCH): (Decimal(10**12), 3),
    }
    corrections = {
        ("acme", "api_calls", "{}", MARCH): (Decimal(400), 400),
        ("acme", "storage_peak_bytes", "{}", MARCH): (Decimal(5), 1),
    }
    bounds = alert_bounds(finals, corrections, config)
    assert bounds[("api-quota", "acme", MARCH)] == AlertBounds(Decimal(62), Decimal(102))
    # A maximum's correction below the final leaves it: the volume card prices 10^12 bytes at 200.00.
    assert bounds[("storage-spend", "acme", MARCH)] == AlertBounds(Decimal("200.00"), Decimal("200.00"))


def test_agreeing_alerts_pass_and_each_kind_of_disagreement_is_named(config: Config) -> None:
    rules = config.alerts.rules
    bounds = {("api-quota", "acme", MARCH): AlertBounds(Decimal(62), Decimal(102))}
    good = [
        _alert("alert.triggered", "50", "50"),  # 25 and 50 crossed at once: one alert, for 50
        _alert("alert.resolved", "50", "10", rule="api-quota"),
        _alert("alert.corrected", "100", "102", sequence=1),
    ]
    ids = [a["id"] for a in good]
    assert alert_problems(bounds, rules, good, ids) == []
    assert alert_problems(bounds, rules, good + good[:1], ids) == [f"alert {ids[0]} is on the alerts topic 2 times"]
    assert "not in the alerts table" in alert_problems(bounds, rules, good, ids[1:])[0]
    missing = alert_problems(
        bounds, rules, [_alert("alert.triggered", "25", "30")], [_alert("alert.triggered", "25", "30")["id"]]
    )
    assert missing == ["api-quota acme 2026-03-01T00:00:00.000Z: highest triggered 25, expected 50"]
    above = _alert("alert.triggered", "100", "100")
    assert "highest triggered 100, expected 50" in alert_problems(bounds, rules, [above], [above["id"]])[0]
    stray = _alert("alert.corrected", "25", "20", sequence=1)
    assert "outside (62, 102]" in alert_problems(bounds, rules, [good[0], stray], [good[0]["id"], stray["id"]])[0]
    lonely = _alert("alert.resolved", "25", "0")
    assert "never triggered" in alert_problems(bounds, rules, [good[0], lonely], [good[0]["id"], lonely["id"]])[0]
    elsewhere = _alert("alert.triggered", "25", "30", start=APRIL)
    assert "no total of" in alert_problems(bounds, rules, [*good, elsewhere], [*ids, elsewhere["id"]])[-1]


def test_the_expected_balance_burns_the_recomputed_invoices(config: Config) -> None:
    """acme's March invoice (final, settled) burns the trial grant first, then the prepayment."""
    rows = demo_grant_rows(20_000)  # 10.00 trial (priority 5), 200.00 prepaid
    assert [r["amount"] for r in rows if r["customer"] == "acme"] == ["10.00", "200.00"]
    grants = [g for g in demo_grants(config, rows) if g.customer == "acme"]
    finals = {("acme", "api_calls", "{}", MARCH): (Decimal(101_000), 101_000)}  # 1,000 free, the next 100,000 at 0.0002
    now = datetime(2026, 12, 7, tzinfo=UTC)
    balance = expected_balances(finals, {}, config, grants, now)["acme"]
    assert (balance.consumed_settled, balance.remaining, balance.uncovered_settled) == (
        Decimal("20.00"),
        Decimal("190.00"),
        Decimal(0),
    )
    assert {b.grant.grant_id: b.consumed_settled for b in balance.grants} == {
        "demo-acme-trial": Decimal("10.00"),  # priority 5 burns first, whole
        "demo-acme-prepaid": Decimal("10.00"),
    }
    other = burn(grants[1:], [], [], config.billing.policy_for("acme").cycle, now)
    assert balance_problems({"acme": balance}, {"acme": balance}) == []
    assert "acme granted: read 200.00, expected 210.00" in balance_problems({"acme": balance}, {"acme": other})


def test_the_most_severe_credit_alert_of_each_period_follows_the_recomputed_credit(config: Config) -> None:
    """acme's 210.00 runs out in March (3,000,000 calls cost 309.90), and April adds 20.00 more: 0 is due in both."""
    rows = demo_grant_rows(20_000)
    grants = demo_grants(config, rows)
    (rule,) = [r for r in config.alerts.rules if r.name == "credit-low"]
    assert [f"{t}" for t in rule.thresholds] == ["0", "50.00"]
    finals = {
        ("acme", "api_calls", "{}", MARCH): (Decimal(3_000_000), 3_000_000),
        ("acme", "api_calls", "{}", APRIL): (Decimal(101_000), 101_000),
    }

    def credit(threshold: str, start: int, kind: str = "alert.triggered") -> dict[str, Any]:
        return {**_alert(kind, threshold, "0", start, rule="api-quota"), "rule": "credit-low"}

    good = [credit("50.00", MARCH), credit("0", MARCH), credit("0", MARCH, "alert.resolved"), credit("0", APRIL)]
    acme = [g for g in grants if g.customer == "acme"]
    assert credit_alert_problems(finals, config, acme, good) == []
    late = [credit("50.00", MARCH), credit("0", APRIL)]
    assert credit_alert_problems(finals, config, acme, late) == [
        "credit-low acme 2026-03-01T00:00:00.000Z: most severe triggered 50.00, expected 0 (credit left 0.00)"
    ]
    rich = [g for g in grants if g.customer == "globex"]  # 1,200.00, never near a threshold: nothing is due
    globex = {("globex", "api_calls", "{}", k[3]): v for k, v in finals.items()}
    assert credit_alert_problems(globex, config, rich, []) == []
    assert "expected None" in credit_alert_problems(globex, config, rich, [{**credit("0", MARCH), "customer_id": "globex"}])[0]


def test_the_stream_rated_cost_must_be_the_corrected_final_priced(config: Config) -> None:
    """A final's stream cost counts its corrections; the quantity and its price are both checked."""
    key = ("acme", "api_calls", "{}", MARCH)
    finals, corrections = {key: (Decimal(101_000), 101_000)}, {key: (Decimal(5_000), 5_000)}
    row = {"customer_id": "acme", "meter": "api_calls", "group_key": "{}", "period_start_ms": MARCH, "is_final": True}
    good = {**row, "quantity": "106000", "cost": "20.50"}  # 1,000 free, 100,000 at 0.0002, 5,000 at 0.0001
    assert stream_cost_problems([good], finals, corrections, config) == []
    assert "recomputed 106000" in stream_cost_problems([{**good, "quantity": "101000"}], finals, corrections, config)[0]
    assert "priced 20.50" in stream_cost_problems([{**good, "cost": "20.00"}], finals, corrections, config)[0]
    assert "still provisional" in stream_cost_problems([{**good, "is_final": False}], finals, corrections, config)[0]
    assert "no cost record" in stream_cost_problems([], finals, corrections, config)[0]
