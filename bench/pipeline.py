"""Benchmark the pipeline end to end on the local stack; prints figures and appends them to docs/benchmarks.md.

Two measurements, exactly-once on (EXACTLY_ONCE checkpoints, transactional sinks, read_committed):

1. backfill throughput: N events already in the topic -> bounded job -> loader until idle. Reported
   as events/s from job start until the last aggregate is queryable in ClickHouse.
2. live latency: the job and the loader run continuously while a producer sends events stamped
   with the wall clock at a fixed rate. For every aggregate segment loaded, the delay between the
   end of its window step (event time = send time) and the moment ClickHouse stored it is an
   upper bound of "the last event of that step became visible"; the first event of a step waits at
   most one step longer. p50/p99 of both are reported.

Usage (the stack must be up: `metering stack up`):
    .venv/bin/python bench/pipeline.py --events 300000 --rate 2000 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clickhouse.client import open_storage  # noqa: E402
from clickhouse.migrate import migrate  # noqa: E402
from infra.flink import connector_jar  # noqa: E402
from infra.settings import StackSettings  # noqa: E402
from jobs.cli import ensure_topics  # noqa: E402
from jobs.config import Config, load_config  # noqa: E402
from jobs.demo import demo_document, generate  # noqa: E402
from jobs.loader import Loader  # noqa: E402
from jobs.produce import make_producer, produce_lines  # noqa: E402


def config_for(tag: str, settings: StackSettings, workdir: Path, **pipeline: object) -> Path:
    """A demo configuration with its own topics and database, ``pipeline`` settings applied; returns its path."""
    document = demo_document(f"bench-{tag}-{uuid.uuid4().hex[:6]}", settings.bootstrap_servers, workdir / "chdb")
    document["pipeline"].update(pipeline)
    path = workdir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def fill_events_topic(config: Config, settings: StackSettings, data: Path, events: int) -> None:
    """Generate ``events`` demo events (plus duplicates, malformed lines) into ``data`` and send them to the events topic."""
    generate(data, events, seed=3)
    ensure_topics(config)
    producer = make_producer(settings.bootstrap_servers)
    with data.open("rb") as lines:
        produce_lines(lines, producer=producer, topic=config.kafka.topics.events, validate=False)
    producer.close()


def bounded_job_command(config_path: Path, settings: StackSettings) -> list[str]:
    """The metering job over what is in the topic (``--until-end``), on the local MiniCluster."""
    job = [sys.executable, "-m", "jobs.metering_job", "--config", str(config_path), "--until-end"]
    return [*job, "--connector-jar", str(connector_jar(settings))]


def backfill(events: int, settings: StackSettings, workdir: Path) -> dict[str, float]:
    path = config_for("backfill", settings, workdir, checkpoint_interval="10s", provisional_interval="10s")
    config = load_config(path, env={})
    data = workdir / "backfill.jsonl"
    fill_events_topic(config, settings, data, events)
    with open_storage(config.storage) as storage:
        migrate(storage)
    lines_total = sum(1 for _ in data.open())
    started = time.monotonic()
    job = subprocess.run(bounded_job_command(path, settings), cwd=ROOT, capture_output=True, text=True, check=False)
    if job.returncode != 0:
        raise SystemExit(job.stderr[-3000:])
    job_done = time.monotonic()
    with open_storage(config.storage) as storage:
        stats = Loader(config, storage, group_id=f"{config.kafka.consumer_group}-loader", load_raw=False).run(
            until_idle=True, idle_s=1
        )
    done = time.monotonic()
    return {
        "lines": lines_total,
        "job_s": job_done - started,
        "load_s": done - job_done,
        "total_s": done - started,
        "events_per_s": lines_total / (done - started),
        "segments": stats.rows["aggregate_segments"],
    }


def live(rate: int, seconds: int, settings: StackSettings, workdir: Path) -> dict[str, float]:
    path = config_for(
        "live",
        settings,
        workdir,
        checkpoint_interval="1s",
        provisional_interval="1s",
        max_out_of_orderness="1s",
        idle_timeout="2s",
    )
    config = load_config(path, env={})
    ensure_topics(config)
    with open_storage(config.storage) as storage:
        migrate(storage)
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.metering_job", "--config", str(path), "--connector-jar", str(connector_jar(settings))],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "live-job.log").open("w"),
        start_new_session=True,
    )
    stop = threading.Event()
    try:
        time.sleep(15)  # job start-up
        with open_storage(config.storage) as storage:
            loader = Loader(config, storage, group_id=f"{config.kafka.consumer_group}-loader", load_raw=False)
            thread = threading.Thread(target=lambda: loader.run(until_idle=False), daemon=True)
            thread.start()
            producer = make_producer(settings.bootstrap_servers, linger_ms=5)
            customers = ["acme", "globex", "initech", "bharat-ai"]
            sent = 0
            begin = time.monotonic()
            while time.monotonic() - begin < seconds:
                target = int((time.monotonic() - begin) * rate)
                while sent < target:
                    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                    event = {
                        "event_id": f"l{sent}",
                        "customer_id": customers[sent % 4],
                        "event_type": "tokens",
                        "timestamp": now,
                        "quantity": "1",
                        "properties": {"model": "small-1"},
                    }
                    producer.send(config.kafka.topics.events, key=event["customer_id"].encode(), value=json.dumps(event).encode())
                    sent += 1
                time.sleep(0.005)
            producer.flush()
            producer.close()
            time.sleep(10)  # let the last steps close and load
            rows = storage.query_rows(
                "SELECT toUnixTimestamp64Milli(loaded_at) - version, version FROM aggregate_segments WHERE segment = 'on_time'"
            )
    finally:
        stop.set()
        os.killpg(job.pid, 15)
        job.wait(timeout=60)
    step_ms = 1000
    delays = sorted(d for d, _ in rows)
    if not delays:
        raise SystemExit("no aggregates became visible; see " + str(workdir / "live-job.log"))

    def pct(values: list[int], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] / 1000

    return {
        "rate": rate,
        "seconds": seconds,
        "segments": len(delays),
        "last_event_p50_s": pct(delays, 0.50),
        "last_event_p99_s": pct(delays, 0.99),
        "first_event_p50_s": pct([d + step_ms for d in delays], 0.50),
        "first_event_p99_s": pct([d + step_ms for d in delays], 0.99),
        "mean_s": statistics.mean(delays) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".metering" / "bench")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument("--backfill-only", action="store_true", help="skip the live latency run (implies --no-record)")
    args = parser.parse_args()
    settings = StackSettings.from_env()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result_backfill = backfill(args.events, settings, args.workdir)
    print("backfill:", json.dumps(result_backfill))
    if args.backfill_only:
        return
    result_live = live(args.rate, args.seconds, settings, args.workdir)
    print("live:", json.dumps(result_live))
    if not args.no_record:
        record(args, result_backfill, result_live)


def record(args: argparse.Namespace, b: dict[str, float], live_result: dict[str, float]) -> None:
    lines = [
        f"\n### Pipeline, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `.venv/bin/python bench/pipeline.py --events {args.events} --rate {args.rate} --seconds {args.seconds}`; "
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; exactly-once on.",
        "",
        "| measurement | figure |",
        "| --- | --- |",
        f"| backfill: lines (events + duplicates + malformed) | {b['lines']:,.0f} |",
        f"| backfill: job (bounded, MiniCluster, parallelism 1) | {b['job_s']:.1f} s |",
        f"| backfill: loader until idle | {b['load_s']:.1f} s |",
        f"| **backfill throughput, topic → queryable in ClickHouse** | **{b['events_per_s']:,.0f} events/s** |",
        f"| live: rate / duration | {live_result['rate']:,.0f} events/s for {live_result['seconds']:.0f} s |",
        f"| live: step end → visible, p50 / p99 | {live_result['last_event_p50_s']:.2f} s / "
        f"{live_result['last_event_p99_s']:.2f} s |",
        f"| **live: event → visible (first event of a step), p50 / p99** | **{live_result['first_event_p50_s']:.2f} s / "
        f"{live_result['first_event_p99_s']:.2f} s** |",
    ]
    with (ROOT / "docs" / "benchmarks.md").open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
