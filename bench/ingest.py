"""The HTTP ingestion API against ``metering produce``: events/s into Kafka, request latency, CPU per event.

One run, on one loopback broker (started here, ports from ``--port-base``, home
``.metering/bench-ingest``; or ``--bootstrap`` to reuse a running one):

* ``metering serve`` runs as a real subprocess (``python -m jobs.cli serve``) with a configuration
  of its own: the demo's meters, an API key created here, a rate limit high enough not to refuse
  the benchmark, its events topic (``--partitions``, keyed by customer) created before it starts.
* For each batch size (``--batch-sizes``, default 100 and 1,000 events per request) and each
  number of concurrent clients (``--clients``, default 1, 4, 8), ``--events`` distinct valid demo
  events (jobs/demo.py's ``random_event``, event time in the hour before the run) are sent as JSON
  arrays, one request per batch, each client a thread of this process with a connection per request
  (the service does not keep connections alive). Figures: events accepted per second (first
  request sent → last answer read: every accepted event is acknowledged by Kafka by then), p50 /
  p99 request latency, CPU µs per event of the service's process, of the clients (this process)
  and of the broker, and the machine's idle share.
* ``--workers N …``: the measurements again with N ``metering serve --reuse-port`` processes on one
  port (SO_REUSEPORT: the kernel spreads the connections over them; docs/ingest.md, "Several
  workers"); the service's CPU is then all of them together.
* The peer, in the same run, before the HTTP measurements and again after them:
  ``jobs.produce.produce_lines`` (what ``metering produce`` runs: validation, kafka-python,
  idempotent, ``acks=all``) writing the same events (the first and the last measurement's) to a
  topic of its own, timed from the first send until ``flush`` returns.
* Checks: every answer is 200 with every event accepted, and each measurement's events are in
  the topic (end offsets before and after); at the end the whole topic is read back: as many
  records as accepted events, no event id twice. A miss is printed and makes the exit status 1.

``--profile PATH`` runs the service under cProfile (each request thread and the delivery poller
profiled, merged into one pstats file at its exit); its figures are then not comparable.

Usage::

    python -m bench.ingest                                  # default: ~1-2 min
    python -m bench.ingest --events 200000 --clients 1 2 4 8 16
    python -m bench.ingest --batch-sizes 1000 --clients 8 --workers 1 2   # one process against two on one port
    python -m bench.ingest --bootstrap 127.0.0.1:9092       # reuse a running broker
    python -m bench.ingest --profile .metering/bench/ingest/serve.pstats --batch-sizes 1000 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cpu import cpu_seconds, machine_cpu_seconds, process_cpu_seconds, thread_cpu  # noqa: E402

DEFAULT_PORT_BASE = 61292
DEFAULT_EVENTS = 80_000
DEFAULT_BATCH_SIZES = (100, 1000)
DEFAULT_CLIENTS = (1, 4, 8)
MAX_BATCH = 1000  # ingest.max_events at most
LOOPBACK = "127.0.0.1"
#: The issue's target (#30): events/s accepted with batches of 1,000 on 2 cores.
TARGET_EVENTS_PER_S = 50_000


# --- pure parts ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p`` quantile (0 < p ≤ 1) of ``values``: the smallest value with at least
    ``p`` of them at or below it. NaN for no values."""
    if not values:
        return math.nan
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], not {p}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events per measurement (default %(default)s)")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_BATCH_SIZES),
        help="events per request, 1–1000 (%(default)s)",
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=list(DEFAULT_CLIENTS), help="concurrent clients (default %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="metering serve processes sharing the port (--reuse-port), each value a round (default %(default)s)",
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topics (default %(default)s)")
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE, help="the broker's ports (default %(default)s)")
    parser.add_argument("--bootstrap", help="reuse this running broker instead of starting one")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".metering" / "bench" / "ingest", help="config, logs, results")
    parser.add_argument("--json", type=Path, help="results file (default: WORKDIR/ingest-<time>.json)")
    parser.add_argument("--profile", type=Path, help="run the service under cProfile and write its merged stats here")
    parser.add_argument("--seed", type=int, default=30)
    args = parser.parse_args(argv)
    problems = []
    if args.events < 1:
        problems.append("--events must be at least 1")
    if any(not 1 <= b <= MAX_BATCH for b in args.batch_sizes):
        problems.append(f"--batch-sizes must be between 1 and {MAX_BATCH} (the service's ingest.max_events at most)")
    if any(c < 1 for c in args.clients):
        problems.append("--clients must be at least 1")
    if any(w < 1 for w in args.workers):
        problems.append("--workers must be at least 1")
    if args.partitions < 1:
        problems.append("--partitions must be at least 1")
    if problems:
        parser.error("; ".join(problems))
    args.batch_sizes = list(dict.fromkeys(args.batch_sizes))
    args.clients = list(dict.fromkeys(args.clients))
    args.workers = list(dict.fromkeys(args.workers))
    return args


