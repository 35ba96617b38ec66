"""Crash recovery: kill -9 the TaskManager mid-job and the loader mid-load; totals still match exactly.

The job runs on the standalone cluster (detached, bounded). After its first completed checkpoint
the TaskManager JVM is SIGKILLed and a new one started; Flink restarts the job from the last
checkpoint (exponential-delay restart strategy), Kafka transactions of the failed attempt are
aborted, and read_committed readers never see them. The loader runs as its own process (it owns
the chDB directory), is SIGKILLed after its first batches, and restarted: batches it inserted but
did not commit are re-delivered and collapse in ClickHouse.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from infra.settings import PROJECT_ROOT
from jobs.cli import ensure_topics
from jobs.config import load_config
from jobs.demo import compare, demo_document, generate, recompute
from jobs.produce import make_producer, produce_lines

EVENTS = 30_000


def metering(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def query(config_path: Path, what: str) -> list[dict[str, Any]]:
    result = metering("query", what, "--config", str(config_path), "--format", "jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line]


def test_kill_taskmanager_and_loader_then_totals_still_match(tmp_path: Path, bootstrap: str, stack: Any) -> None:
    run_id = uuid.uuid4().hex[:8]
    document = demo_document(run_id, bootstrap, tmp_path / "chdb")
    document["pipeline"]["checkpoint_interval"] = "2s"
    document["pipeline"]["provisional_interval"] = "2s"
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path, env={})
    events = tmp_path / "events.jsonl"
    generate(events, EVENTS, seed=11)
    ensure_topics(config)
    producer = make_producer(bootstrap)
    with events.open("rb") as lines:
        assert produce_lines(lines, producer=producer, topic=config.kafka.topics.events, validate=False).failed == 0
    producer.close()
    migrated = metering("migrate", "--config", str(config_path), timeout=120)
    assert migrated.returncode == 0, migrated.stderr[-2000:]

    # 1. The job, detached on the standalone cluster; SIGKILL the TaskManager after a checkpoint.
    cluster = stack.flink
    submitted = cluster.run_python(
        PROJECT_ROOT / "jobs" / "metering_job.py",
        ["--config", str(config_path), "--until-end", "--job-name", f"fault-{run_id}"],
        detached=True,
        timeout_s=300,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.split("JobID")[1].split()[0]
    deadline = time.monotonic() + 300
    while cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"] < 1:
        assert time.monotonic() < deadline, "no checkpoint completed"
        assert cluster.rest(f"/jobs/{job_id}")["state"] == "RUNNING", "the job ended before the fault could be injected"
        time.sleep(0.5)
    cluster.taskmanager.kill()
    cluster.start_taskmanager()
    final_state = cluster.wait_for_job(job_id, {"FINISHED"}, timeout_s=600)
    assert final_state["state"] == "FINISHED"
    exceptions = cluster.rest(f"/jobs/{job_id}/exceptions")
    assert exceptions.get("exceptionHistory", {}).get("entries"), "the job must have failed over at least once"

    # 2. The loader in its own process; SIGKILL it after its first batches, then run it to the end.
    loader_log = tmp_path / "loader.err"
    with loader_log.open("w") as err:
        loader = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "load", "--config", str(config_path), "--progress"],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while "loaded" not in loader_log.read_text():
            assert time.monotonic() < deadline and loader.poll() is None, loader_log.read_text()[-2000:]
            time.sleep(0.1)
        os.kill(loader.pid, signal.SIGKILL)
        loader.wait()
    resumed = metering("load", "--config", str(config_path), "--until-idle")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # 3. Exactly the recomputed totals.
    finals = query(config_path, "finals")  # jsonl rows carry `group_by` and `total` (docs/contract.md)
    corrections = query(config_path, "corrections")
    dead_letters = query(config_path, "dead-letters")
    (health,) = query(config_path, "health")
    comparison = compare(recompute(events, config), finals, corrections, dead_letters, health)
    assert comparison.passed, comparison.checks
