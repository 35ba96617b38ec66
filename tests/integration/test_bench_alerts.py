"""The alert latency benchmark (bench/alerts.py) runs tiny on the spare broker: every probe's alert seen, figures written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra.kafka import KafkaBroker
from infra.settings import PROJECT_ROOT


def test_a_tiny_run_sees_every_probe_alert(spare_broker: KafkaBroker, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    argv = ["--rate", "50", "--seconds", "2", "--probe-every", "5", "--customers", "7"]
    argv += ["--bootstrap", spare_broker.settings.bootstrap_servers, "--json", str(results)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.alerts", *argv],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("command: python -m bench.alerts --rate 50 --seconds 2")
    figures = json.loads(results.read_text())
    assert (figures["records"], figures["probes"], figures["alerts_seen"], figures["missing"]) == (100, 20, 20, 0)
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