def event_lines(count: int, *, first: int, seed: int, now: datetime) -> list[bytes]:
    """``count`` distinct valid demo events (jobs/demo.py's generator), ids numbered from ``first``,
    event time spread over the hour before ``now`` (none in the future: the service refuses those)."""
    from jobs.demo import CUSTOMERS, random_event

    rng = random.Random(seed)
    customers = sorted(CUSTOMERS)
    lines = []
    for n in range(first, first + count):
        moment = now - timedelta(seconds=rng.uniform(1, 3600))
        event = random_event(rng, n, rng.choice(customers), moment)
        lines.append(json.dumps(event, separators=(",", ":")).encode())
    return lines


def bodies(lines: Sequence[bytes], batch: int) -> list[bytes]:
    """The request bodies: JSON arrays of ``batch`` lines each (the last may hold fewer)."""
    return [b"[" + b",".join(lines[i : i + batch]) + b"]" for i in range(0, len(lines), batch)]


@dataclass
class Measurement:
    """One measurement: the service at one batch size and client count, or the peer."""

    variant: str  # "serve" or "produce"
    batch: int | None
    clients: int | None
    events: int
    accepted: int
    in_topic: int
    seconds: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # service / clients / producer / broker
    idle_share: float = math.nan
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    workers: int = 1  # metering serve processes sharing the port

    @property
    def ok(self) -> bool:
        return self.accepted == self.events == self.in_topic and set(self.statuses) <= {"200"}

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else math.nan

    def cpu_us_per_event(self, part: str) -> float:
        return self.cpu_s[part] / self.accepted * 1e6 if part in self.cpu_s and self.accepted else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "latencies_ms"},
            "ok": self.ok,
            "events_per_s": self.events_per_s,
            "p50_ms": percentile(self.latencies_ms, 0.5) if self.latencies_ms else None,
            "p99_ms": percentile(self.latencies_ms, 0.99) if self.latencies_ms else None,
            "cpu_us_per_event": {part: self.cpu_us_per_event(part) for part in self.cpu_s},
            "latencies_ms": self.latencies_ms,
        }


def _figure(value: float, digits: int = 0) -> str:
    return "–" if math.isnan(value) else f"{value:,.{digits}f}"


