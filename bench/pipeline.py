"""Benchmark the pipeline end to end on the local stack; prints its figures and keeps them in .metering/bench.

Three measurements, exactly-once on (EXACTLY_ONCE checkpoints, transactional sinks, read_committed):

1. backfill throughput: N demo events (84 h of event time: sparse per key) already in the topic ->
   bounded job -> loader until idle. Reported as events/s from job start until the last aggregate
   is queryable in ClickHouse. This is the historical-replay case.
2. sustained capacity: a backlog of live-shaped events (``--customers`` customers, event time
   spread at ``--nominal-rate`` events/s and ending now, 10% retries) is read by the *live* job
   (provisional steps, checkpoints) while the loader runs. Visible events are counted in ClickHouse
   after every loader batch; the rate from 10% of the backlog visible to the last step before all
   of it is what the pipeline sustains once it runs, start-up and the backlog's end excluded. The loader's heartbeats (every
   ``pipeline.heartbeat_interval``, as ``metering load`` sends them) move the watermark past the
   backlog's last windows. ``--state-backend`` picks the job's state backend (default hashmap); the
   size of its last checkpoint is reported (whole state for hashmap; own and shared files for
   rocksdb's incremental checkpoints).
3. live latency: the job and the loader run continuously while a producer sends events stamped with
   the wall clock at a fixed rate. Once the first segment is loaded and 15 s more have passed,
   every 100th event belongs to a probe customer of its own, so its minute segment's ``loaded_at``
   in ClickHouse is exactly when that event became queryable; p50/p95/p99 of (loaded_at - send
   time) over the probes are reported. bench/compare.py's latency mode runs the same measurement
   (``Pacer``, ``measure_live``, ``project_live``) for the project and its peers.

Usage (the stack must be up: `metering stack up`):
    .venv/bin/python bench/pipeline.py --events 300000 --capacity-events 1500000 --rate 2000 --seconds 60
    (add `--state-backend rocksdb` to measure the job on RocksDB)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import (  # noqa: E402
    cpu_seconds,
    descendants,
    first_java,
    machine_cpu_seconds,
    proc_stat,
    process_cpu_seconds,
    thread_cpu,
)
from clickhouse.client import open_storage  # noqa: E402
from clickhouse.migrate import migrate  # noqa: E402
from infra.flink import STATE_BACKENDS, connector_jar  # noqa: E402
from infra.settings import StackSettings  # noqa: E402
from jobs.config import (  # noqa: E402
    Config,
    load_config,
    load_stack,
)
from jobs.demo import demo_document, generate, random_event  # noqa: E402
from jobs.loader.kafka_consumer import LoaderConsumer  # noqa: E402
from jobs.loader.loader import Loader  # noqa: E402
from jobs.produce import make_producer, produce_lines  # noqa: E402
from jobs.topics import ensure_topics  # noqa: E402
from udfs.periods import rfc3339_millis  # noqa: E402


def config_for(
    tag: str, settings: StackSettings, workdir: Path, *, edit: Callable[[dict[str, Any]], None] | None = None, **pipeline: object
) -> Path:
    """A demo configuration with its own topics and database, ``pipeline`` settings applied; returns its path.

    ``edit`` changes the document before it is written (bench/compare.py: its meters, customers, events topic)."""
    document = demo_document(f"bench-{tag}-{uuid.uuid4().hex[:6]}", settings.bootstrap_servers, workdir / "chdb")
    document["pipeline"].update(pipeline)
    if edit is not None:
        edit(document)
    path = workdir / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


#: The live-shaped backlog's defaults (``--customers``, ``--nominal-rate``; profile_job uses them too).
CAPACITY_CUSTOMERS = 500
CAPACITY_NOMINAL_RATE = 5000


def send_to_events_topic(config: Config, settings: StackSettings, lines: Iterable[bytes]) -> None:
    """Create the pipeline's topics and send ``lines`` as they are (no validation) to the events topic."""
    ensure_topics(config)
    producer = make_producer(settings.bootstrap_servers)
    produce_lines(lines, producer=producer, topic=config.kafka.topics.events, validate=False)
    producer.close()


def fill_events_topic(config: Config, settings: StackSettings, data: Path, events: int) -> None:
    """Generate ``events`` demo events (plus duplicates, malformed lines) into ``data`` and send them to the events topic."""
    generate(data, events, seed=3)
    with data.open("rb") as lines:
        send_to_events_topic(config, settings, lines)


def job_command(config_path: Path, settings: StackSettings, *, state_backend: str | None = None) -> list[str]:
    """The metering job (unbounded) on the local MiniCluster, on ``state_backend`` when given."""
    job = [sys.executable, "-m", "jobs.flink.metering_job", "--config", str(config_path)]
    job += ["--connector-jar", str(connector_jar(settings)), "--job-name", BENCH_JOB_NAME]
    return job + (["--state-backend", state_backend] if state_backend else [])


def bounded_job_command(config_path: Path, settings: StackSettings, *, state_backend: str | None = None) -> list[str]:
    """The metering job over what is in the topic (``--until-end``), on the local MiniCluster."""
    return [*job_command(config_path, settings, state_backend=state_backend), "--until-end"]


