"""The replay benchmark (bench/replay.py) runs on a small preset, and its replays count every accepted event.

The expected count is independent of the replay: the demo's own recomputation (jobs/demo.py
``accepted``: Python schema validation, first-seen dedup in file order) over the same generated file,
restricted to the events whose billing period overlaps the requested range.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from infra.settings import PROJECT_ROOT
from jobs.config import load_config
from jobs.demo import accepted, generate
from udfs.periods import billing_period

pytestmark = pytest.mark.integration

EVENTS = 20_000
SEED = 11


def test_small_preset_replays_every_accepted_event_faster_than_real_time(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--events", str(EVENTS), "--seed", str(SEED), "--json", "--dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| one day |" in result.stdout and "| whole span |" in result.stdout
    cases = {c["case"]: c for c in json.loads(result.stdout.strip().splitlines()[-1])}
    assert set(cases) == {"one day", "whole span"}

    config = load_config(tmp_path / "metering.yaml", env={})
    events_file = tmp_path / "regenerated.jsonl"
    generate(events_file, EVENTS, seed=SEED)  # deterministic: the file the benchmark replayed
    events = {(c.event.customer_id, c.event.event_id): c.event for c in accepted(events_file, config)}
    for name, case in cases.items():
        start, end = datetime.fromisoformat(case["range_from"]), datetime.fromisoformat(case["range_to"])
        active = {e.customer_id for e in events.values() if start <= e.timestamp < end}
        expected = 0
        for event in events.values():
            if event.customer_id not in active:
                continue
            period = billing_period(event.timestamp, config.billing.policy_for(event.customer_id).cycle)
            expected += period.start < end and period.end > start
        assert case["events_counted"] == expected, (name, case, expected)
        # the demo's meters refuse none of its valid events (credits allow negatives)
        assert case["refusals"] == {} and case["events_examined"] == case["events_counted"], case
        assert case["realtime_ratio"] > 1, case
