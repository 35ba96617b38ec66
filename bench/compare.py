"""The project measured side by side with peers on one broker, in one run (docs/benchmarks.md, "Side by side with peers").

For each shape (bench/peers/common.py: dense, sparse) one backlog topic is seeded once (seeded
generator: ~10 % retries, ~1 % broken lines, out-of-order and late events, several customer time
zones; one tick event per partition at the end) and its expected totals are recomputed from the
generated lines. Then, for ``--rounds`` rounds, every variant reads that same topic from the
start with a consumer group of its own, one after another in a fixed order (A/B/C/…/A/B/C/…):

- ``project``: this project end to end, bench/pipeline.py's capacity run (the live metering job on
  the MiniCluster + the loader as ``metering load`` runs it, raw load on, exactly-once); totals from
  ClickHouse (chDB) ``minute_usage``; the rate is distinct events queryable per second;
- ``flink-sql``: the vanilla Flink SQL reference (bench/peers/flink_sql.py), bounded, MiniCluster;
- ``quix-1p`` / ``quix-2p``: Quix Streams (bench/peers/quix.py), exactly-once, 1 or 2 processes;
- ``plain``: confluent-kafka transactions + orjson + dict dedup + Decimal (bench/peers/plain.py).

Peers' progress is their consumer group's committed offsets on the backlog (committed with their
output transaction), sampled twice a second; their totals are read back from their output topic
(read_committed). The rate is over the steady range, 10 % → 90 % of the backlog, converted to
distinct valid events. CPU comes from /proc (bench/cpu.py) per process over the same range.

**Latency mode** (``--latency-rate N`` events/s, or ``--latency-fraction F`` of each variant's
steady rate measured by this run's rounds on the same shape; after the rounds, if any): per
shape and variant, a topic of its own (4 partitions) is fed live by a paced sender
(bench/pipeline.py's ``Pacer``; the shape's customers, each on one partition, the backlog's
meters and quantities, distinct valid events, event time = the wall clock at sending) while the
variant runs live: the project as bench/pipeline.py's live measurement (``project_live``: live job
with LIVE_SETTINGS, 1 s steps, checkpoints and out-of-orderness, + the loader with raw load on);
the peers unbounded, closing a minute 1 s behind the newest event time, Flink SQL checkpointing
every 1 s. Once the variant has caught up (the peer's group, or the project's job, has committed
what was sent :data:`CAUGHT_UP_S` before; the project's loader has less than that much traffic
left on its topics and has loaded its first segment) and ``--latency-warmup`` seconds later,
every 100th event for ``--latency-seconds`` is a **probe**, the only event of a customer of its
own (spread over the partitions). The
measure, the same for every variant: **event sent -> queryable = the moment the probe's first
row is readable - the moment it was sent**; readable means, for the project, its
``aggregate_segments`` row (what ``minute_usage`` reads) in ClickHouse (``loaded_at``, set at
the insert); for a peer, its minute row in its output topic, read with read_committed by a
consumer that follows the topic (the moment the transaction that wrote it committed, plus one
fetch, ≤ 50 ms). The traffic goes on (without probes) until every probe is visible or
``--latency-drain`` seconds pass; a probe never seen counts as infinitely late. Reported per
variant: p50 / p95 / p99 / max over the probes, and the p99 of (visible - the end of the probe's
UTC minute), which is what a variant that publishes only closed minutes takes once the minute is
over. Each phase is bounded in time: a run stops by itself.

Usage (the broker must be up: ``metering stack up``, or only Kafka; the `bench` extra installed):
    .venv/bin/python -m bench.compare                       # 3M events per shape, 3 rounds
    .venv/bin/python -m bench.compare --quick               # a smoke run: 50k events, 1 round
    .venv/bin/python -m bench.compare --events 300000 --rounds 2 --variants plain,flink-sql
    .venv/bin/python -m bench.compare --shapes dense --latency-rate 2000    # latency only, every variant
    .venv/bin/python -m bench.compare --events 1000000 --rounds 1 --shapes dense --latency-fraction 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.peers.common import (
    END_BEFORE_NOW,
    METERS,
    SHAPES,
    BacklogStats,
    Checksum,
    Key,
    Recomputation,
    Shape,
    backlog,
    checksum,
    customer_name,
    live_line,
    tick_line,
    timezone_of,
    totals_of,
)
from infra.flink import STATE_BACKENDS
from jobs.config import load_stack

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("project", "flink-sql", "quix-1p", "quix-2p", "plain")
PEER_PACKAGES = ("quixstreams", "confluent_kafka", "orjson")
PARTITIONS = 4
#: At most this many customers get a billing time zone of their own in the project's configuration
#: (the rest use the default, UTC): a 100k-customer configuration would only slow its loading.
ZONED_CUSTOMERS = 1000
#: What each variant's figures cannot show, printed beside them.
NOTES = {
    "project": "live job + loader (raw load on), exactly-once; rate = events queryable in ClickHouse",
    "flink-sql": "bounded job, MiniCluster, parallelism 1; drops events later than the watermark",
    "quix-1p": "exactly-once, RocksDB state + changelog topics",
    "quix-2p": "exactly-once, RocksDB state + changelog topics; 2 processes, one consumer group",
    "plain": "dedup and open sums in memory only: NOT crash-safe",
}


def missing_peer_packages() -> list[str]:
    return [name for name in PEER_PACKAGES if importlib.util.find_spec(name) is None]


@dataclasses.dataclass
class Backlog:
    shape: Shape
    topic: str
    lines: int
    stats: BacklogStats
    expected: Recomputation


@dataclasses.dataclass
class Sample:
    at_s: float
    consumed: float  # lines (peers) or distinct events (project)
    cpu_s: dict[str, float]


@dataclasses.dataclass
class Outcome:
    shape: str
    variant: str
    round: int
    events_per_s: float = math.nan
    wall_s: float = math.nan
    cpu_us_per_event: dict[str, float] = dataclasses.field(default_factory=dict)
    #: The whole run, start-up (JVM start, JIT, first fetches) and the end included.
    whole_events_per_s: float = math.nan
    whole_cpu_us_per_event: dict[str, float] = dataclasses.field(default_factory=dict)
    checksum: Checksum | None = None
    error: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def counted_right(self) -> bool:
        return not self.error and self.checksum is not None and self.checksum.ok


# --- seeding ------------------------------------------------------------------------------------


def seed_backlog(shape: Shape, events: int, bootstrap: str, run_id: str) -> Backlog:
    """Create the shape's topic, send its backlog (and one tick per partition), recompute its totals."""
    from jobs.produce import make_producer
    from jobs.topics import ensure_topic

    topic = f"compare-{run_id}-{shape.name}"
    ensure_topic(bootstrap, topic, partitions=PARTITIONS)
    producer = make_producer(bootstrap)
    stats = BacklogStats()
    expected = Recomputation()
    end = datetime.now(UTC) - END_BEFORE_NOW
    for key, line in backlog(shape, events, end, stats=stats):
        producer.send(topic, key=key, value=line)
        expected.add(line)
    for partition in range(PARTITIONS):
        key, line = tick_line(partition, end)
        producer.send(topic, key=key, value=line, partition=partition)
        expected.add(line)
    producer.flush()
    producer.close()
    return Backlog(shape, topic, stats.lines + PARTITIONS, stats, expected)


