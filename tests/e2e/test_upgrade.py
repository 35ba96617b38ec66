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
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaConsumer, TopicPartition

from infra.settings import PROJECT_ROOT, StackSettings
from jobs.cli import ensure_topics
from jobs.config import Config, load_config
from jobs.demo import SPAN, START, compare, demo_document, generate, recompute
from jobs.produce import make_producer, produce_lines

EVENTS = 8000
WIDGETS = {"name": "widgets", "event_type": "widget_made", "aggregation": "latest", "group_by": ["color"]}


def run(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run a `metering` command; returns its standard output."""
    command = [sys.executable, "-m", "jobs.cli", *args]
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


def metering(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a `metering` command with --format json; returns its JSON answer."""
    answer: dict[str, Any] = json.loads(run(env, *args, "--format", "json"))
    return answer


def reported_status(
    env: dict[str, str], job_id: str, cluster: list[str], timeout_s: float = 60, positive: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`metering job status` once Flink's metric fetcher (10 s cadence) reports every pipeline counter, and the
    ``positive`` ones above zero (a snapshot fetched before the records were processed shows them registered at 0)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = metering(env, "job", "status", job_id, *cluster)
        pipeline = status["pipeline"]
        reported = all(value is not None for value in pipeline.values())
        if (reported and all((pipeline[name] or 0) > 0 for name in positive)) or time.monotonic() > deadline:
            return status
        time.sleep(2)


def produce(bootstrap: str, topic: str, lines: list[str], path: Path) -> None:
    path.write_text("".join(line + "\n" for line in lines))
    producer = make_producer(bootstrap)
    try:
        with path.open("rb") as handle:
            assert produce_lines(handle, producer=producer, topic=topic, validate=False).failed == 0
    finally:
        producer.close()


def wait_until_consumed(config: Config, timeout_s: float = 300) -> None:
    """Until the job's committed offsets (committed at each checkpoint) reach the topic's end."""
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=config.kafka.consumer_group)
    try:
        topic = config.kafka.topics.events
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        deadline = time.monotonic() + timeout_s
        while True:
            ends = consumer.end_offsets(partitions)
            committed = {tp: consumer.committed(tp) or 0 for tp in partitions}
            lagging = {tp.partition: (committed[tp], end) for tp, end in ends.items() if committed[tp] < end}
            if not lagging:
                return
            assert time.monotonic() < deadline, f"the job did not catch up: partition -> (committed, end) {lagging}"
            time.sleep(1)
    finally:
        consumer.close()


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
    env = {**os.environ, "METERING_HOME": str(stack_settings.home)}
    cluster = ["--cluster", stack_settings.flink_rest_url]
    run(env, "migrate", "--config", str(after_path), timeout=120)

    # 1. Submit the first version at parallelism 1 and let it read the first half.
    produce(bootstrap, before.kafka.topics.events, first, tmp_path / "first.jsonl")
    job = f"upgrade-{run_id}"
    submitted = metering(env, "job", "submit", *cluster, "--config", str(before_path), "--job-name", job, "--parallelism", "1")
    assert submitted["state"] == "RUNNING"
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
    assert {op["parallelism"] for op in status["operators"]} == {2}
    wait_until_consumed(after)
    status = reported_status(env, resumed["job_id"], cluster)

    # 5. Finish: drain finalizes every open period, then the loader and the exact comparison.
    drained = metering(env, "job", "stop", resumed["job_id"], "--savepoint", "--drain", *cluster)
    assert drained["state"] == "FINISHED"
    run(env, "load", "--config", str(after_path), "--until-idle", timeout=300)
    got = {}
    for what in ("finals", "corrections", "dead-letters", "health"):
        output = run(env, "query", what, "--config", str(after_path), "--format", "jsonl")
        got[what] = [json.loads(line) for line in output.splitlines()]
    expected = recompute(events, after)
    comparison = compare(expected, got["finals"], got["corrections"], got["dead-letters"], got["health"][0])
    assert comparison.passed, comparison.checks
    assert status["pipeline"]["window_late_drops"] == 0
    assert any(row["meter"] == "widgets" for row in got["finals"])
