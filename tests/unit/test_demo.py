"""jobs/demo.py: the demo configuration is a fresh copy for every caller."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import yaml

from jobs.config import Config, load_config
from jobs.demo import CUSTOMERS, Expected, compare, demo_document, recompute
from udfs.periods import epoch_millis


def test_demo_document_hands_out_a_copy_of_the_customers(tmp_path: Path) -> None:
    """A test that added a customer to its document once changed every later generate() in the session."""
    before = {name: dict(policy) for name, policy in CUSTOMERS.items()}
    document = demo_document("x", "127.0.0.1:1", tmp_path / "chdb")
    document["billing"]["customers"]["extra-co"] = {"timezone": "UTC"}
    document["billing"]["customers"]["acme"]["period"] = "day"
    assert before == CUSTOMERS


def _line(event_id: str, at: str, quantity: str = "1", customer: str = "acme") -> str:
    return json.dumps(
        {"event_id": event_id, "customer_id": customer, "event_type": "tokens", "timestamp": at, "quantity": quantity}
    )


def _config(tmp_path: Path) -> Config:
    document = demo_document("x", "127.0.0.1:1", tmp_path / "chdb")
    document["billing"]["customers"] = {"acme": {"timezone": "UTC", "grace": "48h"}}
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={})


def test_recompute_judges_lateness_by_the_watermark_in_file_order(tmp_path: Path) -> None:
    """March's final is due at 3 April 00:00 (end + 48 h); the watermark trails the newest event by 30 s."""
    lines = [
        _line("m1", "2026-03-10T00:00:00Z", "5"),
        _line("a1", "2026-04-02T12:00:00Z", "7"),  # watermark 2 April 11:59:30 after it: March still open
        _line("m2", "2026-03-31T23:00:00Z", "11"),  # late, within grace: in March's final
        _line("a2", "2026-04-03T12:00:30Z", "13"),  # watermark 3 April 12:00: March is final from here on
        _line("m3", "2026-03-20T00:00:00Z", "17"),  # beyond grace: a correction
        _line("m3", "2026-03-20T00:00:00Z", "17"),  # its duplicate: dropped
        _line("f1", "2030-01-01T00:00:00Z", "19"),  # future-dated: moves no watermark, a dead letter
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in lines))
    expected = recompute(events, _config(tmp_path))
    march, april = epoch_millis(datetime(2026, 3, 1, tzinfo=UTC)), epoch_millis(datetime(2026, 4, 1, tzinfo=UTC))
    key = ("acme", "tokens", json.dumps({"model": ""}), march)
    assert expected.finals == {key: (Decimal(16), 2), (*key[:3], april): (Decimal(20), 2)}
    assert expected.corrections == {key: (Decimal(17), 1)}
    assert expected.duplicates_dropped == 1
    assert expected.dead_letters == {"future_timestamp": 1}
    assert expected.undecided == []  # each decision is 12 h from the watermark, beyond LATENESS_MARGIN


def test_recompute_calls_a_decision_within_the_margin_undecided(tmp_path: Path) -> None:
    lines = [_line("a1", "2026-04-03T00:10:30Z"), _line("m1", "2026-03-20T00:00:00Z")]  # final due 10 minutes before
    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in lines))
    assert recompute(events, _config(tmp_path)).undecided == ["acme/m1"]


def test_compare_requires_late_events_in_corrections_not_in_the_final(tmp_path: Path) -> None:
    key = ("acme", "tokens", json.dumps({"model": ""}), epoch_millis(datetime(2026, 3, 1, tzinfo=UTC)))
    expected = Expected(finals={key: (Decimal(16), 2)}, corrections={key: (Decimal(17), 1)})
    final = {"customer_id": "acme", "meter": "tokens", "group_by": {"model": ""}, "period_start": "2026-03-01T00:00:00.000Z"}
    health = {"duplicates_dropped": 0}
    in_correction = [{**final, "sign": 1, "value": "17", "event_count": 1}]
    assert compare(expected, [{**final, "total": "16", "event_count": 2}], in_correction, [], health).passed
    # The same event counted in the final instead: the totals add up, but the invoice is wrong.
    assert not compare(expected, [{**final, "total": "33", "event_count": 3}], [], [], health).passed


def test_the_recomputed_final_cost_prices_each_final_by_the_demo_rate_cards(tmp_path: Path) -> None:
    """1,499,001 tokens are 1,500 started packages of 1,000 at 0.002 (USD 3.00); the voided million is not billed."""
    from jobs.demo import Comparison, check_costs, expected_costs

    config = _config(tmp_path)
    events = tmp_path / "events.jsonl"
    void = {"amendment": "void", "amendment_id": "a-1", "customer_id": "acme", "event_id": "t-2"}
    lines = [
        _line("t-1", "2026-03-02T10:00:00Z", "1499001"),
        _line("t-2", "2026-03-02T11:00:00Z", "1000000"),
        json.dumps(void | {"requested_at": "2026-03-02T12:00:00Z"}),
    ]
    events.write_text("\n".join(lines) + "\n")
    march = epoch_millis(datetime(2026, 3, 1, tzinfo=UTC))
    expected = expected_costs(recompute(events, config), config)
    assert expected == {("acme", march): Decimal("3.00")}
    result = Comparison()
    check_costs(result, expected, {("acme", march): Decimal("3.00")})
    check_costs(result, expected, {("acme", march): Decimal("5.00")})
    assert [ok for _, ok, _ in result.checks] == [True, False]