# --- measuring ----------------------------------------------------------------------------------


def steady(samples: list[Sample], total: float) -> tuple[Sample, Sample]:
    """The samples bounding the steady range: the first at or past 10 % of ``total``, the first at or past 90 %.

    When the progress jumps over the whole range (offsets committed in coarse steps), the range
    widens to the first sample with any progress before it and the last sample."""
    first = next((s for s in samples if s.consumed >= 0.1 * total), samples[-1])
    last = next((s for s in samples if s.consumed >= 0.9 * total), samples[-1])
    if last.consumed <= first.consumed:
        before = [s for s in samples if s.consumed < first.consumed]
        first = before[-1] if before else samples[0]
        last = samples[-1]
    return first, last


def rate_and_cpu(samples: list[Sample], total: float, per_event: float) -> tuple[float, dict[str, float]]:
    """Distinct events per second over the steady range and CPU µs per distinct event by part.

    ``per_event``: distinct events per unit of ``consumed`` (events / lines for the peers, 1 for the project)."""
    if len(samples) < 2:
        return math.nan, {}
    first, last = steady(samples, total)
    events = (last.consumed - first.consumed) * per_event
    if events <= 0 or last.at_s <= first.at_s:
        return math.nan, {}
    cpu = {part: (last.cpu_s.get(part, 0.0) - first.cpu_s.get(part, 0.0)) / events * 1e6 for part in last.cpu_s}
    return events / (last.at_s - first.at_s), cpu


def whole_run(samples: list[Sample], events: float) -> tuple[float, dict[str, float]]:
    """Distinct events per second and CPU µs per distinct event from the first sample (the start) to the last."""
    if len(samples) < 2 or samples[-1].at_s <= 0:
        return math.nan, {}
    first, last = samples[0], samples[-1]
    return events / last.at_s, {part: (last.cpu_s[part] - first.cpu_s.get(part, 0.0)) / events * 1e6 for part in last.cpu_s}


def variant_and_broker(cpu_us: dict[str, float], parts: list[str]) -> dict[str, float]:
    """CPU µs per event of the variant (the sum of ``parts``), the broker, and each part."""
    return {
        "variant": sum(cpu_us.get(part, math.nan) for part in parts),
        "broker": cpu_us.get("broker", math.nan),
        **{part: cpu_us.get(part, math.nan) for part in parts},
    }


#: The latency mode's start-up ends once the variant's groups have read what was sent this long ago.
CAUGHT_UP_S = 5.0


def read_to_ends(committed: dict[int, int], ends: dict[int, int]) -> bool:
    """Whether every partition's committed offset is at or past its end offset (never committed: -1; empty: read).

    Per partition, not a total: the topic may hold more than the backlog (the project's loader
    sends heartbeats to its events topic, the backlog's), and a total of committed offsets that
    reached the backlog's line count while one partition still had its last records (its tick
    among them) unread once stopped a peer before it had written a single minute.
    """
    return all(end == 0 or committed.get(partition, -1) >= end for partition, end in ends.items())


def lines_of(offsets: dict[int, int]) -> int:
    """Records committed: the sum of the partitions' committed offsets (never committed counts 0)."""
    return sum(max(offset, 0) for offset in offsets.values())


class Committed:
    """A group's committed offsets on a topic (a consumer that never joins the group, only asks)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def offsets(self) -> dict[int, int]:
        """The committed offset of every partition (negative: none yet)."""
        return {tp.partition: tp.offset for tp in self.consumer.committed(self.partitions, timeout=10)}

    def end_offsets(self) -> dict[int, int]:
        """The topic's end offsets now (the high watermarks)."""
        return {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.partitions}

    def lines(self) -> int:
        return lines_of(self.offsets())

    def lag(self, topics: Iterable[str]) -> int:
        """Records of ``topics`` not yet committed by the group (end offsets - committed offsets)."""
        from confluent_kafka import TopicPartition

        lag = 0
        for topic in topics:
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            committed = self.consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
            for tp in committed:
                end = self.consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
                lag += max(end - max(tp.offset, 0), 0)
        return lag

    def close(self) -> None:
        self.consumer.close()


