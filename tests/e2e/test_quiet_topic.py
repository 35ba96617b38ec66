"""A topic that goes quiet as a whole still finalizes: the loader's heartbeats move the watermark.

The events topic has two partitions and an idle timeout of an hour, so neither idleness nor new
events can move the watermark: before the loader runs, no period is final and the newest
provisional step is unpublished. ``metering load`` (unbounded) sends a heartbeat to every
partition each ``pipeline.heartbeat_interval``; the day whose end plus grace has passed becomes
final with its exact total, the day whose grace has not passed stays provisional (now complete),
and the heartbeats appear nowhere: not as dead letters, duplicates or raw events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from clickhouse.client import open_storage
from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import load_config
from jobs.demo import demo_document
from jobs.topics import ensure_topics
from tests.e2e.harness import committed_values, metering, produce, run, wait_until_consumed
from tests.e2e.test_restore_lateness import token_event


def finals_of(bootstrap: str, topic: str, customer: str) -> list[dict[str, Any]]:
    return [f for f in (json.loads(v) for v in committed_values(bootstrap, topic)) if f["customer_id"] == customer]


def test_a_quiet_topic_finalizes_with_the_loaders_heartbeats(tmp_path: Path, stack: Any, stack_settings: StackSettings) -> None:
    run_id = uuid.uuid4().hex[:8]
    bootstrap = stack_settings.bootstrap_servers
    document = demo_document(run_id, bootstrap, tmp_path / "chdb")
    document["pipeline"].update(checkpoint_interval="1s", provisional_interval="5s", max_out_of_orderness="30s")
    document["pipeline"].update(idle_timeout="1h", heartbeat_interval="1s")
    document["billing"]["customers"].update(
        {
            "closing-co": {"timezone": "UTC", "period": "day", "grace": "1h"},  # the day's grace has passed
            "open-co": {"timezone": "UTC", "period": "day", "grace": "7d"},  # it has not
        }
    )
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path, env={})
    topics = config.kafka.topics
    ensure_topics(config, partitions=2)
    env = {**os.environ, "METERING__STACK__HOME": str(stack_settings.home)}
    cluster = ["--cluster", stack_settings.flink_rest_url]
    run(env, "migrate", "--config", str(config_path), timeout=120)

    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    closing = [token_event(f"c-{n:02d}", day + timedelta(hours=10, minutes=n), n + 1, "closing-co") for n in range(60)]
    still_open = [token_event(f"o-{n:02d}", day + timedelta(hours=10, minutes=n), 2, "open-co") for n in range(60)]
    produce(bootstrap, topics.events, closing + still_open, tmp_path / "events.jsonl")

    submitted = metering(env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", f"quiet-{run_id}")
    loader: subprocess.Popen[str] | None = None
    try:
        wait_until_consumed(config)
        time.sleep(5)  # several checkpoints: anything the job would emit is committed by now
        assert committed_values(bootstrap, topics.aggregates), "the job published no provisional totals"
        assert committed_values(bootstrap, topics.finals) == []  # quiet: the watermark is stuck

        loader = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "load", "--config", str(config_path)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 180
        while not finals_of(bootstrap, topics.finals, "closing-co"):
            assert loader.poll() is None, loader.communicate()
            assert time.monotonic() < deadline, "no final within 180 s of the loader starting"
            time.sleep(2)
        time.sleep(5)  # the job has seen several more heartbeat rounds
        loader.send_signal(signal.SIGTERM)
        out, err = loader.communicate(timeout=120)
        assert loader.returncode == 0, err[-3000:]
        heartbeats = json.loads(out.splitlines()[-1])["heartbeats"]
        assert heartbeats["sent"] >= 2 * 5 and heartbeats["failures"] == 0, heartbeats
    finally:
        if loader is not None and loader.poll() is None:
            loader.kill()
        metering(env, "job", "cancel", submitted["job_id"], *cluster)

    (final,) = finals_of(bootstrap, topics.finals, "closing-co")  # exactly once
    assert (Decimal(final["value"]), final["event_count"]) == (Decimal(sum(range(1, 61))), 60)
    assert final["period_start_ms"] == int(day.timestamp() * 1000)
    assert finals_of(bootstrap, topics.finals, "open-co") == []

    run(env, "load", "--config", str(config_path), "--until-idle", timeout=300)
    usage_lines = run(env, "query", "usage", "--config", str(config_path), "--format", "jsonl").splitlines()
    usage = [json.loads(line) for line in usage_lines]
    by_customer = {(u["customer_id"], u["status"]): (Decimal(u["total"]), int(u["event_count"])) for u in usage}
    # open-co's whole day is published: the heartbeats moved the watermark past its last step.
    assert by_customer == {("closing-co", "final"): (Decimal(1830), 60), ("open-co", "provisional"): (Decimal(120), 60)}
    assert run(env, "query", "dead-letters", "--config", str(config_path), "--format", "jsonl").strip() == ""
    with open_storage(config.storage, create_database=False) as storage:
        raw = storage.query_rows("SELECT count(), countIf(event_type = 'tokens') FROM raw_events")
        duplicates = storage.query_rows("SELECT count() FROM duplicates")
        storage.drop_database()
    assert raw == [(120, 120)] and duplicates == [(0,)]