#: The benchmark's jobs checkpoint under this name (``<checkpoint dir>/metering-bench/<job id>``).
BENCH_JOB_NAME = "metering-bench"


def newest_checkpoint_bytes(settings: StackSettings) -> dict[str, float]:
    """Size of the newest benchmark job's retained checkpoint: its own files, and the shared ones.

    With ``hashmap`` a checkpoint is the whole state (``own``); with ``rocksdb`` (incremental) most of
    it is SST files in ``shared``, uploaded once and referenced by later checkpoints."""
    jobs = [path for path in (settings.checkpoint_dir / BENCH_JOB_NAME).glob("*") if path.is_dir()]
    if not jobs:
        return {"checkpoint_own_bytes": math.nan, "checkpoint_shared_bytes": math.nan}
    newest = max(jobs, key=lambda path: path.stat().st_mtime)
    checkpoints = sorted(newest.glob("chk-*"), key=lambda path: int(path.name.removeprefix("chk-")))

    def size(folder: Path | None) -> float:
        return float(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())) if folder else math.nan

    return {
        "checkpoint_own_bytes": size(checkpoints[-1] if checkpoints else None),
        "checkpoint_shared_bytes": size(newest / "shared"),
    }


def backfill(
    events: int, settings: StackSettings, workdir: Path, parallelism: int = 1, state_backend: str | None = None
) -> dict[str, float]:
    path = config_for(
        "backfill", settings, workdir, checkpoint_interval="10s", provisional_interval="10s", parallelism=parallelism
    )
    config = load_config(path, env={})
    data = workdir / "backfill.jsonl"
    fill_events_topic(config, settings, data, events)
    with open_storage(config.storage) as storage:
        migrate(storage)
    lines_total = sum(1 for _ in data.open())
    started = time.monotonic()
    job = subprocess.run(
        bounded_job_command(path, settings, state_backend=state_backend), cwd=ROOT, capture_output=True, text=True, check=False
    )
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


class LiveSettings(TypedDict):
    """The pipeline settings of the live measurement (a TypedDict: ``**LIVE_SETTINGS`` names only settings)."""

    checkpoint_interval: str
    provisional_interval: str
    max_out_of_orderness: str
    idle_timeout: str
    heartbeat_interval: str


LIVE_SETTINGS: LiveSettings = {
    "checkpoint_interval": "1s",
    "provisional_interval": "1s",
    "max_out_of_orderness": "1s",
    "idle_timeout": "2s",
    "heartbeat_interval": "1s",
}
#: One meter per event type of the demo meters: the sum of their event counts is the number of
#: distinct valid events (``active_users`` counts ``api_call`` events a second time).
COUNTED_METERS = ("api_calls", "tokens", "gpu_seconds", "storage_peak_bytes", "credits")