class ReadBackIncomplete(RuntimeError):
    """An output topic was not read to its end in time: a harness failure (FAILED), never a count (MISCOUNT)."""


def read_totals(bootstrap: str, topic: str, timeout_s: float = 300.0) -> tuple[dict[Key, Decimal], int]:
    """The totals of an output topic read with read_committed to its end (several rows of one key add up); and the row count.

    The end is each partition's high watermark when the reading starts (the peer has stopped, so its
    last transaction's commit marker lies below it; asked read_uncommitted, since a read_committed
    client is told the last stable offset, which stops short of a transaction left open). A
    partition is read when the consumer reports reaching its end (librdkafka's partition EOF, which
    under read_committed comes at the last stable offset) at or past that offset. A quiet spell
    never ends the reading: the reader used to stop after 3 s without a message, so one slow fetch
    on a busy broker left rows unread and a right peer was reported MISCOUNT (plain, 1M dense).
    Raises :class:`ReadBackIncomplete` after ``timeout_s`` (e.g. a transaction left open holds the
    last stable offset back until the broker aborts it)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    settings = {"bootstrap.servers": bootstrap, "group.id": f"compare-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    # The high watermarks, open transactions included (a read_committed client would get the last stable offsets).
    uncommitted = Consumer({**settings, "isolation.level": "read_uncommitted"})
    try:
        partitions = sorted(uncommitted.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: uncommitted.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        uncommitted.close()
    ends_left = EndsLeft(ends)
    consumer = Consumer({**settings, "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        errors: list[str] = []
        while ends_left:
            if time.monotonic() > deadline:
                raise ReadBackIncomplete(
                    f"{topic}: not read to its end after {timeout_s:.0f} s ({ends_left}; {len(rows):,} rows read"
                    + (f"; errors: {'; '.join(errors[-3:])}" if errors else "")
                    + ")"
                )
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends_left.reached(message.partition(), message.offset())
                    else:  # transient (the client retries by itself); kept for the message above
                        errors.append(str(error))
                elif message.value():
                    rows.append(json.loads(message.value(), parse_float=Decimal))
    finally:
        consumer.close()
    return totals_of(rows), len(rows)


class EndsLeft:
    """The partitions of a topic not yet read to their end offsets (empty ones are read already)."""

    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = {partition: end for partition, end in ends.items() if end > 0}

    def reached(self, partition: int, offset: int) -> None:
        """The consumer reached the end of ``partition`` at ``offset`` (a stable offset below the end does not count)."""
        if offset >= self.ends.get(partition, 0):
            self.ends.pop(partition, None)

    def __bool__(self) -> bool:
        return bool(self.ends)

    def __str__(self) -> str:
        return "partitions not at their end offsets: " + ", ".join(f"{p} (end {end:,})" for p, end in sorted(self.ends.items()))


def tree_cpu(pid: int) -> float:
    from bench.cpu import cpu_seconds, descendants

    return cpu_seconds(descendants(pid) | {pid})


def peer_commands(
    variant: str, topic: str, bootstrap: str, group: str, output: str, workdir: Path, *, live: bool = False
) -> list[list[str]]:
    """The processes of a peer reading ``topic``; ``live``: the latency mode's (unbounded, :data:`LIVE_LATENESS_MS`)."""
    base = ["--bootstrap", bootstrap, "--input", topic, "--output", output, "--group", group]
    if live:
        base += ["--lateness-ms", str(LIVE_LATENESS_MS)]
    if variant == "plain":
        return [[sys.executable, "-m", "bench.peers.plain", *base, *(["--follow"] if live else [])]]
    if variant == "flink-sql":
        from infra.flink import connector_jar

        jar = connector_jar(load_stack())
        # Live: checkpoints (its transactions' commits) as often as the project's live job's.
        options = ["--unbounded", "--checkpoint-interval", str(LIVE_CHECKPOINT_MS)] if live else []
        return [[sys.executable, "-m", "bench.peers.flink_sql", *base, "--connector-jar", str(jar), *options]]
    processes = 2 if variant == "quix-2p" else 1
    return [
        [sys.executable, "-m", "bench.peers.quix", *base, "--state-dir", str(workdir / "quix-state" / f"{group}-{n}")]
        for n in range(processes)
    ]


