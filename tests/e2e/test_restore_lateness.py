"""Events behind the watermark a job had before a restore are still counted after it.

Invariants 1 and 5 across a restore: the job is stopped with a savepoint once its watermark has
reached the end of an hour of events, then resumed. Two events inside that hour arrive after the
restore, both within the grace window: the first before the resumed job has any watermark, the
second once the resumed job's watermark (rebuilt from the first) is behind it, but the stopped
job's watermark was ahead of it. Before the pre-aggregation was changed, the second one was
flagged on-time and then dropped by the window operator, which resumes at the watermark in its
savepoint (docs/design.md). Every event must be in the final total.

The second test covers the other side of the same gap: a late event for a period that was final
before the restore, read before the resumed job has a watermark. It must become a correction;
judged by the resumed operator's empty watermark alone it looked open, and its period got a second
final holding only that event.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from infra.settings import StackSettings
from jobs.config import Config, load_config
from jobs.demo import demo_document
from jobs.topics import ensure_topics
from tests.e2e.harness import committed_values, metering, produce, reported_status, run, wait_until_consumed

BASE = datetime(2026, 3, 10, tzinfo=UTC)


def token_event(event_id: str, at: datetime, quantity: int, customer: str = "restore-co") -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "event_type": "tokens",
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "quantity": str(quantity),
            "properties": {"model": "m1"},
        }
    )


def one_partition_setup(
    tmp_path: Path, stack_settings: StackSettings, customers: dict[str, Any] | None = None
) -> tuple[str, Path, Config, dict[str, str], list[str]]:
    """A migrated demo configuration with a one-partition events topic; ``customers`` are added to the demo's.

    Returns the run id, the configuration's path and value, the environment and the ``--cluster`` arguments.
    """
    run_id = uuid.uuid4().hex[:8]
    document = demo_document(run_id, stack_settings.bootstrap_servers, tmp_path / "chdb")
    # One partition, so the watermark is that partition's; never idle (FLINK-40499, see test_upgrade).
    document["pipeline"].update(
        checkpoint_interval="1s", provisional_interval="5s", idle_timeout="1h", max_out_of_orderness="30s"
    )
    document["billing"]["customers"].update(customers or {})
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path, env={})
    ensure_topics(config, partitions=1)
    env = {**os.environ, "METERING__STACK__HOME": str(stack_settings.home)}
    run(env, "migrate", "--config", str(config_path), timeout=120)
    return run_id, config_path, config, env, ["--cluster", stack_settings.flink_rest_url]


def test_events_behind_the_restored_watermark_are_counted(tmp_path: Path, stack: Any, stack_settings: StackSettings) -> None:
    run_id, config_path, config, env, cluster = one_partition_setup(tmp_path, stack_settings)
    topic = config.kafka.topics.events

    # An hour of events; the job's watermark ends 30 s (out-of-orderness) before the last one.
    hour = [token_event(f"e-{n:04d}", BASE + timedelta(seconds=10 * n), n % 7 + 1) for n in range(360)]
    produce(stack_settings.bootstrap_servers, topic, hour, tmp_path / "hour.jsonl")
    job = f"restore-{run_id}"
    submitted = metering(env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", job, "--parallelism", "1")
    wait_until_consumed(config)
    stopped = metering(env, "job", "stop", submitted["job_id"], "--savepoint", *cluster)
    assert stopped["state"] == "FINISHED"

    resumed = metering(
        env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", job, "--from-savepoint", stopped["savepoint"]
    )
    # Read before the resumed job has a watermark; the watermark then follows it (00:10 - 30 s).
    first_behind = token_event("behind-1", BASE + timedelta(minutes=10), 1000)
    produce(stack_settings.bootstrap_servers, topic, [first_behind], tmp_path / "behind-1.jsonl")
    wait_until_consumed(config)
    # Ahead of the resumed job's watermark, 29 minutes behind the stopped job's.
    second_behind = token_event("behind-2", BASE + timedelta(minutes=30), 20000)
    produce(stack_settings.bootstrap_servers, topic, [second_behind], tmp_path / "behind-2.jsonl")
    wait_until_consumed(config)
    status = reported_status(env, resumed["job_id"], cluster)
    drained = metering(env, "job", "stop", resumed["job_id"], "--savepoint", "--drain", *cluster)
    assert drained["state"] == "FINISHED"

    run(env, "load", "--config", str(config_path), "--until-idle", timeout=300)
    output = run(env, "query", "finals", "--config", str(config_path), "--format", "jsonl")
    finals = [json.loads(line) for line in output.splitlines()]
    tokens = [row for row in finals if row["customer_id"] == "restore-co" and row["meter"] == "tokens"]
    assert len(tokens) == 1, finals
    expected_total = sum(n % 7 + 1 for n in range(360)) + 1000 + 20000
    assert (Decimal(tokens[0]["total"]), int(tokens[0]["event_count"])) == (Decimal(expected_total), 362)
    assert status["pipeline"]["window_late_drops"] in (0, None)


def test_a_late_event_for_a_period_final_before_the_restore_is_a_correction(
    tmp_path: Path, stack: Any, stack_settings: StackSettings
) -> None:
    daily = {"timezone": "UTC", "period": "day", "grace": "1h"}
    run_id, config_path, config, env, cluster = one_partition_setup(tmp_path, stack_settings, {"daily-co": daily})
    topic = config.kafka.topics.events

    # 10 March, one event a minute for an hour; then 11 March up to 01:10, so the watermark passes
    # 11 March 01:00 (10 March's end + 1 h grace) and 10 March is final before the stop.
    first_day = [token_event(f"d1-{n:02d}", BASE + timedelta(minutes=n), n + 1, "daily-co") for n in range(60)]
    next_day = [token_event(f"d2-{n:02d}", BASE + timedelta(days=1, minutes=n), 1, "daily-co") for n in range(71)]
    produce(stack_settings.bootstrap_servers, topic, first_day + next_day, tmp_path / "days.jsonl")
    job = f"final-restore-{run_id}"
    submitted = metering(env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", job, "--parallelism", "1")
    wait_until_consumed(config)
    stopped = metering(env, "job", "stop", submitted["job_id"], "--savepoint", *cluster)
    assert stopped["state"] == "FINISHED"
    day_start_ms = int(BASE.timestamp() * 1000)
    finals_before = [json.loads(v) for v in committed_values(stack_settings.bootstrap_servers, config.kafka.topics.finals)]
    assert [f["period_start_ms"] for f in finals_before if f["customer_id"] == "daily-co"] == [day_start_ms]

    resumed = metering(
        env, "job", "submit", *cluster, "--config", str(config_path), "--job-name", job, "--from-savepoint", stopped["savepoint"]
    )
    # Read before the resumed job has any watermark: 10 March is final, so this is a correction.
    late = token_event("late-1", BASE + timedelta(minutes=30, seconds=30), 1000, "daily-co")
    produce(stack_settings.bootstrap_servers, topic, [late], tmp_path / "late.jsonl")
    wait_until_consumed(config)
    drained = metering(env, "job", "stop", resumed["job_id"], "--savepoint", "--drain", *cluster)
    assert drained["state"] == "FINISHED"

    committed = [json.loads(v) for v in committed_values(stack_settings.bootstrap_servers, config.kafka.topics.finals)]
    first_day_finals = [f for f in committed if f["customer_id"] == "daily-co" and f["period_start_ms"] == day_start_ms]
    assert len(first_day_finals) == 1, first_day_finals  # final once, never changed afterwards
    assert (Decimal(first_day_finals[0]["value"]), first_day_finals[0]["event_count"]) == (Decimal(sum(range(1, 61))), 60)
    run(env, "load", "--config", str(config_path), "--until-idle", timeout=300)
    output = run(env, "query", "corrections", "--config", str(config_path), "--format", "jsonl")
    corrections = [json.loads(line) for line in output.splitlines() if json.loads(line)["customer_id"] == "daily-co"]
    assert [(Decimal(c["value"]), c["period_start"]) for c in corrections] == [(Decimal(1000), "2026-03-10T00:00:00.000Z")]