@contextmanager
def live_job(
    path: Path, settings: StackSettings, log: Path, *, state_backend: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The metering job running live (unbounded) on the MiniCluster; stopped on exit."""
    job = subprocess.Popen(
        job_command(path, settings, state_backend=state_backend),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )
    try:
        yield job
    finally:
        os.killpg(job.pid, 15)
        job.wait(timeout=60)


def live_loader(config: Config, storage: Any, *, load_raw: bool) -> Loader:
    """The loader as `metering load` runs beside a live job: unbounded, sending heartbeats."""
    return Loader(
        config,
        storage,
        group_id=f"{config.kafka.consumer_group}-loader",
        load_raw=load_raw,
        heartbeat_interval=config.pipeline.heartbeat_interval,
    )


def broker_pid(settings: StackSettings) -> int:
    pid_file = settings.run_dir / "kafka.pid"
    if not pid_file.exists():
        raise SystemExit("no Kafka broker pid file: start the stack first (`metering stack up`)")
    return int(pid_file.read_text().split()[0])


def live_shaped_lines(events: int, customers: int, nominal_rate: int, end: datetime, seed: int = 11) -> Iterator[bytes]:
    """``events`` distinct demo events of ``customers`` customers, event time spread at
    ``nominal_rate`` per second and ending at ``end``, each followed by a retry of a recent event
    with probability 0.1 (the retries must not be counted)."""
    rng = random.Random(seed)
    names = [f"cap-{n:05d}" for n in range(customers)]
    recent: list[bytes] = []
    for n in range(events):
        moment = end - timedelta(seconds=(events - n) / nominal_rate)
        line = json.dumps(random_event(rng, n, rng.choice(names), moment), separators=(",", ":")).encode()
        yield line
        recent.append(line)
        if len(recent) > 500:
            recent.pop(0)
        if rng.random() < 0.10:
            yield rng.choice(recent)


def visible_events(storage: Any, counted_meters: tuple[str, ...] = COUNTED_METERS) -> int:
    """Distinct valid events whose minute is queryable (current versions of the counted meters)."""
    meters = ", ".join(f"'{m}'" for m in counted_meters)
    rows = storage.query_rows(f"SELECT sum(event_count) FROM aggregate_segments FINAL WHERE meter IN ({meters})")
    return int(rows[0][0] or 0)


def capacity(
    events: int,
    customers: int,
    nominal_rate: int,
    settings: StackSettings,
    workdir: Path,
    *,
    load_raw: bool = False,
    parallelism: int = 1,
    loader_max_batch_delay: str | None = None,
    state_backend: str | None = None,
    timeout_s: float = 1800,
) -> dict[str, float | str]:
    """The rate at which the live job plus the loader make a backlog of live-shaped events queryable.

    ``load_raw``: the loader also copies every record of the events topic into ``raw_events``, as
    ``metering load`` does by default (the same consumer, so it delays the aggregates)."""
    # The configuration defaults (10 s checkpoints and provisional steps, 30 s out-of-orderness).
    path = config_for(
        "capacity",
        settings,
        workdir,
        checkpoint_interval="10s",
        provisional_interval="10s",
        max_out_of_orderness="30s",
        parallelism=parallelism,
        # As a YAML scalar, like an environment override: `0` is the number zero, `1s` a string.
        **({"loader_max_batch_delay": yaml.safe_load(loader_max_batch_delay)} if loader_max_batch_delay else {}),
    )
    config = load_config(path, env={})
    send_to_events_topic(config, settings, live_shaped_lines(events, customers, nominal_rate, datetime.now(UTC)))
    run = capacity_run(
        path, config, events, settings, workdir, load_raw=load_raw, state_backend=state_backend, timeout_s=timeout_s
    )
    return {
        "events": events,
        "customers": customers,
        "nominal_rate": nominal_rate,
        "load_raw": load_raw,
        "parallelism": parallelism,
        "loader_max_batch_delay_s": config.pipeline.loader_max_batch_delay.total_seconds(),
        "state_backend": state_backend or "hashmap",
        **run.figures,
    }


@dataclasses.dataclass
class CapacityRun:
    """What :func:`capacity_run` saw: the samples, the figures derived from them, the loader's counts."""

    samples: list[CapacitySample]
    figures: dict[str, float]
    loader_rows: dict[str, int]


def capacity_run(
    path: Path,
    config: Config,
    events: int,
    settings: StackSettings,
    workdir: Path,
    *,
    load_raw: bool = False,
    state_backend: str | None = None,
    timeout_s: float = 1800,
    counted_meters: tuple[str, ...] = COUNTED_METERS,
) -> CapacityRun:
    """Run the live job and the loader over a filled events topic until ``events`` distinct events are queryable.

    ``counted_meters``: one meter per event type, whose event counts add up to the distinct valid events."""
    with open_storage(config.storage) as storage:
        migrate(storage)
    samples: list[CapacitySample] = []
    broker = broker_pid(settings)
    query_s = 0.0  # CPU of the benchmark's own counting queries, run in the loader's thread

    started = time.monotonic()
    job_log = workdir / "capacity-job.log"
    with (
        live_job(path, settings, job_log, state_backend=state_backend) as job,
        open_storage(config.storage) as storage,
    ):
        loader = live_loader(config, storage, load_raw=load_raw)
        last_count = 0.0

        def on_batch(_: Any) -> None:
            nonlocal last_count, query_s
            now = time.monotonic()
            if now - last_count < 1.0:
                return
            last_count = now
            before = process_cpu_seconds()
            visible = visible_events(storage, counted_meters)
            query_s += process_cpu_seconds() - before
            samples.append(CapacitySample.take(now - started, visible, job.pid, broker, query_s))
            if visible > events:  # the benchmark doubles as an exactly-once check
                raise SystemExit(f"capacity: {visible:,} events visible, but the backlog holds {events:,} distinct ones")
            if visible == events:
                raise _Done
            if now - started > timeout_s:
                raise SystemExit(f"capacity: {visible:,} of {events:,} events visible after {timeout_s:.0f} s; see {workdir}")

        with suppress(_Done):
            loader.run(until_idle=False, on_batch=on_batch)
        print("capacity: rows loaded per table:", json.dumps(dict(loader.stats.rows)), flush=True)

    with (workdir / "capacity-samples.jsonl").open("w") as out:  # the curve, for a closer look
        out.writelines(json.dumps(dataclasses.asdict(sample)) + "\n" for sample in samples)

    first = next(sample.at_s for sample in samples if sample.visible > 0)
    figures = {
        "first_visible_s": first,
        "all_visible_s": samples[-1].at_s,
        "loader_rows": sum(loader.stats.rows.values()),
        "loader_batches": loader.stats.batches,
        **newest_checkpoint_bytes(settings),
        **capacity_rates(samples, events),
    }
    return CapacityRun(samples, figures, dict(loader.stats.rows))


def capacity_rates(samples: list[CapacitySample], events: int) -> dict[str, float]:
    """The sustained rate from 10% of ``events`` visible to the last step before the end, its halves, and the CPU split.

    Visibility advances in steps, one per checkpoint (the job's transactions commit then), so the
    samples that matter are the first at or past each step. The range ends at the last step below
    the whole backlog: the final step is different in kind. Only the loader's heartbeats, read after
    the backlog, move the watermark past its last windows, so that step comes when the job has
    finished reading, at the next checkpoint, and releases everything still behind the watermark
    at once; the machine is mostly idle while it waits (docs/benchmarks.md, "Where the capacity
    runs' CPU goes"). Without a step between 10% and the end the range ends at 90%. The halves
    split at the step in the range nearest its middle; with none they are NaN.
    """

    def reached(fraction: float) -> CapacitySample:
        return next(sample for sample in samples if sample.visible >= fraction * events)

    s10 = reached(0.1)
    below_end = max((sample.visible for sample in samples if sample.visible < events), default=0)
    end = next(sample for sample in samples if sample.visible == below_end) if below_end > s10.visible else reached(0.9)
    middle = (s10.visible + end.visible) / 2
    between = [sample for sample in samples if s10.visible < sample.visible < end.visible]
    split = min(between, key=lambda sample: abs(sample.visible - middle), default=None)
    return {
        "sustained_events_per_s": s10.rate_to(end),
        "end_fraction": end.visible / events,
        # The two halves apart: a fresh JVM compiles the job's code during the first (JIT, tens of
        # seconds of CPU per job start, docs/benchmarks.md), so a rising rate means warm-up.
        "first_half_events_per_s": s10.rate_to(split) if split else math.nan,
        "second_half_events_per_s": split.rate_to(end) if split else math.nan,
        "split_at_fraction": split.visible / events if split else math.nan,
        # Where the two cores went over the range, in CPU microseconds per visible event.
        **{f"cpu_us_per_event_{part}": value for part, value in s10.cpu_us_per_event_to(end).items()},
        # The job's JVM alone, by thread: which stage of the job the CPU went to.
        **{f"jvm_us_per_event_{group}": value for group, value in s10.jvm_us_per_event_to(end).items()},
    }


CPU_PARTS = tuple(f"cpu_us_per_event_{part}" for part in ("job", "broker", "loader", "count_queries", "other", "idle"))

#: The job JVM's threads by what they do, told apart by the kernel's thread name (the first 15
#: bytes of the Java name; the task names come from the plan jobs/flink/metering_job.py builds). A thread
#: that matches none is ``other`` (Kafka producers' network threads, Flink's own, the finalize-key
#: chain, the dead-letter writers).
JVM_THREAD_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("source", ("Source: events", "Source Data Fet")),  # Kafka read, JSON parse, validation
    ("dedup", ("ProcessTableFun",)),  # dedup and the per-meter rows behind it (one chain)
    ("window", ("GroupWindowAggr",)),  # the event-time step partials
    ("finalize", ("finalize period",)),  # finalization (Python, thread mode) and the sinks' writers
    ("checkpoint", ("AsyncOperation",)),  # asynchronous part of state snapshots
    ("rocksdb", ("rocksdb",)),  # RocksDB's flushes and compactions
    ("gc", ("GC Thread", "G1 ", "VM Thread")),
    ("jit", ("C1 CompilerThre", "C2 CompilerThre")),
)
JVM_PARTS = (*(group for group, _ in JVM_THREAD_GROUPS), "other")


