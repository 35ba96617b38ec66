"""What each stage of the job's per-event path costs on this machine, from the bare Kafka read up.

Puts one backlog of live-shaped events (``bench.pipeline.live_shaped_lines``: 500 customers,
10% retries) in a topic, then reads all of it with bounded jobs (parallelism 1, the job's own
environment: exactly-once checkpoints, object reuse, ``read_committed``) that each stop one stage
further along the job's path, into a blackhole sink:

  read      the Kafka source alone (payload bytes, no parsing): the floor of any Flink job here
  json      + one ``JSON_VALUE`` per record (one JSON parse)
  parse     the job's source (rowtime column and watermarks) + ``sql.parse_view``
  dedup     + dedup and the duplicates count (``jobs.flink.metering_job.define_first_seen``: one keyed
            state per event id, and the Table -> DataStream -> Table round trip of its output),
            ``sql.dedup_view`` and ``sql.duplicates_view``
  window    the job's whole SQL part (``jobs.flink.metering_job.define_views`` and the queries of its
            sinks): + meters, the lateness flag (a second round trip), the dead letters and the
            minute partials (group window, 1-minute steps as a bounded job)
  job       the whole metering job (``jobs.flink.metering_job --until-end``, its own process), writing
            its outputs to Kafka transactionally; the loader is not included

For each it prints the wall time over the backlog (the same stage over an empty topic, i.e. the
start-up, subtracted), the CPU seconds of the Flink JVM (and the Python processes around it) and
of the Kafka broker over the run, and from those the most records per second two cores could
carry at that stage if nothing else ran: 2 / (CPU seconds per record). Variants alternate; the
first round includes JIT warm-up of the in-process stages.

Usage (the stack must be up: ``metering stack up``):
    .venv/bin/python -m bench.stage_floor --events 1000000 [--repeat 2] [--stages read,json,parse,dedup,job]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import descendants, proc_stat  # noqa: E402
from bench.pipeline import (  # noqa: E402
    CAPACITY_CUSTOMERS,
    CAPACITY_NOMINAL_RATE,
    bounded_job_command,
    broker_pid,
    config_for,
    live_shaped_lines,
    send_to_events_topic,
)
from infra.flink import connector_jar  # noqa: E402
from infra.settings import StackSettings  # noqa: E402
from jobs.config import (  # noqa: E402
    Config,
    load_config,
    load_stack,
)
from jobs.flink import sql  # noqa: E402
from jobs.topics import ensure_topics  # noqa: E402

STAGES = ("read", "json", "parse", "dedup", "window", "job")
PARTIAL_SINK = (
    "customer_id STRING, meter STRING, group_key STRING, minute_ms BIGINT, window_end_ms BIGINT, cnt BIGINT, "
    "total STRING, mx STRING, mn STRING, distinct_values STRING, latest_enc STRING, event_id STRING"
)
CORES = 2


class CpuMeter:
    """CPU seconds used by this process and its descendants, and separately by ``broker_pid``.

    Samples ``/proc`` every 0.2 s and keeps each process's last reading, so a process that exits
    during the measurement (a job's JVM) counts up to its last sample.
    """

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        pids = descendants(os.getpid()) | {os.getpid(), self.broker_pid}
        with self._lock:
            for pid in pids:
                if (stat := proc_stat(pid)) is not None:
                    self._last[pid] = stat[1]

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def reading(self) -> dict[int, float]:
        self._sample()
        with self._lock:
            return dict(self._last)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measurement:
    wall_s: float
    flink_cpu_s: float  # this process, its JVM, a job's processes
    broker_cpu_s: float


@contextmanager
def measured(meter: CpuMeter) -> Iterator[list[Measurement]]:
    """Yields a list that holds one Measurement of the block once it ends."""
    out: list[Measurement] = []
    before = meter.reading()
    started = time.monotonic()
    yield out
    wall = time.monotonic() - started
    after = meter.reading()
    broker = after.get(meter.broker_pid, 0.0) - before.get(meter.broker_pid, 0.0)
    flink = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pid != meter.broker_pid)
    out.append(Measurement(wall, flink, broker))


class InProcessStages:
    """The stages before ``job`` as bounded SQL jobs in this process's MiniCluster, with the job's environment."""

    def __init__(self, config: Config, settings: StackSettings, checkpoints: Path) -> None:
        from jobs.flink.metering_job import RunOptions, create_environment

        self.config = config
        # Checkpoints on disk, as the job's: keyed state outgrows the JobManager's 5 MiB in-memory limit.
        options = RunOptions(bounded=True, connector_jar=connector_jar(settings), checkpoint_dir=checkpoints.as_uri())
        _, self.t_env = create_environment(config, options)
        for statement in sql.function_ddl():
            self.t_env.execute_sql(statement)
        self._tables = 0

    def _source(self, topic: str, *, job_columns: bool) -> str:
        from jobs.flink.metering_job import _with, events_columns

        self._tables += 1
        name = f"src_{self._tables}"
        options = {
            "connector": "kafka",
            "topic": topic,
            "properties.bootstrap.servers": self.config.kafka.bootstrap_servers,
            "properties.group.id": f"{self.config.kafka.consumer_group}-{name}",
            "properties.isolation.level": "read_committed",
            "scan.startup.mode": "earliest-offset",
            "scan.bounded.mode": "latest-offset",
            "format": "raw",
        }
        columns = events_columns(self.config) if job_columns else "payload BYTES"
        self.t_env.execute_sql(f"CREATE TEMPORARY TABLE {name} ({columns}) WITH ({_with(options)})")
        return name

    def run(self, stage: str, topic: str) -> None:
        """Push everything in ``topic`` through ``stage`` into blackhole sinks; returns when done."""
        from jobs.flink.metering_job import DEAD_LETTER_COLUMNS, DUPLICATE_COLUMNS, define_first_seen, define_views

        t_env = self.t_env
        meters = self.config.meters
        skew = self.config.pipeline.allowed_future_skew
        inserts: list[tuple[str, str]] = []  # (sink columns, query)
        if stage in ("read", "json"):
            source = self._source(topic, job_columns=False)
            if stage == "read":
                inserts.append(("payload BYTES", f"SELECT payload FROM {source}"))
            else:
                inserts.append(("ts STRING", f"SELECT JSON_VALUE({sql.doc_sql()}, '$.timestamp') AS ts FROM {source}"))
        elif stage == "parse":
            parsed_sql = sql.parse_view(self._source(topic, job_columns=True), meters, skew)
            inserts.append(
                (
                    "reason STRING, event_ms BIGINT, rowtime TIMESTAMP_LTZ(3)",
                    f"SELECT reason, event_ms, rowtime FROM ({parsed_sql})",
                )
            )
        elif stage == "dedup":
            first_seen = define_first_seen(t_env, self.config, self._source(topic, job_columns=True), suffix=f"_{self._tables}")
            inserts.append(
                (
                    "customer_id STRING, event_id STRING, event_ms BIGINT",
                    f"SELECT customer_id, event_id, event_ms FROM ({sql.dedup_view(first_seen)})",
                )
            )
            inserts.append((DUPLICATE_COLUMNS, sql.duplicates_view(first_seen)))
        elif stage == "window":
            views = define_views(t_env, self.config, self._source(topic, job_columns=True), suffix=f"_{self._tables}")
            inserts.append((DEAD_LETTER_COLUMNS, views.dead_letters_sql()))
            inserts.append((DUPLICATE_COLUMNS, views.duplicates_sql()))
            inserts.append((PARTIAL_SINK, views.partials_sql(timedelta(minutes=1))))  # a fresh bounded job's step
        else:
            raise ValueError(stage)
        statements = t_env.create_statement_set()
        for number, (columns, query) in enumerate(inserts):
            sink_name = f"sink_{self._tables}_{number}"
            t_env.execute_sql(f"CREATE TEMPORARY TABLE {sink_name} ({columns}) WITH ('connector' = 'blackhole')")
            statements.add_insert_sql(f"INSERT INTO {sink_name} {query}")
        statements.execute().wait()


def run_job(config_path: Path, settings: StackSettings) -> None:
    """The whole metering job, bounded, in its own process (outputs to Kafka, no loader)."""
    job = subprocess.run(bounded_job_command(config_path, settings), cwd=ROOT, capture_output=True, text=True, check=False)
    if job.returncode != 0:
        raise SystemExit(job.stderr[-3000:])


def fresh_job_config(base: Path, workdir: Path, settings: StackSettings, events_topic: str, tag: str) -> Path:
    """A copy of ``base`` reading ``events_topic`` with its own consumer group and output topics."""
    import yaml

    path = config_for(tag, settings, workdir)
    document = yaml.safe_load(path.read_text())
    document["pipeline"] = yaml.safe_load(base.read_text())["pipeline"]
    document["kafka"]["topics"]["events"] = events_topic
    path.write_text(yaml.safe_dump(document))
    ensure_topics(load_config(path, env={}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="distinct events in the backlog (+10%% retries)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        raise SystemExit(f"--stages: unknown {sorted(unknown)}; choose from {', '.join(STAGES)}")

    settings = load_stack()
    workdir = Path(tempfile.mkdtemp(prefix="stage-floor-", dir=settings.home))
    # The job's batch settings (10 s checkpoints and steps, as the backfill benchmark uses).
    base = config_for("floor", settings, workdir, checkpoint_interval="10s", provisional_interval="10s", parallelism=1)
    config = load_config(base, env={})
    empty = config_for("floor-empty", settings, workdir)
    empty_config = load_config(empty, env={})
    ensure_topics(empty_config)
    end = datetime.now(UTC)
    print(f"producing {args.events:,} live-shaped events (+10% retries) ...", flush=True)
    started = time.monotonic()
    lines = 0

    def counted() -> Iterator[bytes]:
        nonlocal lines
        for line in live_shaped_lines(args.events, CAPACITY_CUSTOMERS, CAPACITY_NOMINAL_RATE, end):
            lines += 1
            yield line

    send_to_events_topic(config, settings, counted())
    print(f"{lines:,} records in {config.kafka.topics.events} ({time.monotonic() - started:.0f} s)", flush=True)

    meter = CpuMeter(broker_pid(settings))
    in_process = InProcessStages(config, settings, workdir / "checkpoints") if set(stages) - {"job"} else None
    runs: dict[str, Callable[[str], None]] = {}
    job_runs = 0
    for stage in stages:
        if stage == "job":

            def run_job_stage(topic: str) -> None:
                nonlocal job_runs
                job_runs += 1  # every run: its own consumer group and output topics
                run_job(fresh_job_config(base, workdir, settings, topic, f"job-{job_runs}"), settings)

            runs[stage] = run_job_stage
        else:
            assert in_process is not None
            runs[stage] = functools.partial(in_process.run, stage)

    print(
        f"\n{'round':>5} {'stage':6} {'wall s':>7} {'start s':>7} {'records/s':>10} "
        f"{'flink µs/rec':>12} {'broker µs/rec':>13} {'2-core ceiling':>14}",
        flush=True,
    )
    for round_number in range(1, args.repeat + 1):
        for stage, run in runs.items():
            with measured(meter) as start_up:
                run(empty_config.kafka.topics.events)
            with measured(meter) as full:
                run(config.kafka.topics.events)
            base_m, m = start_up[0], full[0]
            work_s = m.wall_s - base_m.wall_s
            flink_us = max(m.flink_cpu_s - base_m.flink_cpu_s, 0.0) / lines * 1e6
            broker_us = max(m.broker_cpu_s - base_m.broker_cpu_s, 0.0) / lines * 1e6
            ceiling = CORES * 1e6 / (flink_us + broker_us) if flink_us + broker_us > 0 else float("inf")
            # A stage can finish its records faster than its own start-up varies (the bare read):
            # then no rate can be told apart from the start-up.
            rate = f"{lines / work_s:10,.0f}" if work_s > 0.5 else f"{'< start-up':>10}"
            print(
                f"{round_number:>5} {stage:6} {m.wall_s:7.1f} {base_m.wall_s:7.1f} {rate} "
                f"{flink_us:12.1f} {broker_us:13.1f} {ceiling:14,.0f}",
                flush=True,
            )
    meter.close()
    print(
        f"\n{lines:,} records, parallelism 1, MiniCluster; machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. records/s excludes start-up "
        "(the same stage over an empty topic); µs/rec are CPU per record beyond start-up; the ceiling is "
        f"{CORES} cores / (flink + broker CPU per record).",
        flush=True,
    )


if __name__ == "__main__":
    main()