def start_processes(commands: list[list[str]], logs: list[Path]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        for command, log in zip(commands, logs, strict=False)
    ]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group still running; SIGKILL after 60 s."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_peer(variant: str, backlog_: Backlog, round_: int, workdir: Path, broker: int, timeout_s: float) -> Outcome:
    """Run one peer over the backlog until its group has committed every offset (or it exits), then check its totals."""
    from bench.cpu import proc_stat
    from jobs.topics import ensure_topic

    bootstrap = load_stack().bootstrap_servers
    tag = f"{backlog_.topic}-{variant}-r{round_}-{uuid.uuid4().hex[:4]}"
    output = f"{tag}-out"
    ensure_topic(bootstrap, output, partitions=PARTITIONS)
    outcome = Outcome(backlog_.shape.name, variant, round_)
    logs = [workdir / f"{tag}-{n}.log" for n in range(2)]
    committed = Committed(bootstrap, tag, backlog_.topic)
    ends = committed.end_offsets()  # before the peer starts: what it must have committed to be done
    commands = peer_commands(variant, backlog_.topic, bootstrap, tag, output, workdir)
    broker_at_start = proc_stat(broker)
    started = time.monotonic()
    processes = start_processes(commands, logs)
    # The start: new processes have used no CPU yet.
    samples = [Sample(0.0, 0, {"broker": broker_at_start[1] if broker_at_start else 0.0})]
    try:
        while True:
            time.sleep(0.5)
            now = time.monotonic() - started
            offsets = committed.offsets()
            consumed = lines_of(offsets)
            exited = [p.poll() for p in processes]
            if any(code not in (None, 0) for code in exited):
                outcome.error = f"exit {exited}; see {logs[0]}"
                break
            # Done: exited, or committed (with its output) up to the end offsets of every partition.
            done = all(code == 0 for code in exited) or read_to_ends(offsets, ends)
            if done:
                consumed = backlog_.lines
            # A process that has exited reads as 0: it keeps its last figure.
            previous = samples[-1].cpu_s
            cpu = {f"process_{n}": max(tree_cpu(p.pid), previous.get(f"process_{n}", 0.0)) for n, p in enumerate(processes)}
            broker_stat = proc_stat(broker)
            cpu["broker"] = broker_stat[1] if broker_stat else 0.0
            # Beyond the backlog's lines is only what was appended to the topic since it was seeded.
            samples.append(Sample(now, min(consumed, backlog_.lines), cpu))
            if done:
                break
            if now > timeout_s:
                outcome.error = f"timeout: {consumed:,} of {backlog_.lines:,} lines after {timeout_s:.0f} s; see {logs[0]}"
                break
    finally:
        stop_processes(processes)
        committed.close()
        shutil.rmtree(workdir / "quix-state", ignore_errors=True)
    outcome.wall_s = samples[-1].at_s
    per_event = backlog_.expected.accepted / backlog_.lines
    parts = [f"process_{n}" for n in range(len(processes))]
    outcome.events_per_s, cpu_us = rate_and_cpu(samples, backlog_.lines, per_event)
    outcome.cpu_us_per_event = variant_and_broker(cpu_us, parts)
    if not outcome.error:
        outcome.whole_events_per_s, whole_cpu = whole_run(samples, backlog_.expected.accepted)
        outcome.whole_cpu_us_per_event = variant_and_broker(whole_cpu, parts)
    if not outcome.error:
        try:
            totals, rows = read_totals(bootstrap, output)
        except ReadBackIncomplete as exc:  # the harness could not read the output: no checksum, FAILED
            outcome.error = f"read-back: {exc}"
            return outcome
        outcome.checksum = checksum(backlog_.expected.totals, totals)
        outcome.extra["output_rows"] = rows
    return outcome


def project_edit(shape: Shape, topic: str) -> Callable[[dict[str, Any]], None]:
    """The project's configuration here: one ``sum`` meter per event type, customers' time zones, the backlog topic."""

    def edit(document: dict[str, Any]) -> None:
        document["kafka"]["topics"]["events"] = topic
        document["meters"] = [{"name": meter, "event_type": meter, "aggregation": "sum"} for meter in METERS]
        document["billing"]["customers"] = {
            customer_name(shape, n): {"timezone": timezone_of(n)} for n in range(min(shape.customers, ZONED_CUSTOMERS))
        }

    return edit


def run_project(backlog_: Backlog, round_: int, workdir: Path, timeout_s: float, state_backend: str | None = None) -> Outcome:
    """bench/pipeline.py's capacity run (live job + loader with raw load, exactly-once) over the shape's backlog."""
    from bench.pipeline import capacity_run, config_for
    from clickhouse.client import open_storage
    from jobs.config import load_config

    settings = load_stack()
    outcome = Outcome(backlog_.shape.name, "project", round_)
    # The configuration defaults, as bench/pipeline.py's capacity measurement runs them.
    path = config_for(
        f"compare-{backlog_.shape.name}-r{round_}",
        settings,
        workdir,
        edit=project_edit(backlog_.shape, backlog_.topic),
        checkpoint_interval="10s",
        provisional_interval="10s",
        max_out_of_orderness="30s",
    )
    config = load_config(path, env={})
    from jobs.topics import ensure_topics

    ensure_topics(config)
    events = backlog_.expected.accepted
    try:
        run = capacity_run(
            path,
            config,
            events,
            settings,
            workdir,
            load_raw=True,
            timeout_s=timeout_s,
            counted_meters=METERS,
            state_backend=state_backend,
        )
    except SystemExit as exc:  # an overcount, a timeout, a job that failed
        outcome.error = str(exc)
        return outcome
    figures = run.figures
    # The same range as the peers' (10 % → 90 % of the events queryable), from the capacity run's samples.
    samples = [
        Sample(s.at_s, s.visible, {"job": s.cpu_s["job"], "loader": s.cpu_s["loader"], "broker": s.cpu_s["broker"]})
        for s in run.samples
    ]
    outcome.events_per_s, cpu_us = rate_and_cpu(samples, events, per_event=1.0)
    outcome.wall_s = figures["all_visible_s"]
    outcome.cpu_us_per_event = variant_and_broker(cpu_us, ["job", "loader"])
    # From the job's start (a new process: no CPU yet; the loader's and the broker's as at the first sample) to all visible.
    start = Sample(0.0, 0, {**samples[0].cpu_s, "job": 0.0})
    outcome.whole_events_per_s, whole_cpu = whole_run([start, *samples], events)
    outcome.whole_cpu_us_per_event = variant_and_broker(whole_cpu, ["job", "loader"])
    # bench/pipeline.py's own figure: 10 % → the last visibility step before the end.
    outcome.extra = {
        "pipeline_sustained_events_per_s": figures["sustained_events_per_s"],
        "end_fraction": figures["end_fraction"],
        "loader_rows": run.loader_rows,
    }
    with open_storage(config.storage) as storage:
        rows = storage.query_rows("SELECT customer_id, meter, toUnixTimestamp64Milli(minute), toString(value) FROM minute_usage")
    got = totals_of({"customer_id": c, "meter": m, "window_start": int(w), "total": v} for c, m, w, v in rows)
    outcome.checksum = checksum(backlog_.expected.totals, got)
    return outcome