def jvm_thread_group(name: str) -> str:
    """Which of :data:`JVM_PARTS` a job JVM thread (kernel name) belongs to."""
    return next((group for group, prefixes in JVM_THREAD_GROUPS if name.startswith(prefixes)), "other")


@dataclasses.dataclass(frozen=True)
class CapacitySample:
    """Events visible at ``at_s`` seconds after the job started, and the CPU seconds used by then."""

    at_s: float
    visible: int
    cpu_s: dict[str, float]
    #: The job JVM's threads: thread id -> (kernel name, CPU seconds so far).
    jvm_threads: dict[int, tuple[str, float]] = dataclasses.field(default_factory=dict)

    @classmethod
    def take(cls, at_s: float, visible: int, job_pid: int, broker_pid: int, query_s: float) -> CapacitySample:
        tree = descendants(job_pid) | {job_pid}  # one scan of /proc for the job's CPU and its JVM
        job = cpu_seconds(tree)
        jvm = first_java(tree)
        broker_stat = proc_stat(broker_pid)
        broker = broker_stat[1] if broker_stat else 0.0
        this = process_cpu_seconds()
        busy, idle = machine_cpu_seconds()
        return cls(
            at_s,
            visible,
            {
                "job": job,  # the job's Python process, its MiniCluster JVM and Python workers
                "broker": broker,
                # This process: the loader (consume, decode, insert into chDB, merges) and,
                # apart, the benchmark's counting queries (the process's CPU while one ran).
                "loader": this - query_s,
                "count_queries": query_s,
                "other": busy - job - broker - this,  # everything else on the machine
                "idle": idle,
            },
            thread_cpu(jvm) if jvm is not None else {},
        )

    def rate_to(self, later: CapacitySample) -> float:
        """Events per second from this sample to ``later``; NaN when they are one (a backlog visible in one step)."""
        if later.at_s <= self.at_s:
            return math.nan
        return (later.visible - self.visible) / (later.at_s - self.at_s)

    def cpu_us_per_event_to(self, later: CapacitySample) -> dict[str, float]:
        """CPU µs per event visible in between, by part; NaN when none became visible (one step)."""
        events = later.visible - self.visible
        if events <= 0:
            return dict.fromkeys(self.cpu_s, math.nan)
        return {part: (later.cpu_s[part] - self.cpu_s[part]) / events * 1e6 for part in self.cpu_s}

    def jvm_us_per_event_to(self, later: CapacitySample) -> dict[str, float]:
        """The job JVM's CPU per visible event by :data:`JVM_PARTS`; a thread born since counts from zero.

        A thread that ended in between (the JVM stops idle compiler threads) takes its CPU with it."""
        events = later.visible - self.visible
        if events <= 0:
            return dict.fromkeys(JVM_PARTS, math.nan)
        split = dict.fromkeys(JVM_PARTS, 0.0)
        for tid, (name, seconds) in later.jvm_threads.items():
            before = self.jvm_threads.get(tid)
            split[jvm_thread_group(name)] += seconds - (before[1] if before and before[0] == name else 0.0)
        return {group: seconds / events * 1e6 for group, seconds in split.items()}


