"""The rating bench (bench/rating.py): its records are the job's, and a tiny run prints every figure."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bench.rating import bench_config, main, workload
from jobs.alerts.evaluator import AGGREGATE, Evaluator, state_key
from jobs.demo import recompute


@pytest.mark.parametrize("hours", [84, 1])
def test_the_derived_aggregate_records_add_up_to_the_demos_recomputed_totals(tmp_path: Path, hours: int) -> None:
    config, usage, _ = bench_config(tmp_path)
    path = tmp_path / "events.jsonl"
    work = workload(path, config, 3000, seed=11, span=timedelta(hours=hours))
    expected = recompute(path, config)
    evaluator = Evaluator(usage, config.rating)
    for kind, record in work.records:
        if kind == AGGREGATE:  # the segments alone: no final may paper over a wrong one
            evaluator.apply(kind, record, arrival_ms=0, now_ms=0)
    assert expected.finals
    for (customer, meter, group, start_ms), (total, _count) in expected.finals.items():
        value = evaluator.periods[state_key(customer, meter, start_ms)].groups[group].value()
        assert value == total, (customer, meter, group, start_ms)
    corrected = {
        (r["customer_id"], r["meter"], r["group_key"], r["period_start_ms"]) for kind, r in work.records if kind == "correction"
    }
    assert corrected == set(expected.corrections)


def test_a_tiny_run_prints_and_writes_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "rating.json"
    assert main(["--events", "1500", "--rounds", "1", "--json", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "command: python -m bench.rating --events 1500" in printed
    assert "**rating**" in printed and "validate_line" in printed and "build_invoice" in printed
    figures = json.loads(target.read_text())
    assert figures["events"] > 1000
    assert figures["records"]["total"] == sum(v for k, v in figures["records"].items() if k != "total")
    assert figures["records_per_event"] == pytest.approx(figures["records"]["total"] / figures["events"], abs=1e-3)
    assert figures["spend_us_per_record"] > 0 and figures["usage_us_per_record"] > 0
    assert figures["rating_us_per_event"] == pytest.approx(
        figures["pricing_us_per_record"] * figures["records_per_event"], abs=0.05
    )
    assert 0 < figures["steps_per_event"] <= figures["records_per_event"]
    assert figures["rating_us_per_event_steps_only"] <= figures["rating_us_per_event"] or figures["pricing_us_per_record"] < 0
    assert figures["final_rows"] > 0 and figures["invoices"] > 0
    assert all(len(values) == 1 for values in figures["rounds"].values())
