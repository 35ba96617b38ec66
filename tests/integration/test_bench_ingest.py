"""The ingestion benchmark (bench/ingest.py) runs tiny end to end: ``metering serve`` as a subprocess,
``metering produce`` as the peer, every event accepted, in the topic once, and the results file.

The spare KRaft broker (tests/integration/conftest.py's ``spare_broker``) passed with
``--bootstrap``, so the benchmark starts no broker of its own here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra.kafka import KafkaBroker
from infra.settings import PROJECT_ROOT

EVENTS = 300


def test_a_tiny_run_accepts_every_event_once_and_compares_with_produce(spare_broker: KafkaBroker, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    argv = ["--events", str(EVENTS), "--batch-sizes", "50", "100", "--clients", "1", "3", "--partitions", "2"]
    argv += ["--bootstrap", spare_broker.settings.bootstrap_servers, "--workdir", str(tmp_path), "--json", str(results)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.ingest", *argv],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("command: python -m bench.ingest --events 300 --batch-sizes 50 100")
    for batch, clients in ((50, 1), (50, 3), (100, 1), (100, 3)):
        assert f"| metering serve | {batch} | {clients} | 300 |" in run.stdout
    document = json.loads(results.read_text())
    measurements = document["measurements"]
    assert [(m["variant"], m["batch"], m["clients"]) for m in measurements] == [
        ("produce", None, None),
        ("serve", 50, 1),
        ("serve", 50, 3),
        ("serve", 100, 1),
        ("serve", 100, 3),
        ("produce", None, None),
    ]
    for m in measurements:
        assert m["ok"] and m["accepted"] == m["in_topic"] == EVENTS, m
    serve = [m for m in measurements if m["variant"] == "serve"]
    assert [len(m["latencies_ms"]) for m in serve] == [6, 6, 3, 3]  # one latency per request
    assert all(m["statuses"] == {"200": len(m["latencies_ms"])} for m in serve)
    assert document["read_back"] == {"records": 4 * EVENTS, "distinct_ids": 4 * EVENTS, "accepted": 4 * EVENTS, "ok": True}
    assert document["serve_exit"] == 0 and document["command"].startswith("python -m bench.ingest --events 300")