def table(measurements: Sequence[Measurement]) -> str:
    """A Markdown table: each measurement's figures, the service's as a ratio to the peer's mean events/s."""
    peers = [m.events_per_s for m in measurements if m.variant == "produce"]
    peer = mean(peers) if peers else math.nan
    rows = [
        "| variant | batch | clients | events | events/s | × produce | p50 / p99 ms "
        "| CPU µs/event: process / clients / broker | machine idle | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for m in measurements:
        own = m.cpu_us_per_event("service" if m.variant == "serve" else "producer")
        latency = f"{percentile(m.latencies_ms, 0.5):,.1f} / {percentile(m.latencies_ms, 0.99):,.1f}" if m.latencies_ms else "–"
        check = "OK" if m.ok else f"MISS (accepted {m.accepted:,}, in topic {m.in_topic:,}, statuses {m.statuses})"
        rows.append(
            f"| {_variant(m)} | {m.batch or '–'} | {m.clients or '–'} "
            f"| {m.events:,} | {_figure(m.events_per_s)} | {_figure(m.events_per_s / peer, 2)} | {latency} "
            f"| {_figure(own, 1)} / {_figure(m.cpu_us_per_event('clients'), 1)} / {_figure(m.cpu_us_per_event('broker'), 1)} "
            f"| {_figure(m.idle_share * 100)} % | {check} |"
        )
    return "\n".join(rows)


def _variant(m: Measurement) -> str:
    if m.variant != "serve":
        return "metering produce"
    return "metering serve" if m.workers == 1 else f"metering serve × {m.workers} workers"


def service_threads(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds of the service's librdkafka threads (``rdk:*``: C, outside the GIL) between two
    ``thread_cpu`` samples: ``service_librdkafka``. The rest of the process's CPU is Python (request
    threads, one per connection; the delivery poller; the accepting main thread), whose threads
    Python 3.11 leaves unnamed in the kernel."""
    seconds = sum(s - before.get(tid, (name, 0.0))[1] for tid, (name, s) in after.items() if name.startswith("rdk:"))
    return {"service_librdkafka": seconds}


# --- the run -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def post(port: int, key: str, body: bytes) -> tuple[int, int, float]:
    """(status, events accepted, seconds) of one ``POST /v1/events``, a connection of its own."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        connection.request(
            "POST", "/v1/events", body=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    accepted = json.loads(data).get("accepted", 0) if response.status in (200, 503) else 0
    return response.status, int(accepted), seconds


def send_all(port: int, key: str, requests: Sequence[bytes], clients: int) -> tuple[float, list[float], int, Counter[str]]:
    """Send ``requests`` from ``clients`` threads, each taking the next body when its last is answered.

    Returns (wall seconds from the first send to the last answer, latencies in ms, events accepted, statuses)."""
    lock = threading.Lock()
    pending = iter(requests)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    accepted = [0]
    errors: list[str] = []

    def client() -> None:
        while True:
            with lock:
                body = next(pending, None)
            if body is None:
                return
            try:
                status, ok, seconds = post(port, key, body)
            except OSError as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    statuses["error"] += 1
                continue
            with lock:
                latencies.append(seconds * 1000)
                statuses[str(status)] += 1
                accepted[0] += ok

    threads = [threading.Thread(target=client, name=f"bench-client-{n}") for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        print(f"  {len(errors)} request(s) failed: {errors[0]}", file=sys.stderr)
    return wall, latencies, accepted[0], statuses


def topic_records(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` now: the sum over its partitions of end − start offsets (no transactions here)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ingest-{uuid.uuid4().hex[:8]}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def read_back(bootstrap: str, topic: str, expected: int, timeout_s: float = 120) -> tuple[int, int]:
    """(records, distinct event ids) of the whole topic, read to its end offsets."""
    from jobs.loader.kafka_consumer import CONSUMER_SETTINGS, ConfluentConsumer

    settings = {**CONSUMER_SETTINGS, "bootstrap.servers": bootstrap, "group.id": f"bench-ingest-{uuid.uuid4().hex[:8]}"}
    consumer = ConfluentConsumer([topic], settings)
    records = 0
    ids: set[str] = set()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            polled = consumer.consume(10_000, 0.5)
            for record in polled:
                records += 1
                if record.value is not None:
                    ids.add(json.loads(record.value)["event_id"])
            if not polled and records >= expected and consumer.caught_up():
                break
    finally:
        consumer.close()
    return records, len(ids)


@contextmanager
def broker_at(args: argparse.Namespace) -> Iterator[tuple[str, int | None]]:
    """(bootstrap, broker pid or None): ``--bootstrap``'s, or a broker of our own started and stopped here."""
    if args.bootstrap:
        yield args.bootstrap, None
        return
    from infra.kafka import KafkaBroker
    from jobs.config import load_stack

    env = dict(os.environ)
    env["METERING__STACK__HOME"] = str(ROOT / ".metering" / "bench-ingest")
    stack = load_stack(env).with_ports(args.port_base)
    stack.home.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(stack)
    broker.start()
    try:
        yield stack.bootstrap_servers, broker.process.pid()
    finally:
        broker.stop()


def service_config(workdir: Path, bootstrap: str, topic: str, port: int) -> Path:
    """The service's configuration: the demo's meters, its own key register, no rate limit in the way."""
    import yaml

    from jobs.demo import demo_document

    document = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": {"events": topic}},
        "ingest": {"keys": str(workdir / "keys"), "port": port, "rate": 1_000_000, "burst": 1_000_000},
        "meters": demo_document("bench", bootstrap, workdir / "unused-chdb")["meters"],
    }
    path = workdir / "serve.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@contextmanager
def service(
    config: Path, port: int, log: Path, profile: Path | None, workers: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``metering serve`` as ``workers`` subprocesses on one port (``--reuse-port`` when more than one),
    each ready (its ``listening`` log line, then ``/readyz`` 200); stopped with SIGTERM (a graceful drain)."""
    serve = ["serve", "--config", str(config), *(["--reuse-port"] if workers > 1 else [])]
    command = [sys.executable, "-m", "jobs.cli", *serve]
    if profile is not None:
        command = [sys.executable, "-m", "bench.ingest", "--profiled-serve", str(profile), "--", *serve]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = [log if workers == 1 else log.with_name(f"{log.stem}-{n}{log.suffix}") for n in range(workers)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for path in logs:
            with path.open("wb") as log_file:
                processes.append(subprocess.Popen(command, stderr=log_file, stdout=log_file, env=env, cwd=ROOT))
        deadline = time.monotonic() + 60
        for process, path in zip(processes, logs, strict=True):
            while b'"listening"' not in path.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"metering serve did not start (exit {process.poll()}); its log: {path}")
                time.sleep(0.2)
        while True:
            try:
                if get(port, "/readyz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"metering serve did not become ready; its logs: {logs}")
            time.sleep(0.2)
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_serve(
    port: int,
    key: str,
    lines: Sequence[bytes],
    batch: int,
    clients: int,
    *,
    bootstrap: str,
    topic: str,
    pids: dict[str, list[int]],
) -> Measurement:
    requests = bodies(lines, batch)
    before_topic = topic_records(bootstrap, topic)
    threads_before = [thread_cpu(pid) for pid in pids["service"]]
    cpu_before = {part: cpu_seconds(group) for part, group in pids.items()} | {"clients": process_cpu_seconds()}
    busy_before, idle_before = machine_cpu_seconds()
    wall, latencies, accepted, statuses = send_all(port, key, requests, clients)
    busy_after, idle_after = machine_cpu_seconds()
    cpu = {part: cpu_seconds(group) - cpu_before[part] for part, group in pids.items()}
    cpu["clients"] = process_cpu_seconds() - cpu_before["clients"]
    cpu["service_librdkafka"] = sum(
        service_threads(before, thread_cpu(pid))["service_librdkafka"]
        for pid, before in zip(pids["service"], threads_before, strict=True)
    )
    in_topic = topic_records(bootstrap, topic) - before_topic
    idle = idle_after - idle_before
    return Measurement(
        "serve",
        batch,
        clients,
        len(lines),
        accepted,
        in_topic,
        wall,
        cpu,
        idle / ((busy_after - busy_before) + idle) if idle else 0.0,
        latencies,
        dict(statuses),
        len(pids["service"]),
    )


def measure_produce(lines: Sequence[bytes], *, bootstrap: str, topic: str, broker_pid: int | None) -> Measurement:
    """The peer: ``metering produce``'s library function writing ``lines`` (producer made before the clock)."""
    from jobs.produce import make_producer, produce_lines

    producer = make_producer(bootstrap)
    try:
        before_topic = topic_records(bootstrap, topic)
        pids = {"broker": broker_pid} if broker_pid is not None else {}
        cpu_before = {part: cpu_seconds([pid]) for part, pid in pids.items()} | {"producer": process_cpu_seconds()}
        busy_before, idle_before = machine_cpu_seconds()
        started = time.perf_counter()
        summary = produce_lines(lines, producer=producer, topic=topic)
        wall = time.perf_counter() - started
        busy_after, idle_after = machine_cpu_seconds()
        cpu = {part: cpu_seconds([pid]) - cpu_before[part] for part, pid in pids.items()}
        cpu["producer"] = process_cpu_seconds() - cpu_before["producer"]
    finally:
        producer.close()
    in_topic = topic_records(bootstrap, topic) - before_topic
    idle = idle_after - idle_before
    statuses = {"200": 1} if summary.failed == summary.rejected == 0 else {"failed": summary.failed, "rejected": summary.rejected}
    return Measurement(
        "produce", None, None, len(lines), summary.sent, in_topic, wall, cpu,
        idle / ((busy_after - busy_before) + idle) if idle else 0.0, [], statuses,
    )  # fmt: skip


def run(args: argparse.Namespace, command: str) -> int:
    from jobs.ingest.keys import KeyStore
    from jobs.topics import ensure_topic

    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    workdir: Path = args.workdir / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"command: {command}")
    print(f"workdir: {workdir}", flush=True)
    cells = [(workers, batch, clients) for workers in args.workers for batch in args.batch_sizes for clients in args.clients]
    now = started_at
    lines = [event_lines(args.events, first=n * args.events, seed=args.seed + n, now=now) for n in range(len(cells))]
    measurements: list[Measurement] = []
    with broker_at(args) as (bootstrap, broker_pid):
        run_id = uuid.uuid4().hex[:8]
        serve_topic, produce_topic = f"bench-ingest-{run_id}-serve", f"bench-ingest-{run_id}-produce"
        for topic in (serve_topic, produce_topic):
            ensure_topic(bootstrap, topic, partitions=args.partitions)
        port = free_port()
        config = service_config(workdir, bootstrap, serve_topic, port)
        key, _ = KeyStore(workdir / "keys").create("bench")
        print(f"broker {bootstrap}; metering serve on {LOOPBACK}:{port} -> {serve_topic} ({args.partitions} partitions)")

        def peer(round_lines: Sequence[bytes], when: str) -> None:
            m = measure_produce(round_lines, bootstrap=bootstrap, topic=produce_topic, broker_pid=broker_pid)
            measurements.append(m)
            print(f"  produce ({when}): {m.accepted:,} events, {m.seconds:.2f} s, {m.events_per_s:,.0f} events/s", flush=True)

        peer(lines[0], "before")
        exit_codes: list[int] = []
        for workers in args.workers:
            with service(config, port, workdir / f"serve-{workers}w.log", args.profile, workers) as processes:
                pids = {"service": [p.pid for p in processes]} | ({"broker": [broker_pid]} if broker_pid is not None else {})
                for (_, batch, clients), cell_lines in [(c, ls) for c, ls in zip(cells, lines, strict=True) if c[0] == workers]:
                    m = measure_serve(port, key, cell_lines, batch, clients, bootstrap=bootstrap, topic=serve_topic, pids=pids)
                    measurements.append(m)
                    print(
                        f"  serve × {workers} batch {batch:,} × {clients} clients: {m.accepted:,}/{m.events:,} accepted, "
                        f"{m.seconds:.2f} s, {m.events_per_s:,.0f} events/s, p50 {percentile(m.latencies_ms, 0.5):.1f} ms, "
                        f"p99 {percentile(m.latencies_ms, 0.99):.1f} ms; service µs/event {m.cpu_us_per_event('service'):.1f} "
                        f"(librdkafka's threads {m.cpu_us_per_event('service_librdkafka'):.1f}, the rest Python)"
                        f"{'' if m.ok else ' MISS'}",
                        flush=True,
                    )
            exit_codes += [p.returncode for p in processes]
        exit_code = max(exit_codes, key=abs)
        peer(lines[-1], "after")
        accepted = sum(m.accepted for m in measurements if m.variant == "serve")
        records, distinct = read_back(bootstrap, serve_topic, accepted)
    read_back_ok = records == distinct == accepted
    print()
    print(table(measurements))
    print()
    print(
        f"read back {serve_topic}: {records:,} records, {distinct:,} distinct event ids, {accepted:,} accepted: "
        f"{'OK' if read_back_ok else 'MISS'}; metering serve exited {exit_code}"
    )
    result = {
        "command": command,
        "started_at": started_at.isoformat(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "profiled_serve"},
        "machine": {"cores": os.cpu_count(), "load_average": os.getloadavg()},
        "measurements": [m.summary() for m in measurements],
        "read_back": {"records": records, "distinct_ids": distinct, "accepted": accepted, "ok": read_back_ok},
        "serve_exit": exit_code,
        "profile": str(args.profile) if args.profile else None,
    }
    path = args.json or workdir.parent / f"ingest-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"results: {path}")
    if args.profile:
        print(f"profile of the service: {args.profile} (python -m pstats {args.profile})")
    ok = read_back_ok and exit_code == 0 and all(m.ok for m in measurements)
    return 0 if ok else 1


# --- the profiled service ------------------------------------------------------------------------


def profiled_serve(out: Path, serve_argv: list[str]) -> int:
    """``metering serve`` with cProfile on every request thread and on the delivery poller, merged into ``out``.

    cProfile sees only the thread that enables it, so each request handler (one thread per
    connection) and the poller (delivery callbacks) gets its own profiler; they are merged at exit."""
    import cProfile
    import pstats

    from jobs.cli import main as cli_main
    from jobs.ingest import kafka, server

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def profiled(method: Any) -> Any:
        def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
            profile = cProfile.Profile()
            profile.enable()
            try:
                return method(self, *a, **kw)
            finally:
                profile.disable()
                with lock:
                    profiles.append(profile)

        return wrapper

    server._Quiet.handle = profiled(server._Quiet.handle)  # type: ignore[method-assign]
    kafka.KafkaSink._poll = profiled(kafka.KafkaSink._poll)  # type: ignore[method-assign]
    code = cli_main(serve_argv)
    with lock:
        if profiles:
            stats = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                stats.add(profile)
            out.parent.mkdir(parents=True, exist_ok=True)
            stats.dump_stats(str(out))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--profiled-serve"]:  # internal: the service under --profile
        rest = argv[2:]
        return profiled_serve(Path(argv[1]), rest[1:] if rest[:1] == ["--"] else rest)
    args = parse_args(argv)
    return run(args, shlex.join(["python", "-m", "bench.ingest", *argv]))


if __name__ == "__main__":
    sys.exit(main())