# --- latency: event sent -> queryable at a fixed rate ---------------------------------------------

#: The latency mode's peers: a minute closes 1 s behind the newest event time (the live events are
#: in order; the project's live watermark is as far behind: bench/pipeline.py's LIVE_SETTINGS,
#: max_out_of_orderness) and Flink SQL checkpoints, so commits, as often as the project's live job.
LIVE_LATENESS_MS = 1000
LIVE_CHECKPOINT_MS = 1000
#: What bounds each variant's latency, printed beside it.
LIVE_NOTES = {
    "project": "provisional minute values: 1 s steps + 1 s checkpoints + loader batch (≤ 1 s), raw load on",
    "flink-sql": "final-only minute windows: waits for its minute's end + 1 s, then a 1 s checkpoint",
    "quix-1p": "final-only minute windows: waits for its minute's end + 1 s grace, then a 1 s commit",
    "quix-2p": "final-only minute windows: waits for its minute's end + 1 s grace, then a 1 s commit",
    "plain": "final-only minute windows: waits for its minute's end + 1 s, then its batch's transaction (≤ 0.5 s)",
}
#: The issue's target (#26): p99 event -> queryable at most this, at 50 % of capacity.
P99_TARGET_S = 10.0


@dataclasses.dataclass(frozen=True)
class LiveTiming:
    warmup_s: float
    seconds: float
    drain_s: float


@dataclasses.dataclass
class Latency:
    shape: str
    variant: str
    rate: int
    #: bench/pipeline.py's latency_figures: p50_s / p95_s / p99_s / max_s, probes sent and visible, rate sent.
    figures: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def status(self) -> str:
        """OK when every probe became visible; INCOMPLETE when some did not within the drain time; FAILED."""
        if self.error:
            return "FAILED"
        sent, seen = self.figures.get("probes_sent", 0), self.figures.get("probes_visible", 0)
        return "OK" if sent and seen == sent else "INCOMPLETE"


class OutputWatch:
    """A peer's output topic read with read_committed while it is written (in a thread): when each probe's row arrived.

    A probe's row (its customer is its own: bench/pipeline.py's Pacer) arrives when the peer's
    transaction that wrote it commits, plus at most one fetch wait (50 ms)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"compare-watch-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.seen: dict[str, float] = {}
        self.rows = 0
        self._over = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from bench.pipeline import PROBE_PREFIX

        try:
            while not self._over.is_set():
                messages = self.consumer.consume(num_messages=10_000, timeout=0.1)
                now = time.time()
                for message in messages:
                    if message.error() is not None or not message.value():
                        continue
                    self.rows += 1
                    customer = str(json.loads(message.value()).get("customer_id", ""))
                    if customer.startswith(PROBE_PREFIX):
                        self.seen.setdefault(customer, now)
        finally:
            self.consumer.close()

    def visible(self) -> dict[str, float]:
        return dict(self.seen)

    def stop(self) -> None:
        self._over.set()
        self._thread.join(timeout=30)


def live_producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})


def live_pacer(shape: Shape, rate: int, producer: Any, topic: str, seed: int = 29) -> Any:
    """bench/pipeline.py's Pacer with the shape's customers (each on partition index % 4) and the backlog's meters."""
    from bench.pipeline import Pacer

    rng = random.Random(seed)

    def send(customer: str, line: bytes, partition: int | None) -> None:
        while True:
            try:
                producer.produce(topic, value=line, key=customer.encode(), partition=-1 if partition is None else partition)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)

    def customer(_: int) -> tuple[str, int]:
        index = rng.randrange(shape.customers)
        return customer_name(shape, index), index % PARTITIONS

    return Pacer(send, rate, lambda n, name, moment: live_line(rng, n, name, moment), customer, partitions=PARTITIONS)


def run_peer_latency(variant: str, shape: Shape, rate: int, workdir: Path, run_id: str, timing: LiveTiming) -> Latency:
    """The peer reading a live topic of its own under paced traffic: event sent -> its minute row committed in the output."""
    from bench.pipeline import latency_figures, measure_live
    from jobs.topics import ensure_topic

    bootstrap = load_stack().bootstrap_servers
    tag = f"compare-{run_id}-live-{shape.name}-{variant}-{uuid.uuid4().hex[:4]}"
    topic, output = f"{tag}-in", f"{tag}-out"
    ensure_topic(bootstrap, topic, partitions=PARTITIONS)
    ensure_topic(bootstrap, output, partitions=PARTITIONS)
    latency = Latency(shape.name, variant, rate)
    logs = [workdir / f"{tag}-{n}.log" for n in range(2)]
    watch = OutputWatch(bootstrap, output)
    committed = Committed(bootstrap, tag, topic)
    producer = live_producer(bootstrap)
    processes = start_processes(peer_commands(variant, topic, bootstrap, tag, output, workdir, live=True), logs)

    def failed() -> str:  # a live peer never exits by itself
        codes = [process.poll() for process in processes]
        return f"exit {codes}; see {logs[0]}" if any(code is not None for code in codes) else ""

    pacer = live_pacer(shape, rate, producer, topic)
    try:
        run = measure_live(
            pacer,
            # It has read (and committed) the traffic up to a few seconds ago; its output may wait for a minute's end.
            ready=lambda: committed.lines() >= pacer.sent_by(CAUGHT_UP_S),
            visible=watch.visible,
            failed=failed,
            warmup_s=timing.warmup_s,
            seconds=timing.seconds,
            drain_s=timing.drain_s,
        )
    finally:
        stop_processes(processes)
        watch.stop()
        committed.close()
        producer.flush(10)
        shutil.rmtree(workdir / "quix-state", ignore_errors=True)
    latency.figures = latency_figures(run)
    latency.error = run.error
    latency.extra = {"input": topic, "output_rows": watch.rows, "probes": probe_times(run)}
    return latency


