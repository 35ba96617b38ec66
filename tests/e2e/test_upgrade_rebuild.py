"""Upgrade by rebuilding state: the replacing job restores nothing and still bills exactly.

A project upgrade that changes how an operator keeps its state cannot resume from a savepoint
(docs/operations.md, "Upgrade by rebuilding state"). On the standalone cluster, through the
`metering` commands only: submit -> the first half of the events -> stop with a savepoint (kept,
unused) -> the second half, with retries of first-half events and late events -> `job submit
--rebuild` (no savepoint: it reads the topic again from before the oldest open period) -> stop
with --drain -> load -> every final, correction, dead letter and duplicate equals an independent
recomputation. So the rebuild lost nothing (open periods hold their first-half events), counted
nothing twice (first-half dead letters and corrections are not written again, first-half ids
still drop their retries), and the periods the first job had finalized got no second final.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import yaml

from infra.settings import StackSettings
from jobs.config import load_config
from jobs.demo import demo_document, generate
from jobs.topics import ensure_topics
from tests.e2e.harness import (
    committed_values,
    load_and_compare,
    metering,
    produce,
    reported_status,
    run,
    wait_until_consumed,
)

EVENTS = 8000


def test_a_job_replaced_without_its_state_rebuilds_it_and_bills_exactly(
    tmp_path: Path, stack: Any, stack_settings: StackSettings
) -> None:
    run_id = uuid.uuid4().hex[:8]
    bootstrap = stack_settings.bootstrap_servers
    document = demo_document(run_id, bootstrap, tmp_path / "chdb")
    document["pipeline"].update(checkpoint_interval="2s", provisional_interval="5s", idle_timeout="1h")
    # Daily periods with 26 h of grace: the first job finalizes the first day before it stops, so the
    # rebuild must leave that one alone and rebuild the next, still open. (Late events come 1-19 h
    # late: with 26 h every one is decided, LATENESS_MARGIN away from its period's finalization.)
    document["billing"]["customers"]["kiwi-labs"]["grace"] = "26h"
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path, env={})

    events = tmp_path / "events.jsonl"
    generate(events, EVENTS, seed=11)
    lines = events.read_text().splitlines()
    first, second = lines[: len(lines) * 6 // 10], lines[len(lines) * 6 // 10 :]
    ensure_topics(config)
    env = {**os.environ, "METERING__STACK__HOME": str(stack_settings.home)}
    cluster = ["--cluster", stack_settings.flink_rest_url]
    run(env, "migrate", "--config", str(config_path), timeout=120)

    produce(bootstrap, config.kafka.topics.events, first, tmp_path / "first.jsonl")
    job = f"rebuild-{run_id}"
    submitted = metering(env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", job)
    wait_until_consumed(config)
    stopped = metering(env, "job", "stop", submitted["job_id"], "--savepoint", *cluster)
    assert stopped["state"] == "FINISHED"
    finals_before = [json.loads(v) for v in committed_values(bootstrap, config.kafka.topics.finals)]
    assert finals_before, "the first job finalized nothing: the rebuild's floor goes untested"

    produce(bootstrap, config.kafka.topics.events, second, tmp_path / "second.jsonl")
    replaced = metering(env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", job, "--rebuild")
    plan = replaced["rebuild"]
    assert plan["finalized_through_ms"] == max(f["finalized_at_watermark_ms"] for f in finals_before)
    # It replays: some partition starts before where the first job stopped.
    assert any(plan["start_offsets"][p] < plan["replayed_until"][p] for p in plan["replayed_until"]), plan
    job_id = replaced["job_id"]
    wait_until_consumed(config)
    status = reported_status(env, job_id, cluster)
    assert status["state"] == "RUNNING"

    drained = metering(env, "job", "stop", job_id, "--savepoint", "--drain", *cluster)
    assert drained["state"] == "FINISHED"
    comparison, _ = load_and_compare(env, config_path, config, events)
    assert comparison.passed, comparison.checks
    # No period got a second final: one final per (customer, meter, group, period) in the topic.
    finals = [json.loads(v) for v in committed_values(bootstrap, config.kafka.topics.finals)]
    keys = [(f["customer_id"], f["meter"], f["group_key"], f["period_start_ms"]) for f in finals]
    assert len(keys) == len(set(keys))
