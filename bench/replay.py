"""Benchmark ``metering replay`` (jobs/replay.py) on the demo workload; prints a table (issue #6).

The data is the demo's (jobs/demo.py ``generate``, the demo configuration ``demo_document``), loaded
into a fresh chDB database the way the live pipeline leaves it, without Kafka or Flink:

- every line becomes a Kafka-record-like object (events topic, partition = kafka-python's murmur2 of
  the customer id over 4 partitions as ``metering produce`` keys it, increasing offsets, timestamp =
  receive time: the demo's pace through the file plus 2 s) and goes through the loader's own
  the job's raw rows (``schemas.validate.raw_event_row``) into ``raw_events``;
- the records the job refuses as a whole (invalid, unknown meter, future timestamp) get a
  record-level dead letter (meter ''), as the job writes them, because the replay leaves those out;
- one marker row in ``period_finals`` (revision 1, customer ``~bench-live-watermark``) with
  ``finalized_at_watermark`` far after the workload stands in for the live pipeline having finalized
  every period of it: a replay only rewrites closed periods.

Then it times ``jobs.replay.replay`` (committing, not a dry run) for one UTC day (``--day``) and for
the whole generated span, ``--repeat`` times each. The storage client is wrapped to time every
ClickHouse call, which splits a replay into setup / examine / combine / diff / write.

Usage:
    .venv/bin/python -m bench.replay                       # 1,000,000 events, as the demo
    .venv/bin/python -m bench.replay --events 20000        # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from clickhouse.client import Storage, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import sql_of
from clickhouse.tables import COLUMNS
from jobs.config import Config, load_config
from jobs.demo import SPAN, START, demo_document, generate
from jobs.replay import Progress, ReplayReport, ReplayRequest, replay
from schemas.validate import RAW_EVENT_COLUMNS, job_reason, raw_event_row
from udfs.periods import billing_period, from_epoch_millis

PARTITIONS = 4
RECEIVE_DELAY = timedelta(seconds=2)
MARKER_CUSTOMER = "~bench-live-watermark"
MARKER_WATERMARK = datetime(2026, 7, 1, tzinfo=UTC)  # after every period of the workload plus its grace
INSERT_BATCH = 50_000
DEFAULT_DAY = "2026-03-30"


# --- loading ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """What a raw_events row is made of (``schemas.validate.raw_event_row``, the rows the job writes)."""

    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms


def raw_values(record: Record) -> list[Any] | None:
    """The ``raw_events`` row of ``record`` (column values in the table's order), or None for no valid event."""
    row = raw_event_row(record.value, record.topic, record.partition, record.offset, record.timestamp)
    if row is None:
        return None
    row |= {"event_time": from_epoch_millis(row["event_time"]), "received_at": from_epoch_millis(row["received_at"])}
    return [row[column] for column in RAW_EVENT_COLUMNS]


def _partition(customer: str | None) -> int:
    if customer is None:
        return 0  # kafka-python spreads null keys at random; only malformed JSON has none
    from kafka.partitioner.default import murmur2

    return int(murmur2(customer.encode()) & 0x7FFFFFFF) % PARTITIONS


def _fields(line: str) -> tuple[str | None, datetime | None]:
    """The line's customer id (the producer's key) and event time, when it has them."""
    try:
        doc = json.loads(line)
        customer = doc.get("customer_id")
    except (ValueError, AttributeError):
        return None, None
    try:
        moment = datetime.fromisoformat(str(doc.get("timestamp")).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    return (customer if isinstance(customer, str) else None), moment


def records(path: Path, topic: str) -> Iterator[tuple[Record, str]]:
    """The file as the events topic holds it after ``metering produce`` sent it at the workload's pace.

    Receive time: the newest event time of the demo's span seen so far (a clock the events keep up
    with) plus ``RECEIVE_DELAY``; late events, far-past and far-future timestamps do not move it.
    """
    offsets = [0] * PARTITIONS
    clock = START
    low, high = START - timedelta(days=1), START + SPAN + timedelta(days=1)
    with path.open() as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            customer, moment = _fields(line)
            if moment is not None and moment.tzinfo is not None and low <= moment <= high:
                clock = max(clock, moment)
            partition = _partition(customer)
            ms = int((clock + RECEIVE_DELAY).timestamp() * 1000)
            yield Record(line.encode(), topic, partition, offsets[partition], ms), line
            offsets[partition] += 1


def record_refusal(line: str, received: datetime, config: Config) -> str | None:
    """The job's record-level dead-letter reason for a line (None: it goes on to the meters; heartbeats are not written)."""
    event_types = {m.event_type for m in config.meters}
    reason = job_reason(line, event_types=event_types, received=received, future_skew=config.pipeline.allowed_future_skew)
    return None if reason == "heartbeat" else reason


@dataclass
class Loaded:
    lines: int = 0
    raw_rows: int = 0
    dead_letters: int = 0
    seconds: float = 0.0


def load(storage: Storage, config: Config, path: Path) -> Loaded:
    started = time.monotonic()
    stats = Loaded()
    raw: list[list[Any]] = []
    dead: list[list[Any]] = []

    def flush() -> None:
        if raw:
            storage.client.insert("raw_events", raw, column_names=COLUMNS["raw_events"])
        if dead:
            storage.client.insert("dead_letters", dead, column_names=COLUMNS["dead_letters"])
        raw.clear()
        dead.clear()

    for record, line in records(path, config.kafka.topics.events):
        stats.lines += 1
        received = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        converted = raw_values(record)
        if converted is not None:
            raw.append(converted)
            stats.raw_rows += 1
        reason = record_refusal(line, received, config)
        if reason is not None:
            row = converted
            dead.append(
                [
                    reason,
                    "",
                    row[1] if row else "",
                    row[0] if row else "",
                    line,
                    len(line.encode()),
                    record.partition,
                    record.offset,
                    received,
                ]
            )
            stats.dead_letters += 1
        if len(raw) >= INSERT_BATCH:
            flush()
    flush()
    marker = [MARKER_CUSTOMER, "api_calls", "{}", "count", datetime(2026, 1, 1, tzinfo=UTC),
              datetime(2026, 2, 1, tzinfo=UTC), 0, 0, MARKER_WATERMARK, 1]  # fmt: skip
    storage.client.insert("period_finals", [marker], column_names=[*COLUMNS["period_finals"], "revision"])
    stats.seconds = time.monotonic() - started
    return stats


# --- timing the replay ---------------------------------------------------------------------------------
@dataclass
class Call:
    label: str
    start: float
    end: float


class TimedClient:
    """Proxies the clickhouse-connect client, recording every call's label and monotonic start/end."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[Call] = []
        self._labels = {
            sql_of(name): name for name in ("replay_examine", "replay_minutes", "replay_scope_live", "replay_superseded")
        }

    def _timed(self, label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.calls.append(Call(label, start, time.monotonic()))

    def query(self, sql: str, parameters: Any = None) -> Any:
        return self._timed(self._labels.get(sql, "query"), self._client.query, sql, parameters=parameters)

    def command(self, sql: str, parameters: Any = None) -> Any:
        return self._timed(self._labels.get(sql, "command"), self._client.command, sql, parameters=parameters)

    def insert(self, table: str, rows: Any, column_names: Any = None) -> Any:
        return self._timed(f"insert {table}", self._client.insert, table, rows, column_names=column_names)


class TimedStorage(Storage):
    """The same storage, its every ClickHouse call made through a :class:`TimedClient`."""

    client: TimedClient

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage.settings, TimedClient(storage.client), storage._admin)


STAGES = ("setup", "examine", "combine", "diff", "write")


def stage_split(calls: list[Call], started: float, finished: float) -> dict[str, float]:
    """Wall seconds per stage, from the call timeline (Python time between calls goes to the stage it is in)."""
    examine = [c for c in calls if c.label == "replay_examine"]
    minutes = next(c for c in calls if c.label == "replay_minutes")
    live = next(c for c in calls if c.label == "replay_superseded")
    first_write = next(c for c in calls if c.label == "insert aggregate_segments")
    bounds = [started, examine[0].start, minutes.start, live.start, first_write.start, finished]
    return {stage: bounds[i + 1] - bounds[i] for i, stage in enumerate(STAGES)}


@dataclass
class Case:
    name: str
    request: ReplayRequest
    run: int
    report: ReplayReport
    wall: float
    stages: dict[str, float]
    periods_span: tuple[datetime, datetime]
    progress: list[Progress] = field(default_factory=list)

    @property
    def requested_seconds(self) -> float:
        return (self.request.range_to - self.request.range_from).total_seconds()


def periods_span(config: Config, report: ReplayReport) -> tuple[datetime, datetime]:
    """The event time the replay examined: from the first scope period's start to the last one's end."""
    periods = [
        billing_period(from_epoch_millis(start_ms), config.billing.policy_for(customer).cycle)
        for customer, _meter, start_ms in report.scope
    ]
    return min(p.start for p in periods), max(p.end for p in periods)


def run_case(storage: Storage, config: Config, name: str, start: datetime, end: datetime, run: int) -> Case:
    timed = TimedStorage(storage)
    progress: list[Progress] = []
    request = ReplayRequest(start, end, reason=f"bench.replay {name} #{run}")
    started = time.monotonic()
    report = replay(timed, config, request, progress.append)
    wall = time.monotonic() - started
    stages = stage_split(timed.client.calls, started, started + wall)
    return Case(name, request, run, report, wall, stages, periods_span(config, report), progress)


# --- main -------------------------------------------------------------------------------------------
@dataclass
class Bench:
    events: int
    seed: int
    lines: int
    generate_seconds: float
    loaded: Loaded
    cases: list[Case]
    day: datetime
    whole: tuple[datetime, datetime]
    events_file: Path
    config: Config


def ranges(day: datetime) -> list[tuple[str, datetime, datetime]]:
    return [("one day", day, day + timedelta(days=1)), ("whole span", START, START + SPAN)]


def run(events: int, seed: int, repeat: int, directory: Path, day: datetime, *, keep_file: bool = False) -> Bench:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "metering.yaml"
    config_path.write_text(yaml.safe_dump(demo_document("bench", "127.0.0.1:9092", directory / "chdb"), sort_keys=False))
    config = load_config(config_path, env={})
    events_file = directory / "events.jsonl"
    t = time.monotonic()
    workload = generate(events_file, events, seed=seed)
    generate_seconds = time.monotonic() - t
    print(f"generated {workload.lines:,} lines ({events:,} events, seed {seed}) in {generate_seconds:.1f}s", flush=True)
    cases: list[Case] = []
    with open_storage(config.storage) as storage:
        migrate(storage)
        loaded = load(storage, config, events_file)
        print(
            f"loaded {loaded.raw_rows:,} raw_events rows and {loaded.dead_letters:,} record-level dead letters "
            f"in {loaded.seconds:.1f}s",
            flush=True,
        )
        storage.client.command("OPTIMIZE TABLE raw_events FINAL")  # as after the loader's parts have merged
        for r in range(1, repeat + 1):
            for name, start, end in ranges(day):
                case = run_case(storage, config, name, start, end, r)
                cases.append(case)
                print(f"  run {r} {name}: {case.report.events_examined:,} events in {case.wall:.2f}s", flush=True)
    if not keep_file:
        events_file.unlink(missing_ok=True)
    return Bench(events, seed, workload.lines, generate_seconds, loaded, cases, day, (START, START + SPAN), events_file, config)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def render(bench: Bench) -> str:
    out = [
        f"replay benchmark: {bench.events:,} demo events (seed {bench.seed}), {bench.lines:,} lines, "
        f"{bench.loaded.raw_rows:,} raw_events rows; {os.cpu_count()} cores, Python {platform.python_version()}",
        "",
        "| case | run | requested range | periods examined (UTC) | scope keys | events examined | counted | wall s"
        " | events/s | real-time ratio | setup | examine | combine | diff | write |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in bench.cases:
        r = c.report
        out.append(
            f"| {c.name} | {c.run} | {_iso(c.request.range_from)} → {_iso(c.request.range_to)} "
            f"| {_iso(c.periods_span[0])} → {_iso(c.periods_span[1])} | {len(r.scope)} | {r.events_examined:,} "
            f"| {r.events_counted:,} | {r.seconds:.2f} | {r.events_per_second:,.0f} | {r.realtime_ratio:,.0f}x | "
            + " | ".join(f"{c.stages[s]:.2f}" for s in STAGES)
            + " |"
        )
    out.append("")
    for name in dict.fromkeys(c.name for c in bench.cases):
        runs = [c for c in bench.cases if c.name == name]
        seconds = statistics.median(c.report.seconds for c in runs)
        ratio = statistics.median(c.report.realtime_ratio for c in runs)
        out.append(
            f"{name}: median {seconds:.2f}s over {len(runs)} run(s), {runs[0].report.events_examined:,} events examined, "
            f"{statistics.median(c.report.events_per_second for c in runs):,.0f} events/s, real time x{ratio:,.0f} "
            f"(requested {runs[0].requested_seconds / 3600:.0f} h of event time)"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated demo events (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="replays per case (each commits a new revision)")
    parser.add_argument("--day", default=DEFAULT_DAY, help=f"the UTC day of the one-day case (default {DEFAULT_DAY})")
    parser.add_argument("--dir", help="working directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    day = datetime.fromisoformat(args.day).replace(tzinfo=UTC)
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        bench = run(args.events, args.seed, args.repeat, directory, day)
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    print(render(bench))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "case": c.name,
                        "run": c.run,
                        "range_from": c.request.range_from.isoformat(),
                        "range_to": c.request.range_to.isoformat(),
                        "periods_from": c.periods_span[0].isoformat(),
                        "periods_to": c.periods_span[1].isoformat(),
                        "scope_keys": len(c.report.scope),
                        "refusals": dict(c.report.refusals),
                        "events_examined": c.report.events_examined,
                        "events_counted": c.report.events_counted,
                        "seconds": round(c.report.seconds, 3),
                        "events_per_second": round(c.report.events_per_second, 1),
                        "realtime_ratio": round(c.report.realtime_ratio, 1),
                        "stages": {s: round(v, 3) for s, v in c.stages.items()},
                    }
                    for c in bench.cases
                ]
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