def run_project_latency(
    shape: Shape, rate: int, workdir: Path, run_id: str, timing: LiveTiming, state_backend: str | None = None
) -> Latency:
    """bench/pipeline.py's live measurement (live job + loader, LIVE_SETTINGS, raw load on) under the shape's paced traffic."""
    from bench.pipeline import LIVE_SETTINGS, config_for, latency_figures, project_live
    from jobs.config import load_config
    from jobs.topics import ensure_topic

    settings = load_stack()
    topic = f"compare-{run_id}-live-{shape.name}-project-{uuid.uuid4().hex[:4]}"
    ensure_topic(settings.bootstrap_servers, topic, partitions=PARTITIONS)
    path = config_for(f"compare-live-{shape.name}", settings, workdir, edit=project_edit(shape, topic), **LIVE_SETTINGS)
    config = load_config(path, env={})
    producer = live_producer(settings.bootstrap_servers)
    pacer = live_pacer(shape, rate, producer, topic)
    # The job has committed (on its checkpoints) the events sent a few seconds ago, and the loader
    # has fewer records left on its topics (whichever the loader reads) than that many seconds bring.
    job = Committed(settings.bootstrap_servers, config.kafka.consumer_group, topic)
    loader_group: list[Committed] = []

    def caught_up(loader: Any) -> bool:
        if job.lines() < pacer.sent_by(CAUGHT_UP_S):
            return False
        if not loader_group:
            loader_group.append(Committed(settings.bootstrap_servers, loader.group_id, topic))
        return loader_group[0].lag(loader.handlers) <= rate * CAUGHT_UP_S

    try:
        run = project_live(
            path,
            config,
            settings,
            workdir,
            pacer,
            load_raw=True,
            warmup_s=timing.warmup_s,
            seconds=timing.seconds,
            drain_s=timing.drain_s,
            caught_up=caught_up,
            state_backend=state_backend,
        )
    finally:
        producer.flush(10)
        for group in [job, *loader_group]:
            group.close()
    return Latency(shape.name, "project", rate, latency_figures(run), run.error, {"input": topic, "probes": probe_times(run)})


def probe_times(run: Any) -> list[tuple[float, float | None]]:
    """Each probe's (sent, visible) epoch seconds (visible None: never), for the JSON file: latency by second of the minute."""
    return [(sent, run.seen.get(customer)) for customer, sent in run.sent_at.items()]


# --- reporting ----------------------------------------------------------------------------------


