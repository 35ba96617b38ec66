"""Helpers shared by the e2e tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from infra.flink import connector_jar
from infra.settings import PROJECT_ROOT, StackSettings
from jobs import topics
from jobs.config import Config
from jobs.demo import Comparison, compare, recompute
from jobs.produce import make_producer, produce_lines


def run_bounded_job(config_path: Path, stack_settings: StackSettings, job_name: str) -> None:
    """Run the metering job to the end of its input on the local MiniCluster (a subprocess); fail with its stderr."""
    arguments = ["--config", str(config_path), "--until-end", "--job-name", job_name]
    result = subprocess.run(
        [sys.executable, "-m", "jobs.flink.metering_job", *arguments, "--connector-jar", str(connector_jar(stack_settings))],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]


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


def committed_values(bootstrap: str, topic: str, timeout_s: float = 120) -> list[bytes]:
    """Every record value a ``read_committed`` reader sees in ``topic``, from the start to the end offsets."""
    return topics.committed_values(bootstrap, topic, timeout_s)


def transaction_states(bootstrap: str, prefix: str) -> dict[str, str]:
    """The broker's state of every transactional id starting with ``prefix`` (e.g. CompleteCommit, CompleteAbort)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        listings = [listing for per_broker in admin.list_transactions().values() for listing in per_broker]
        return {
            listing.transactional_id: str(getattr(listing.state, "value", listing.state))
            for listing in sorted(listings, key=lambda listing: listing.transactional_id)
            if listing.transactional_id.startswith(prefix)
        }
    finally:
        admin.close()


def load_and_compare(env: dict[str, str], config_path: Path, config: Config, events: Path) -> tuple[Comparison, dict[str, Any]]:
    """`metering load` to the end, then the job's finals, corrections and dead letters against a recomputation of ``events``."""
    run(env, "load", "--config", str(config_path), "--until-idle", timeout=300)
    got: dict[str, Any] = {}
    for what in ("finals", "corrections", "dead-letters", "health"):
        output = run(env, "query", what, "--config", str(config_path), "--format", "jsonl")
        got[what] = [json.loads(line) for line in output.splitlines()]
    expected = recompute(events, config)
    return compare(expected, got["finals"], got["corrections"], got["dead-letters"], got["health"][0]), got
