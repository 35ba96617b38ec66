"""Upgrade and rescale on the standalone cluster, through the `metering job` commands only.

submit (parallelism 1, hashmap state) -> produce the first half -> stop with a savepoint ->
produce the second half, with events of a meter the first configuration did not have ->
resume from the savepoint at parallelism 2, on RocksDB, with that meter added -> stop with
--drain (the watermark reaches the end of time: every period is finalized) -> load -> the
totals equal an independent recomputation exactly. Dedup state, open windows and the ledgers
must all survive the savepoint for that to hold: a duplicate in the second half of an event in
the first half is dropped only if the dedup state was restored.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from infra.settings import StackSettings
from jobs.config import load_config
from jobs.demo import SPAN, START, demo_document, generate
from jobs.topics import ensure_topics
from tests.e2e.harness import load_and_compare, metering, produce, reported_status, run, wait_until_consumed

EVENTS = 8000
WIDGETS = {"name": "widgets", "event_type": "widget_made", "aggregation": "latest", "group_by": ["color"]}


def widget_lines(count: int) -> list[str]:
    """Events of the meter only the upgraded configuration has (late within grace when they arrive)."""
    base = START + SPAN - timedelta(minutes=30)
    return [
        json.dumps(
            {
                "event_id": f"widget-{n:05d}",
                "customer_id": "acme",
                "event_type": "widget_made",
                "timestamp": (base + timedelta(seconds=7 * n)).isoformat().replace("+00:00", "Z"),
                "quantity": str(n % 17),
                "properties": {"color": ["red", "blue"][n % 2]},
            }
        )
        for n in range(count)
    ]


def rocksdb_caches(flink_logs: Path) -> list[int]:
    """Sizes in the TaskManagers' "Obtained shared RocksDB cache of size N bytes" log lines."""
    return [
        int(found.group(1))
        for log in sorted(flink_logs.glob("*taskexecutor*.log*"))
        for found in re.finditer(r"Obtained shared RocksDB cache of size (\d+) bytes", log.read_text(errors="replace"))
    ]


def test_stop_with_savepoint_then_resume_rescaled_with_a_new_meter(
    tmp_path: Path, stack: Any, stack_settings: StackSettings
) -> None:
    run_id = uuid.uuid4().hex[:8]
    bootstrap = stack_settings.bootstrap_servers
    document = demo_document(run_id, bootstrap, tmp_path / "chdb")
    # No source idleness here: Flink 2.2.1 drops the final watermark of `stop --drain` when the
    # source is idle at that moment (FLINK-40499, docs/operations.md); every partition has data.
    document["pipeline"].update(checkpoint_interval="2s", provisional_interval="5s", idle_timeout="1h")
    before_path, after_path = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before_path.write_text(yaml.safe_dump(document))
    document["meters"].append(WIDGETS)
    after_path.write_text(yaml.safe_dump(document))
    before, after = load_config(before_path, env={}), load_config(after_path, env={})

    events = tmp_path / "events.jsonl"
    generate(events, EVENTS, seed=5)
    lines = events.read_text().splitlines()
    first, second = lines[: len(lines) // 2], lines[len(lines) // 2 :] + widget_lines(120)
    events.write_text("".join(line + "\n" for line in first + second))  # what the recomputation reads
    ensure_topics(before)
    env = {**os.environ, "METERING__STACK__HOME": str(stack_settings.home)}
    cluster = ["--cluster", stack_settings.flink_rest_url]
    run(env, "migrate", "--config", str(after_path), timeout=120)

    # 1. Submit the first version at parallelism 1 and let it read the first half.
    produce(bootstrap, before.kafka.topics.events, first, tmp_path / "first.jsonl")
    job = f"upgrade-{run_id}"
    submitted = metering(env, "job", "submit", *cluster, "--config", str(before_path), "--job-name", job, "--parallelism", "1")
    assert submitted["state"] == "RUNNING"
    assert "rocksdb_memory_per_slot" not in submitted  # the heap: no RocksDB memory to report
    assert submitted["web_ui"].endswith(f"/#/job/running/{submitted['job_id']}/overview")
    wait_until_consumed(before)
    status = reported_status(env, submitted["job_id"], cluster, positive=("duplicates_dropped", "dead_letters"))
    assert status["state"] == "RUNNING" and status["checkpoints"]["completed"] >= 1
    assert status["pipeline"]["duplicates_dropped"] > 0 and status["pipeline"]["dead_letters"] > 0
    assert status["pipeline"]["aggregate_updates"] > 0

    # 2. Stop with a savepoint; the job's in-flight state (dedup ids, open windows, ledgers) is in it.
    stopped = metering(env, "job", "stop", submitted["job_id"], "--savepoint", *cluster)
    assert stopped["state"] == "FINISHED"
    savepoint = stopped["savepoint"]

    # 3. More events arrive while it is down, including the new meter's.
    produce(bootstrap, before.kafka.topics.events, second, tmp_path / "second.jsonl")

    # 4. Resume the upgraded configuration from the savepoint, rescaled to 2, on RocksDB.
    resumed = metering(
        env,
        "job",
        "submit",
        *cluster,
        "--config",
        str(after_path),
        "--job-name",
        job,
        "--parallelism",
        "2",
        "--state-backend",
        "rocksdb",
        "--from-savepoint",
        savepoint,
    )
    status = metering(env, "job", "status", resumed["job_id"], *cluster)
    assert status["checkpoints"]["restored_from"] == savepoint
    # What submit said RocksDB gets per slot is what the TaskManager's RocksDB obtained, and the
    # local cluster's 3 GB TaskManager with 4 slots is below the floor, so submit warned.
    obtained = rocksdb_caches(stack_settings.logs / "flink")
    assert obtained and all(abs(size - resumed["rocksdb_memory_per_slot"]) <= 1 for size in obtained), obtained
    assert len(resumed["warnings"]) == 1 and "taskmanager.memory.managed.size" in resumed["warnings"][0]
    assert {op["parallelism"] for op in status["operators"]} == {2}
    wait_until_consumed(after)
    status = reported_status(env, resumed["job_id"], cluster)

    # 5. Finish: drain finalizes every open period, then the loader and the exact comparison.
    drained = metering(env, "job", "stop", resumed["job_id"], "--savepoint", "--drain", *cluster)
    assert drained["state"] == "FINISHED"
    comparison, got = load_and_compare(env, after_path, after, events)
    assert comparison.passed, comparison.checks
    assert status["pipeline"]["window_late_drops"] == 0
    assert any(row["meter"] == "widgets" for row in got["finals"])