def summarise(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """Per (shape, variant): the median over rounds of the rate and the CPU, and whether every round counted right."""
    grouped: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        grouped.setdefault((outcome.shape, outcome.variant), []).append(outcome)
    rows = []
    for (shape, variant), runs in grouped.items():
        good = [run for run in runs if run.counted_right]
        status = "OK" if len(good) == len(runs) else ("FAILED" if any(run.error for run in runs) else "MISCOUNT")

        def median(values: list[float]) -> float:
            finite = [v for v in values if not math.isnan(v)]
            return statistics.median(finite) if finite else math.nan

        rows.append(
            {
                "shape": shape,
                "variant": variant,
                "rounds": len(runs),
                "status": status,
                "events_per_s": median([run.events_per_s for run in runs]),
                "events_per_s_runs": [run.events_per_s for run in runs],
                "wall_s": median([run.wall_s for run in runs]),
                "whole_events_per_s": median([run.whole_events_per_s for run in runs]),
                "whole_cpu_us_variant": median([run.whole_cpu_us_per_event.get("variant", math.nan) for run in runs]),
                "cpu_us_variant": median([run.cpu_us_per_event.get("variant", math.nan) for run in runs]),
                "cpu_us_broker": median([run.cpu_us_per_event.get("broker", math.nan) for run in runs]),
                "checksums": [run.checksum.describe() if run.checksum else run.error for run in runs],
            }
        )
    return rows


def seconds(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else ("not visible" if value > 0 else "?")


def quantiles(figures: dict[str, float]) -> str:
    return " / ".join(seconds(figures.get(key, math.nan)) for key in ("p50_s", "p95_s", "p99_s", "max_s"))


def latency_cell(latency: Latency) -> str:
    """p50 / p95 / p99 event -> queryable (s) and the rate, or why there are none."""
    if latency.error:
        return f"FAILED: {latency.error}"
    f = latency.figures
    return f"{seconds(f['p50_s'])} / {seconds(f['p95_s'])} / {seconds(f['p99_s'])} (at {latency.rate:,} events/s)"


def markdown(rows: list[dict[str, Any]], latencies: Iterable[Latency] = ()) -> str:
    """The throughput table, ranked among variants that counted right; with a latency column when one was measured."""
    by_variant = {(latency.shape, latency.variant): latency for latency in latencies}
    lines = [
        "| shape | variant | steady events/s (median; each round) | steady CPU µs/event: variant / broker | "
        "whole run: s / events/s / variant CPU µs/event | checksum | "
        + ("event→queryable s: p50 / p95 / p99 | " if by_variant else "")
        + "note |",
        "| --- | --- | --- | --- | --- | --- | " + ("--- | " if by_variant else "") + "--- |",
    ]
    for shape in dict.fromkeys(row["shape"] for row in rows):
        ranked = [row for row in rows if row["shape"] == shape]
        # Only variants that counted right are ranked; the better Quix run stands for Quix.
        ok = [row for row in ranked if row["status"] == "OK"]
        quix = [row for row in ok if row["variant"].startswith("quix")]
        best_quix = max(quix, key=lambda row: row["events_per_s"])["variant"] if len(quix) > 1 else None
        ok.sort(key=lambda row: -row["events_per_s"])
        for row in ok + [row for row in ranked if row["status"] != "OK"]:
            each = ", ".join(f"{v:,.0f}" for v in row["events_per_s_runs"])
            figure = f"{row['events_per_s']:,.0f} ({each})" if row["status"] == "OK" else f"{row['status']} ({each})"
            checks = "; ".join(dict.fromkeys(str(c) for c in row["checksums"]))
            note = NOTES.get(row["variant"], "") + (" — the better Quix run" if row["variant"] == best_quix else "")
            lines.append(
                f"| {shape} | {row['variant']} | {figure} | {row['cpu_us_variant']:.1f} / {row['cpu_us_broker']:.1f} | "
                f"{row['wall_s']:.0f} / {row['whole_events_per_s']:,.0f} / {row['whole_cpu_us_variant']:.1f} | "
                f"{checks} | "
                + (f"{latency_cell(by_variant[shape, row['variant']])} | " if (shape, row["variant"]) in by_variant else "")
                + (" | " if by_variant and (shape, row["variant"]) not in by_variant else "")
                + f"{note} |"
            )
    return "\n".join(lines)


def latency_markdown(latencies: Iterable[Latency]) -> str:
    """The latency mode's table: per variant, the rate, the probes seen, event -> queryable p50 / p95 / p99 / max."""
    lines = [
        "| shape | variant | events/s: asked / sent | probes visible / sent | event→queryable s: p50 / p95 / p99 / max | "
        f"p99 ≤ {P99_TARGET_S:.0f} s | p99 after the minute's end, s | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for latency in latencies:
        f = latency.figures
        if latency.error or not f:
            lines.append(f"| {latency.shape} | {latency.variant} | {latency.rate:,} | | FAILED: {latency.error} | | | |")
            continue
        target = "yes" if f["p99_s"] <= P99_TARGET_S else "no"
        lines.append(
            f"| {latency.shape} | {latency.variant} | {latency.rate:,} / {f['sent_rate']:,.0f} | "
            f"{f['probes_visible']:,.0f} / {f['probes_sent']:,.0f} | "
            f"{quantiles(f)} | {target} | {seconds(f['p99_past_minute_s'])} | "
            f"{LIVE_NOTES.get(latency.variant, '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, help="distinct events per shape (default 3,000,000; --quick: 50,000)")
    parser.add_argument(
        "--rounds", type=int, help="throughput rounds of every variant (default 3; --quick: 1; with --latency-rate: 0)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50k events per shape, 1 round")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".metering" / "bench" / "compare")
    parser.add_argument(
        "--state-backend",
        choices=STATE_BACKENDS,
        help="the project's state backend, capacity and latency (default: the configuration's, hashmap)",
    )
    parser.add_argument("--json", type=Path, help="results file (default: WORKDIR/compare-<time>.json)")
    live = parser.add_argument_group(
        "latency mode", "event sent -> queryable at a fixed rate, per variant, after the throughput rounds (if any)"
    )
    pace = live.add_mutually_exclusive_group()
    pace.add_argument(
        "--latency-rate", type=int, metavar="N", help="send N events/s to every variant (--rounds defaults to 0: latency only)"
    )
    pace.add_argument(
        "--latency-fraction",
        type=float,
        metavar="F",
        help="send F x the variant's steady events/s measured by this run's rounds on the same shape (e.g. 0.5)",
    )
    live.add_argument("--latency-seconds", type=float, metavar="S", help="how long probes are sent (default 60; --quick: 20)")
    live.add_argument(
        "--latency-warmup",
        type=float,
        metavar="S",
        help="traffic after the variant is ready, before probes (default 15; --quick: 5)",
    )
    live.add_argument(
        "--latency-drain",
        type=float,
        default=120.0,
        metavar="S",
        help="after the probes, wait at most this long for the last ones (default 120)",
    )
    args = parser.parse_args(argv)
    if missing := missing_peer_packages():
        print(
            f"bench.compare: the peers' packages are missing ({', '.join(missing)}); install the bench extra: "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    events = args.events or (50_000 if args.quick else 3_000_000)
    latency_mode = args.latency_rate is not None or args.latency_fraction is not None
    default_rounds = 0 if args.latency_rate is not None else (1 if args.quick else 3)
    rounds = default_rounds if args.rounds is None else args.rounds
    if args.latency_fraction is not None and rounds < 1:
        print("bench.compare: --latency-fraction needs throughput rounds (--rounds 1 or more)", file=sys.stderr)
        return 2
    timing = LiveTiming(
        warmup_s=args.latency_warmup if args.latency_warmup is not None else (5.0 if args.quick else 15.0),
        seconds=args.latency_seconds if args.latency_seconds is not None else (20.0 if args.quick else 60.0),
        drain_s=args.latency_drain,
    )
    shapes = [SHAPES[name] for name in args.shapes.split(",")]
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        print(f"bench.compare: unknown variants {sorted(unknown)}; choose among {', '.join(VARIANTS)}", file=sys.stderr)
        return 2

    from bench.pipeline import broker_pid

    settings = load_stack()
    broker = broker_pid(settings)
    args.workdir.mkdir(parents=True, exist_ok=True)
    run_id = datetime.now(UTC).strftime("%m%d%H%M%S")
    backlogs = []
    for shape in shapes if rounds else []:
        began = time.monotonic()
        backlog_ = seed_backlog(shape, events, settings.bootstrap_servers, run_id)
        print(
            f"seeded {shape.name}: {backlog_.lines:,} lines, {backlog_.expected.accepted:,} distinct events, "
            f"{len(backlog_.expected.totals):,} (customer, meter, minute) keys, {dataclasses.asdict(backlog_.stats)} "
            f"in {time.monotonic() - began:.0f} s",
            flush=True,
        )
        backlogs.append(backlog_)
    outcomes: list[Outcome] = []
    for round_ in range(1, rounds + 1):
        for backlog_ in backlogs:
            timeout_s = max(300.0, backlog_.lines / 2000)
            for variant in variants:
                try:
                    if variant == "project":
                        outcome = run_project(backlog_, round_, args.workdir, timeout_s, args.state_backend)
                    else:
                        outcome = run_peer(variant, backlog_, round_, args.workdir, broker, timeout_s)
                except Exception as exc:  # one broken run must not lose the others' figures
                    outcome = Outcome(backlog_.shape.name, variant, round_, error=f"{type(exc).__name__}: {exc}")
                outcomes.append(outcome)
                status = outcome.error or (outcome.checksum.describe() if outcome.checksum else "")
                print(
                    f"round {round_} {backlog_.shape.name} {variant}: {outcome.events_per_s:,.0f} events/s, "
                    f"CPU µs/event {json.dumps({k: round(v, 1) for k, v in outcome.cpu_us_per_event.items()})}, "
                    f"{outcome.wall_s:.0f} s; whole run {outcome.whole_events_per_s:,.0f} events/s, "
                    f"{outcome.whole_cpu_us_per_event.get('variant', math.nan):.1f} µs/event; {status}",
                    flush=True,
                )
    rows = summarise(outcomes)
    latencies: list[Latency] = []
    for shape in shapes if latency_mode else []:
        for variant in variants:
            if args.latency_rate is not None:
                rate = args.latency_rate
            else:
                capacity = next(
                    (row["events_per_s"] for row in rows if (row["shape"], row["variant"]) == (shape.name, variant)), math.nan
                )
                rate = 0 if math.isnan(capacity) else round(args.latency_fraction * capacity)
            if rate < 1:
                latency = Latency(shape.name, variant, 0, error="no steady rate measured to take a fraction of")
            else:
                try:
                    if variant == "project":
                        latency = run_project_latency(shape, rate, args.workdir, run_id, timing, args.state_backend)
                    else:
                        latency = run_peer_latency(variant, shape, rate, args.workdir, run_id, timing)
                except Exception as exc:  # one broken run must not lose the others' figures
                    latency = Latency(shape.name, variant, rate, error=f"{type(exc).__name__}: {exc}")
            latencies.append(latency)
            f = latency.figures
            print(
                f"latency {shape.name} {variant}: {rate:,} events/s (sent {f.get('sent_rate', math.nan):,.0f}), "
                f"probes {f.get('probes_visible', 0):,.0f} of {f.get('probes_sent', 0):,.0f} visible, "
                f"p50 / p95 / p99 / max {quantiles(f)} s; "
                f"{latency.status}{': ' + latency.error if latency.error else ''}",
                flush=True,
            )
    print()
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    machine += f"; the project's state backend: {args.state_backend or 'hashmap (the default)'}"
    if rows:
        print(f"{events:,} distinct events per shape (+~10 % retries, ~1 % broken lines), {rounds} round(s), {machine}")
        print(markdown(rows, latencies))
    if latencies:
        print()
        print(
            f"Latency: live events (event time = send time), probes every 100th event for {timing.seconds:.0f} s after "
            f"{timing.warmup_s:.0f} s of warm-up; event sent -> queryable; {machine}"
        )
        print(latency_markdown(latencies))
    out = args.json or args.workdir / f"compare-{run_id}.json"
    out.write_text(
        json.dumps(
            {
                "events": events,
                "rounds": rounds,
                "state_backend": args.state_backend or "hashmap",
                "backlogs": [
                    {
                        "shape": b.shape.name,
                        "topic": b.topic,
                        "lines": b.lines,
                        "accepted": b.expected.accepted,
                        **dataclasses.asdict(b.stats),
                    }
                    for b in backlogs
                ],
                "summary": rows,
                "runs": [
                    {**dataclasses.asdict(o), "checksum": dataclasses.asdict(o.checksum) if o.checksum else None}
                    for o in outcomes
                ],
                "latency": {
                    "timing": dataclasses.asdict(timing),
                    "runs": [{**dataclasses.asdict(latency), "status": latency.status} for latency in latencies],
                },
            },
            indent=1,
            default=str,
        )
    )
    print(f"results: {out}")
    return 0 if all(row["status"] == "OK" for row in rows) and all(latency.status == "OK" for latency in latencies) else 1


if __name__ == "__main__":
    sys.exit(main())