class _Done(Exception):
    """Raised from the loader's batch callback once the whole backlog is visible."""


#: A probe's customer id: ``probe-<n>``, the one event of a customer of its own.
PROBE_PREFIX = "probe-"


class Pacer:
    """Sends live events at ``rate`` per second, each stamped with the wall clock at sending (event time = now).

    While :attr:`probing` is on, every ``probe_every``-th event is a **probe**: the only event of a
    customer of its own (``probe-<n>``), so the first row of that customer anywhere downstream (an
    aggregate segment in ClickHouse, a minute sum in a peer's output topic) is exactly that event
    becoming visible. Its send time (epoch seconds) is kept in :attr:`sent_at`.

    ``send(customer, line, partition)`` sends one line keyed by its customer (``partition`` None:
    the key's partition); ``event(n, customer, moment)`` is the line of event ``n``;
    ``customer(n)`` the customer (and partition) of an ordinary event ``n``. A probe goes to
    partition ``probe index % partitions`` when ``partitions`` is given (every partition sees probes).
    """

    def __init__(
        self,
        send: Callable[[str, bytes, int | None], None],
        rate: int,
        event: Callable[[int, str, datetime], bytes],
        customer: Callable[[int], tuple[str, int | None]],
        *,
        partitions: int | None = None,
        probe_every: int = 100,
    ) -> None:
        self.send, self.rate, self.event, self.customer = send, rate, event, customer
        self.partitions, self.probe_every = partitions, probe_every
        self.probing = False
        self.sent = 0
        self.sent_at: dict[str, float] = {}
        self.began = time.monotonic()

    def send_due(self) -> None:
        """Send the events due by now at the rate since the start (a burst when the sender fell behind)."""
        target = int((time.monotonic() - self.began) * self.rate)
        while self.sent < target:
            n = self.sent
            now = time.time()
            if self.probing and n % self.probe_every == 0:
                customer = f"{PROBE_PREFIX}{n}"
                partition = None if self.partitions is None else (n // self.probe_every) % self.partitions
                self.sent_at[customer] = now
            else:
                customer, partition = self.customer(n)
            self.send(customer, self.event(n, customer, datetime.fromtimestamp(now, UTC)), partition)
            self.sent += 1

    def sent_by(self, seconds_ago: float) -> int:
        """How many events had been sent ``seconds_ago`` (at least 1): a variant that has read as many is caught up."""
        return max(1, int((time.monotonic() - self.began - seconds_ago) * self.rate))


@dataclasses.dataclass
class LiveRun:
    """What :func:`measure_live` saw: probes' send and visible times (epoch s), the rate sent, the phases."""

    rate: int
    sent_at: dict[str, float]
    seen: dict[str, float]
    #: Events sent per second over the probe phase (below ``rate`` when the sender fell behind).
    sent_rate: float = math.nan
    #: From the start of the traffic until the variant was ready (its first output or committed offset).
    startup_s: float = math.nan
    error: str = ""


def measure_live(
    pacer: Pacer,
    *,
    ready: Callable[[], bool],
    visible: Callable[[], dict[str, float]],
    failed: Callable[[], str],
    warmup_s: float,
    seconds: float,
    drain_s: float,
    startup_timeout_s: float = 300.0,
) -> LiveRun:
    """Send live traffic through four phases, each bounded in time, and collect when each probe became visible.

    1. start-up: ordinary events until ``ready()`` (the variant is up, its output moves, and it
       has caught up with the traffic: what it read during its start must not delay the probes),
       at most ``startup_timeout_s``;
    2. warm-up: ``warmup_s`` more of the same traffic (JIT, first checkpoints);
    3. probes: ``seconds`` of the same traffic, every ``probe_every``-th event a probe;
    4. drain: the same traffic without probes until every probe is visible, at most ``drain_s``
       (the traffic goes on so that event time keeps moving: windows close, watermarks advance).

    ``visible()``: probe customer -> when it became visible (epoch s); ``failed()``: why the
    variant cannot go on ("" while it runs). ``ready`` and ``visible`` are asked twice a second.
    """
    run = LiveRun(pacer.rate, pacer.sent_at, {})
    began = pacer.began = time.monotonic()
    phase, phase_began, sent_before, last_check = "start-up", began, 0, 0.0
    while True:
        pacer.send_due()
        now = time.monotonic()
        if now - last_check >= 0.5:
            last_check = now
            if problem := failed():
                run.error = f"{phase}: {problem}"
                break
            if phase == "start-up" and ready():
                run.startup_s = now - began
                phase, phase_began = "warm-up", now
            elif phase == "start-up" and now - began > startup_timeout_s:
                run.error = f"not ready after {startup_timeout_s:.0f} s"
                break
            elif phase == "warm-up" and now - phase_began >= warmup_s:
                phase, phase_began, sent_before = "probes", now, pacer.sent
                pacer.probing = True
            elif phase == "probes" and now - phase_began >= seconds:
                run.sent_rate = (pacer.sent - sent_before) / (now - phase_began)
                pacer.probing = False
                phase, phase_began = "drain", now
            elif phase == "drain":
                run.seen = visible()
                if set(run.sent_at) <= set(run.seen) or now - phase_began >= drain_s:
                    break
        time.sleep(0.005)
    run.seen = {customer: at for customer, at in visible().items() if customer in run.sent_at}
    return run


def percentile(values: list[float], p: float) -> float:
    """The ``p`` quantile of sorted ``values``: the value at index ``int(p * n)`` (the highest for p = 1)."""
    return values[min(len(values) - 1, int(p * len(values)))]


def latency_figures(run: LiveRun) -> dict[str, float]:
    """p50 / p95 / p99 / max of event sent -> visible over the probes; a probe never seen counts as infinitely late.

    Beside them, ``p99_past_minute_s``: the p99 of visible - the end of the probe's UTC minute (its
    event time is its send time), negative when it was visible before its minute ended. A variant
    that publishes a minute only once it has closed waits for the minute's end whatever it does;
    this is what it takes after that."""
    delays = sorted(run.seen[customer] - sent for customer, sent in run.sent_at.items() if customer in run.seen)
    seen = len(delays)
    delays += [math.inf] * (len(run.sent_at) - seen)
    past_minute = sorted(run.seen.get(customer, math.inf) - (sent // 60 + 1) * 60 for customer, sent in run.sent_at.items())
    figures = {
        "rate": float(run.rate),
        "sent_rate": run.sent_rate,
        "startup_s": run.startup_s,
        "probes_sent": float(len(run.sent_at)),
        "probes_visible": float(seen),
    }
    if not delays:
        return {**figures, **dict.fromkeys(("p50_s", "p95_s", "p99_s", "max_s", "mean_s", "p99_past_minute_s"), math.nan)}
    return {
        **figures,
        **{f"p{round(p * 100)}_s": percentile(delays, p) for p in (0.50, 0.95, 0.99)},
        "max_s": delays[-1],
        "mean_s": statistics.mean(delays[:seen]) if seen else math.nan,
        "p99_past_minute_s": percentile(past_minute, 0.99),
    }


#: When each probe customer's first aggregate segment was loaded (``loaded_at``: set by ClickHouse at the insert).
PROBES_VISIBLE_SQL = (
    "SELECT customer_id, toUnixTimestamp64Milli(min(loaded_at)) FROM aggregate_segments "
    f"WHERE startsWith(customer_id, '{PROBE_PREFIX}') GROUP BY customer_id"
)


def project_live(
    path: Path,
    config: Config,
    settings: StackSettings,
    workdir: Path,
    pacer: Pacer,
    *,
    load_raw: bool,
    warmup_s: float,
    seconds: float,
    drain_s: float = 60.0,
    caught_up: Callable[[Loader], bool] | None = None,
    state_backend: str | None = None,
) -> LiveRun:
    """The live job and the loader (as `metering load` runs them, in a thread here) under ``pacer``'s traffic.

    A probe is visible when its minute segment is in ClickHouse: the ``loaded_at`` of its
    customer's first ``aggregate_segments`` row (what ``minute_usage`` reads), set by ClickHouse at
    the insert, so asking later changes nothing. Ready: the first segment loaded (and
    ``caught_up(loader)``, when given: bench/compare.py asks whether the job's and the loader's
    consumer groups have read the traffic; the loader tells which topics it reads). The loader's
    thread asks, between its batches (the chDB session is not shared across threads), at most
    twice a second and only while it matters (before the first segment; once the probes are
    sent), so the benchmark's own queries do not slow the loader while probes are in flight; the
    thread stops at its next poll once the run is over."""
    ensure_topics(config)
    with open_storage(config.storage) as storage:
        migrate(storage)
    seen: dict[str, float] = {}
    loaded = threading.Event()
    asked = threading.Event()  # the probes are sent: look for them
    over = threading.Event()
    loader_error: list[str] = []
    job_log = workdir / "live-job.log"
    with live_job(path, settings, job_log, state_backend=state_backend) as job, open_storage(config.storage) as storage:
        loader = live_loader(config, storage, load_raw=load_raw)
        last_query = 0.0

        def on_batch(_: Any) -> None:
            nonlocal last_query
            if time.monotonic() - last_query < 0.5 or (loaded.is_set() and not asked.is_set()):
                return
            last_query = time.monotonic()
            if not loaded.is_set() and storage.query_rows("SELECT count() FROM aggregate_segments")[0][0]:
                loaded.set()
            if asked.is_set():
                seen.update({customer: millis / 1000 for customer, millis in storage.query_rows(PROBES_VISIBLE_SQL)})

        def visible() -> dict[str, float]:
            asked.set()
            return dict(seen)

        # Loader.run stops only by an exception out of its callback, which runs after a poll that
        # returned records; its poll (every 0.5 s at most) is where a finished run stops it.
        poll = loader._poll

        def poll_until_over(consumer: LoaderConsumer, timeout_ms: int) -> Sequence[Any]:
            if over.is_set():
                raise _Done
            return poll(consumer, timeout_ms)

        loader._poll = poll_until_over  # type: ignore[method-assign]

        def load() -> None:
            try:
                loader.run(until_idle=False, on_batch=on_batch)
            except _Done:
                pass
            except Exception as exc:  # reported by failed(): the run stops instead of waiting for it
                loader_error.append(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=load, name="live-loader", daemon=True)
        thread.start()

        def failed() -> str:
            if job.poll() is not None:
                return f"the job exited ({job.returncode}); see {workdir / 'live-job.log'}"
            if not thread.is_alive():
                return "the loader stopped: " + (loader_error[0] if loader_error else "?")
            return ""

        try:
            return measure_live(
                pacer,
                ready=lambda: loaded.is_set() and (caught_up is None or caught_up(loader)),
                visible=visible,
                failed=failed,
                warmup_s=warmup_s,
                seconds=seconds,
                drain_s=drain_s,
            )
        finally:
            over.set()
            thread.join(timeout=60)


def live(
    rate: int, seconds: int, settings: StackSettings, workdir: Path, probe_every: int = 100, warmup_s: int = 15
) -> dict[str, float]:
    """Per-record visibility latency at a steady ``rate``, after ``warmup_s`` of the same traffic (demo meters)."""
    path = config_for("live", settings, workdir, **LIVE_SETTINGS)
    config = load_config(path, env={})
    producer = make_producer(settings.bootstrap_servers, linger_ms=5)
    topic = config.kafka.topics.events
    customers = ["acme", "globex", "initech", "bharat-ai"]

    def event(n: int, customer: str, moment: datetime) -> bytes:
        document = {
            "event_id": f"l{n}",
            "customer_id": customer,
            "event_type": "tokens",
            "timestamp": rfc3339_millis(moment),
            "quantity": "1",
            "properties": {"model": "small-1"},
        }
        return json.dumps(document).encode()

    pacer = Pacer(
        lambda customer, line, _: producer.send(topic, key=customer.encode(), value=line),
        rate,
        event,
        lambda n: (customers[n % len(customers)], None),
        probe_every=probe_every,
    )
    try:
        run = project_live(path, config, settings, workdir, pacer, load_raw=False, warmup_s=warmup_s, seconds=seconds)
    finally:
        producer.close()
    if run.error or not run.seen:
        raise SystemExit(f"live: {run.error or 'no probe became visible'}; see {workdir / 'live-job.log'}")
    return {"seconds": seconds, **latency_figures(run)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="backfill: demo events (0 skips it)")
    parser.add_argument(
        "--capacity-events",
        type=int,
        # 1.5M: at 25k+ events/s a 600k backlog's 10%→90% range spans only one or two checkpoint
        # steps (visibility advances per checkpoint), too coarse to compare versions.
        default=1_500_000,
        help="capacity: backlog of live-shaped events (0 skips it)",
    )
    parser.add_argument("--customers", type=int, default=CAPACITY_CUSTOMERS, help="capacity: customers in the backlog")
    parser.add_argument(
        "--nominal-rate", type=int, default=CAPACITY_NOMINAL_RATE, help="capacity: event-time density of the backlog (events/s)"
    )
    parser.add_argument(
        "--load-raw", action="store_true", help="capacity: the loader also loads raw events (as `metering load` does)"
    )
    parser.add_argument("--parallelism", type=int, default=1, help="backfill and capacity: the job's parallelism")
    parser.add_argument(
        "--state-backend",
        choices=STATE_BACKENDS,
        help="backfill and capacity: the job's state backend (rocksdb: incremental checkpoints; default hashmap)",
    )
    parser.add_argument(
        "--loader-max-batch-delay", help="capacity: pipeline.loader_max_batch_delay (e.g. 0 or 1s; default: the config's)"
    )
    parser.add_argument("--rate", type=int, default=2000, help="live: events/s sent (0 skips it)")
    parser.add_argument("--seconds", type=int, default=60, help="live: how long to send")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".metering" / "bench")
    parser.add_argument("--no-record", action="store_true", help="print the figures only (default: also keep them in --workdir)")
    args = parser.parse_args()
    settings = load_stack()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Mapping[str, float | str]] = {}
    if args.events:
        results["backfill"] = backfill(args.events, settings, args.workdir, args.parallelism, args.state_backend)
        print("backfill:", json.dumps(results["backfill"]), flush=True)
    if args.capacity_events:
        results["capacity"] = capacity(
            args.capacity_events,
            args.customers,
            args.nominal_rate,
            settings,
            args.workdir,
            load_raw=args.load_raw,
            parallelism=args.parallelism,
            loader_max_batch_delay=args.loader_max_batch_delay,
            state_backend=args.state_backend,
        )
        print("capacity:", json.dumps(results["capacity"]), flush=True)
    if args.rate:
        results["live"] = live(args.rate, args.seconds, settings, args.workdir)
        print("live:", json.dumps(results["live"]), flush=True)
    table = record(args, results)
    print(table)
    if not args.no_record:
        kept = args.workdir / f"pipeline-{datetime.now(UTC):%Y%m%d-%H%M%S}.md"
        kept.write_text(table)
        print(f"figures kept in {kept}")


def record(args: argparse.Namespace, results: Mapping[str, Mapping[str, float | str]]) -> str:
    """This run's figures as a Markdown table with its command (docs/benchmarks.md holds the current ones, not every run)."""
    command = (
        f".venv/bin/python bench/pipeline.py --events {args.events} --capacity-events {args.capacity_events} "
        f"--customers {args.customers} --nominal-rate {args.nominal_rate}{' --load-raw' if args.load_raw else ''} "
        f"--parallelism {args.parallelism} "
        + (f"--state-backend {args.state_backend} " if args.state_backend else "")
        + (f"--loader-max-batch-delay {args.loader_max_batch_delay} " if args.loader_max_batch_delay else "")
        + f"--rate {args.rate} --seconds {args.seconds}"
    )
    lines = [
        f"\n### Pipeline, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`; machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}; exactly-once on.",
        "",
        "| measurement | figure |",
        "| --- | --- |",
    ]
    if b := results.get("backfill"):
        lines += [
            f"| backfill: lines (events + duplicates + malformed) | {b['lines']:,.0f} |",
            f"| backfill: job (bounded, MiniCluster, parallelism {args.parallelism}) | {b['job_s']:.1f} s |",
            f"| backfill: loader until idle | {b['load_s']:.1f} s |",
            f"| **backfill throughput, topic → queryable in ClickHouse** | **{b['events_per_s']:,.0f} events/s** |",
        ]
    if c := results.get("capacity"):
        jvm_split = " / ".join(f"{c['jvm_us_per_event_' + part]:.1f}" for part in JVM_PARTS)
        end = f"{c['end_fraction']:.0%}"
        if math.isnan(float(c["split_at_fraction"])):
            split, halves = "?", f"one checkpoint covered 10% → {end}: no halves"
        else:
            split = f"{c['split_at_fraction']:.0%}"
            halves = f"{c['first_half_events_per_s']:,.0f} / {c['second_half_events_per_s']:,.0f} events/s"
        lines += [
            f"| capacity: backlog | {c['events']:,.0f} events (+10% retries), {c['customers']:,.0f} customers, "
            f"{c['nominal_rate']:,.0f} events/s of event time; raw events loaded: {'yes' if c['load_raw'] else 'no'}; "
            f"parallelism {c['parallelism']:.0f}; state backend {c['state_backend']} |",
            f"| capacity: loader batches (max delay {c['loader_max_batch_delay_s']:g} s) / rows loaded | "
            f"{c['loader_batches']:,.0f} / {c['loader_rows']:,.0f} |",
            f"| capacity: first / all visible after job start | {c['first_visible_s']:.1f} s / {c['all_visible_s']:.1f} s |",
            f"| **capacity: sustained, 10% → {end} of the backlog queryable (the last step before the end)** | "
            f"**{c['sustained_events_per_s']:,.0f} events/s** |",
            f"| capacity: 10% → {split} / {split} → {end} | {halves} |",
            f"| capacity: CPU µs per visible event, 10% → {end}: job / broker / loader / counting queries / "
            f"other / idle | {' / '.join(f'{c[key]:.1f}' for key in CPU_PARTS)} |",
            f"| capacity: the job's JVM by thread, CPU µs per visible event, 10% → {end}: {' / '.join(JVM_PARTS)} | "
            f"{jvm_split} |",
            f"| capacity: the job's last checkpoint, its own files / shared (incremental) files | "
            f"{float(c['checkpoint_own_bytes']) / 1e6:,.1f} MB / {float(c['checkpoint_shared_bytes']) / 1e6:,.1f} MB |",
        ]
    if live_result := results.get("live"):
        lines += [
            f"| live: rate / duration | {live_result['rate']:,.0f} events/s for {live_result['seconds']:.0f} s |",
            f"| live: probes visible | {live_result['probes_visible']:,.0f} of {live_result['probes_sent']:,.0f} |",
            f"| **live: event sent → queryable, p50 / p99 / max** | **{live_result['p50_s']:.2f} s / "
            f"{live_result['p99_s']:.2f} s** / {live_result['max_s']:.2f} s |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
