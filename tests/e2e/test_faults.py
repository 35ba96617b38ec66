"""Crash recovery: kill -9 the TaskManager mid-job and the loader mid-load; totals still match exactly.

The job runs on the standalone cluster (detached, bounded). After its first completed checkpoint
the TaskManager JVM is SIGKILLed and a new one started; Flink restarts the job from the last
checkpoint (exponential-delay restart strategy), Kafka transactions of the failed attempt are
aborted, and read_committed readers never see them. The loader runs as its own process (it owns
the chDB directory), is SIGKILLed after its first batches, and restarted: batches it inserted but
did not commit are re-delivered and collapse in ClickHouse.

Between the two, the finals topic is checked as a ``read_committed`` reader sees it: every final
exactly once. A lost or doubled Kafka transaction shows there, apart from anything the loader does;
on failure the Flink logs and the broker's transaction states are kept in the test artifacts folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from infra.settings import PROJECT_ROOT
from jobs.config import Config, load_config
from jobs.demo import Expected, Key, compare, demo_document, generate, recompute
from jobs.produce import make_producer, produce_lines
from jobs.topics import ensure_topics
from tests.e2e.browser import artifacts_dir
from tests.e2e.harness import committed_values, transaction_states

EVENTS = 30_000


def metering(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def query(config_path: Path, what: str) -> list[dict[str, Any]]:
    result = metering("query", what, "--config", str(config_path), "--format", "jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line]


def final_key(record: dict[str, Any]) -> Key:
    """A final record of the finals topic, keyed like the recomputation (group-by as sorted JSON)."""
    group = json.dumps(json.loads(record["group_key"]), sort_keys=True)
    return (record["customer_id"], record["meter"], group, int(record["period_start_ms"]))


def finals_topic_problems(bootstrap: str, config: Config, expected: Expected) -> list[str]:
    """What is wrong with the committed finals: doubled, missing, wrong or unexpected keys (empty: exact)."""
    records = [json.loads(value) for value in committed_values(bootstrap, config.kafka.topics.finals)]
    seen = Counter(final_key(r) for r in records)
    got = {final_key(r): (Decimal(r["value"]), int(r["event_count"])) for r in records}
    late_keys = set(expected.corrections)  # final or correction depends on the watermark: compared after loading
    plain = {key: value for key, value in expected.finals.items() if key not in late_keys}
    problems = [f"doubled {key}" for key, n in sorted(seen.items()) if n > 1]
    problems += [f"missing {key}" for key in sorted(plain) if key not in got]
    problems += [f"wrong {key}: {got[key]} != {plain[key]}" for key in sorted(plain) if key in got and got[key] != plain[key]]
    problems += [f"unexpected {key}" for key in sorted(set(got) - set(plain) - late_keys)]
    return problems


def keep_diagnostics(stack: Any, bootstrap: str, config: Config, run_id: str, problems: list[str]) -> Path:
    """Flink logs, transaction states and the problems, in the artifacts folder; returns the folder."""
    folder = artifacts_dir() / f"fault-test-{run_id}"
    shutil.copytree(stack.flink.log_dir, folder / "flink-logs", dirs_exist_ok=True)
    states = transaction_states(bootstrap, config.kafka.consumer_group)
    (folder / "transactions.json").write_text(json.dumps(states, indent=1))
    (folder / "problems.txt").write_text("\n".join(problems) + "\n")
    return folder


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
        PROJECT_ROOT / "jobs" / "flink" / "metering_job.py",
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
    expected = recompute(events, config)
    problems = finals_topic_problems(bootstrap, config, expected)
    if problems:
        folder = keep_diagnostics(stack, bootstrap, config, run_id, problems)
        raise AssertionError(f"{len(problems)} problems in the committed finals topic (diagnostics: {folder}): {problems[:20]}")

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
    comparison = compare(expected, finals, corrections, dead_letters, health)
    assert comparison.passed, comparison.checks
