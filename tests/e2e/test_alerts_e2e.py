"""Threshold alerts end to end: generated events → the metering job → ``metering alerts run`` → signed webhooks.

A seeded workload for three customers (about 10 % duplicates, events late within the grace window,
events late after their period's final) goes through the real chain: the metering job on the
standalone cluster, whose TaskManager is SIGKILLed mid-stream and replaced, and the alerts service
as its own process, SIGKILLed mid-stream and restarted, whose rules POST to a receiver on
127.0.0.1 that checks every signature and records each POST's ``webhook-id``.

The expected alerts come from the workload alone, not from the pipeline's output. The thresholds
are far apart compared with what one minute of one group can add, so each threshold is crossed by
an update of its own and the alerts do not depend on how the job's steps and the evaluator's
batches fall: every threshold a phase's events reach triggers (March), the March alarms resolve
when April starts (``new_period``), events late within grace trigger what they reach, the final
changes nothing, and corrections after it give one ``alert.corrected`` per threshold they cross.
The phases are separated by barriers (the job has read and committed everything; the evaluator's
committed offsets reach the end of its input topics), which keeps the order between topics that
the expectation relies on: the March thresholds all fired before April's first record, the
finals read before the corrections.

The alerts topic (``read_committed``) must hold every expected alert exactly once and nothing else;
the receiver must have every expected id (a repeat of an id is at-least-once redelivery, counted and
reported) and no other, each POST signed correctly.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from infra.settings import PROJECT_ROOT, StackSettings
from jobs.alerts.service import GROUP as ALERTS_GROUP
from jobs.alerts.webhooks import verify
from jobs.config import Config, load_config
from jobs.demo import demo_document
from jobs.topics import alerts_topic, committed_values, ensure_topic, ensure_topics
from tests.e2e.browser import artifacts_dir
from tests.e2e.harness import metering, produce, wait_until_consumed
from udfs.alerting import AlertKind, alert_id
from udfs.periods import rfc3339_millis

SEED = 4242
SECRET = "whsec_" + base64.b64encode(b"alerts-e2e-signing-key-0123456789").decode()
MARCH, APRIL, MAY = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)
GRACE = timedelta(hours=12)
MODELS = ("m1", "m2")
CALL_PRICE, TOKEN_PRICE = Decimal("0.01"), Decimal("0.0005")
ENTITLEMENT = Decimal(100_000)
#: March's events come in bursts: many events a minute, so a minute's on-time segment has several versions.
BURST = timedelta(minutes=8)
#: Rule name → (kind, meter, thresholds); every rule posts to the test's receiver.
RULES: dict[str, tuple[str, str, tuple[Decimal, ...]]] = {
    "calls": ("usage", "api_calls", tuple(Decimal(t) for t in (400, 800, 1200, 1600))),
    "calls-spend": ("spend", "api_calls", (Decimal("6.00"), Decimal("12.00"))),
    "tokens-quota": ("entitlement_pct", "tokens", tuple(Decimal(t) for t in (25, 50, 75, 100))),
    "tokens-spend": ("spend", "tokens", (Decimal("20.00"), Decimal("40.00"), Decimal("60.00"))),
}


@dataclass(frozen=True)
class Plan:
    """One customer's unique events per phase: (api calls, token events) on time in March, late within grace, after the final."""

    march: tuple[int, int]
    in_grace: tuple[int, int]
    after_final: tuple[int, int]


PLANS = {
    # After the final, 60 calls lift 1,155 over 1,200 and 11.55 over 12.00: two alert.corrected.
    "alpha": Plan(march=(1150, 480), in_grace=(5, 5), after_final=(60, 4)),
    # Late within grace, 40 calls lift 1,180 over 1,200 after April began: a March alert.triggered then.
    "bravo": Plan(march=(1180, 800), in_grace=(40, 6), after_final=(5, 3)),
    "charlie": Plan(march=(450, 260), in_grace=(5, 5), after_final=(3, 2)),
}


@dataclass(frozen=True)
class Event:
    event_id: str
    customer: str
    meter: str  # api_calls or tokens
    at: datetime
    quantity: int
    model: str = ""

    def line(self) -> str:
        body: dict[str, Any] = {"event_id": self.event_id, "customer_id": self.customer, "timestamp": rfc3339_millis(self.at)}
        if self.meter == "api_calls":
            body.update(event_type="api_call", quantity=1, properties={"endpoint": "/v1/chat"})
        else:
            body.update(event_type="tokens", quantity=str(self.quantity), properties={"model": self.model})
        return json.dumps(body, separators=(",", ":"))


@dataclass
class Workload:
    """The lines of each phase in produce order (duplicates included), and each phase's unique events."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    duplicates: int = 0
    late_in_stream: int = 0


PHASES = ("march", "april_start", "in_grace", "april_to_final", "after_final")


def generate(seed: int) -> Workload:
    """The seeded workload (module docstring): events of each phase, in event-time order with stragglers and retries."""
    rng = random.Random(seed)
    counter = iter(range(10**9))

    def events(customer: str, calls: int, tokens: int, start: datetime, end: datetime, bursts: int = 0) -> list[Event]:
        """Events at random times between ``start`` and ``end``; with ``bursts``, inside that many 8-minute bursts."""
        span = (end - start).total_seconds()
        starts = [start + timedelta(seconds=rng.uniform(0, span - BURST.total_seconds())) for _ in range(bursts)]

        def moment() -> datetime:
            if starts:
                return rng.choice(starts) + timedelta(seconds=rng.uniform(0, BURST.total_seconds()))
            return start + timedelta(seconds=rng.uniform(0, span))

        out = [Event(f"{customer}-{next(counter):07d}", customer, "api_calls", start, 1) for _ in range(calls)]
        out += [
            Event(f"{customer}-{next(counter):07d}", customer, "tokens", start, rng.randint(1, 200), rng.choice(MODELS))
            for _ in range(tokens)
        ]
        return [Event(e.event_id, e.customer, e.meter, moment(), e.quantity, e.model) for e in out]

    workload = Workload()
    phases: dict[str, list[Event]] = {p: [] for p in PHASES}
    for customer, plan in PLANS.items():
        phases["march"] += events(customer, *plan.march, MARCH, APRIL - timedelta(minutes=5), bursts=31)
        phases["april_start"] += events(customer, 4, 4, APRIL, APRIL + timedelta(hours=4))
        phases["in_grace"] += events(customer, *plan.in_grace, APRIL - timedelta(hours=20), APRIL)
        phases["april_to_final"] += events(customer, 10, 10, APRIL + timedelta(hours=4), APRIL + GRACE + timedelta(hours=1))
        phases["after_final"] += events(customer, *plan.after_final, MARCH + timedelta(days=2), APRIL - timedelta(days=1))
    for phase in PHASES:
        ordered = sorted(phases[phase], key=lambda e: e.at)
        # Stragglers: about 3 % of March's events arrive 2 to 20 hours of event time later (behind the watermark).
        if phase == "march":
            keyed = [(e.at + (timedelta(hours=rng.uniform(2, 20)) if rng.random() < 0.03 else timedelta()), e) for e in ordered]
            workload.late_in_stream = sum(1 for at, e in keyed if at != e.at)
            ordered = [e for _, e in sorted(keyed, key=lambda pair: pair[0])]
        lines: list[str] = []
        for event in ordered:
            lines.append(event.line())
            if rng.random() < 0.10:  # a client's retry of a recent event: the same event_id again
                lines.append(lines[-1 - rng.randrange(min(len(lines), 50))])
                workload.duplicates += 1
        workload.lines[phase] = lines
        workload.events[phase] = ordered
    return workload


# --- the expected alerts, from the workload alone ----------------------------------------------------


def period_start_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def rule_value(rule: str, events: Sequence[Event]) -> Decimal:
    """What the rule watches over ``events`` (one customer's, one period's), computed here with plain decimals."""
    kind, meter, _ = RULES[rule]
    mine = [e for e in events if e.meter == meter]
    if kind == "usage":
        return Decimal(len(mine))
    if kind == "entitlement_pct":
        return Decimal(sum(e.quantity for e in mine)) * 100 / ENTITLEMENT
    per_group: Counter[str] = Counter()
    for e in mine:
        per_group[e.model] += e.quantity
    price = CALL_PRICE if meter == "api_calls" else TOKEN_PRICE
    cent = Decimal("0.01")
    return sum(((Decimal(q) * price).quantize(cent, ROUND_HALF_UP) for q in per_group.values()), Decimal(0))


def largest_step(rule: str, workload: Workload) -> Decimal:
    """The most one aggregate, late segment or correction record can add: one minute of one group, in the rule's unit."""
    kind, meter, _ = RULES[rule]
    minutes: Counter[tuple[str, str, datetime]] = Counter()
    for events in workload.events.values():
        for e in events:
            if e.meter == meter:
                minutes[(e.customer, e.model, e.at.replace(second=0, microsecond=0))] += e.quantity
    top = Decimal(max(minutes.values()))
    if kind == "usage":
        return top
    if kind == "entitlement_pct":
        return top * 100 / ENTITLEMENT
    return top * (CALL_PRICE if meter == "api_calls" else TOKEN_PRICE) + Decimal("0.01")  # plus a rounding cent


def expected_alerts(workload: Workload) -> dict[str, tuple[str, str, str, Decimal, int]]:
    """alert id → (kind, rule, customer, threshold, sequence), phase by phase (module docstring)."""
    expected: dict[str, tuple[str, str, str, Decimal, int]] = {}

    def add(kind: AlertKind, rule: str, customer: str, threshold: Decimal, start: datetime, sequence: int = 0) -> None:
        meter = RULES[rule][1]
        key = alert_id(rule, threshold, customer, meter, period_start_ms(start), str(kind), sequence)
        assert key not in expected
        expected[key] = (str(kind), rule, customer, threshold, sequence)

    for customer in PLANS:

        def of(*phases: str, in_april: bool = False, customer: str = customer) -> list[Event]:
            return [e for p in phases for e in workload.events[p] if e.customer == customer and (e.at >= APRIL) == in_april]

        for rule, (_, meter, thresholds) in RULES.items():
            assert largest_step(rule, workload) < min(b - a for a, b in itertools.pairwise(thresholds))
            on_time = rule_value(rule, of("march"))
            final = rule_value(rule, of("march", "in_grace"))
            corrected = rule_value(rule, of("march", "in_grace", "after_final"))
            fired = [t for t in thresholds if t <= on_time]
            for t in fired:
                add(AlertKind.TRIGGERED, rule, customer, t, MARCH)
            if fired and any(e.meter == meter for e in of("april_start", in_april=True)):  # April resolves March's alarms
                add(AlertKind.RESOLVED, rule, customer, fired[-1], MARCH)
            for t in thresholds:
                if on_time < t <= final:  # still ok: late events within grace reach it
                    add(AlertKind.TRIGGERED, rule, customer, t, MARCH)
            crossings = [t for t in thresholds if min(final, corrected) < t <= max(final, corrected)]
            for sequence, t in enumerate(crossings if corrected >= final else crossings[::-1], start=1):
                add(AlertKind.CORRECTED, rule, customer, t, MARCH, sequence)
            april = rule_value(rule, of("april_start", "april_to_final", in_april=True))
            for t in thresholds:
                if t <= april:
                    add(AlertKind.TRIGGERED, rule, customer, t, APRIL)
    return expected


# --- the receiver and the alerts process ------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint on 127.0.0.1: checks each POST's signature, records its ``webhook-id``, answers 204."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.posts: list[str] = []
        self.bodies: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        good = verify(SECRET, headers, body, now=int(time.time()))
        with self.server.lock:
            if good:
                self.server.posts.append(headers["webhook-id"])
                self.server.bodies.setdefault(headers["webhook-id"], json.loads(body))
            else:
                self.server.bad_signatures += 1
        self.send_response(204 if good else 401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class AlertsProcess:
    """``metering alerts run`` as a child process (its output appended to ``log``)."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.config, self.log, self.env = config, log, env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jobs.cli", "alerts", "run", "--config", str(self.config), "--verbose"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]

    def kill(self) -> None:
        self.alive()
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def alerts_on_topic(config: Config) -> list[dict[str, Any]]:
    return [json.loads(v) for v in committed_values(config.kafka.bootstrap_servers, alerts_topic(config), timeout_s=60)]


def evaluator_caught_up(config: Config, service: AlertsProcess, timeout_s: float = 90) -> None:
    """Until the evaluator's committed offsets reach the end of the aggregates, finals and corrections topics.

    The last thing in each partition is a transaction marker, which takes an offset a reader may not
    count: a committed offset at the end, or one before it, has every record read.
    """
    topics = config.kafka.topics
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=ALERTS_GROUP, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (topics.aggregates, topics.finals, topics.corrections)
            for p in consumer.partitions_for_topic(topic) or []
        ]
        deadline = time.monotonic() + timeout_s
        while True:
            ends = consumer.end_offsets(partitions)
            behind = {f"{tp.topic}/{tp.partition}": ((consumer.committed(tp) or 0), end) for tp, end in ends.items()}
            behind = {name: pair for name, pair in behind.items() if pair[0] < pair[1] - 1}
            if not behind:
                return
            service.alive()
            assert time.monotonic() < deadline, f"the evaluator did not catch up: (committed, end) {behind}"
            time.sleep(0.5)
    finally:
        consumer.close()


def test_alerts_from_generated_events_through_the_job_exactly_once_across_kill_9(
    tmp_path: Path, stack: Any, stack_settings: StackSettings, receiver: Receiver
) -> None:
    started = time.monotonic()
    workload = generate(SEED)
    expected = expected_alerts(workload)
    kinds = Counter(kind for kind, *_ in expected.values())
    assert set(kinds) == {str(k) for k in AlertKind}, kinds  # the workload exercises every kind
    assert len({rule for _, rule, *_ in expected.values()}) == len(RULES)

    run_id = uuid.uuid4().hex[:8]
    bootstrap = stack_settings.bootstrap_servers
    document = demo_document(run_id, bootstrap, tmp_path / "chdb")
    # One events partition, never idle: the watermark follows the events alone (test_restore_lateness.py).
    document["pipeline"].update(
        checkpoint_interval="1s", provisional_interval="5s", max_out_of_orderness="30s", idle_timeout="1h"
    )
    document["billing"] = {"default": {"period": "month", "timezone": "UTC", "grace": "12h"}}
    document["meters"] = [
        {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
        {"name": "tokens", "event_type": "tokens", "aggregation": "sum", "group_by": ["model"]},
    ]
    since = "2026-01-01T00:00:00Z"
    document["rating"] = {
        "currency": "USD",
        "default_plan": "std",
        "plans": {
            "std": {
                "meters": {
                    "api_calls": [{"starts_at": since, "model": "per_unit", "unit_price": str(CALL_PRICE)}],
                    "tokens": [{"starts_at": since, "model": "per_unit", "unit_price": str(TOKEN_PRICE)}],
                }
            }
        },
    }
    webhook = {"url": f"http://127.0.0.1:{receiver.server_port}/hooks", "secret_env": "ALERTS_E2E_SECRET"}
    rules = []
    for name, (kind, meter, thresholds) in RULES.items():
        rule: dict[str, Any] = {"name": name, "kind": kind, "meter": meter, "thresholds": [f"{t:f}" for t in thresholds]}
        if kind == "entitlement_pct":
            rule["entitlement"] = f"{ENTITLEMENT:f}"
        rules.append({**rule, "webhook": webhook})
    document["alerts"] = {"rules": rules}
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    env = {**os.environ, "METERING__STACK__HOME": str(stack_settings.home), "ALERTS_E2E_SECRET": SECRET}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    config = load_config(config_path, env=env)
    topics = config.kafka.topics
    ensure_topic(bootstrap, topics.events, partitions=1)
    ensure_topics(config, partitions=3)  # the job's outputs: several partitions, read in any interleaving
    cluster_args = ["--cluster", stack_settings.flink_rest_url]
    cluster = stack.flink
    service = AlertsProcess(config_path, tmp_path / "alerts.log", env)

    def send(phase: str) -> None:
        produce(bootstrap, topics.events, workload.lines[phase], tmp_path / f"{phase}.jsonl")

    def checkpoints(job_id: str) -> int:
        return int(cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"])

    def barrier(job_id: str) -> None:
        """The job has read and committed every event produced, and the evaluator has read all it wrote."""
        wait_until_consumed(config, timeout_s=180)
        done = checkpoints(job_id)
        deadline = time.monotonic() + 60
        while checkpoints(job_id) < done + 2:  # what the last events caused (timers, steps) is committed too
            assert time.monotonic() < deadline, "no checkpoint completed"
            time.sleep(0.2)
        evaluator_caught_up(config, service)

    job_id: str | None = None
    timings: dict[str, float] = {}
    try:
        service.start()
        submitted = metering(env, "job", "submit", *cluster_args, "--config", str(config_path), "--job-name", f"alerts-{run_id}")
        job_id = str(submitted["job_id"])
        timings["submitted"] = time.monotonic() - started

        # March, streamed while the TaskManager and then the alerts process are SIGKILLed.
        writer = threading.Thread(target=lambda: paced(bootstrap, topics.events, workload.lines["march"], tmp_path, 25.0))
        writer.start()
        deadline = time.monotonic() + 120
        while not alerts_on_topic(config) or checkpoints(job_id) < 1:
            assert time.monotonic() < deadline, "no alert within 120 s of the job's start"
            service.alive()
            time.sleep(0.5)
        cluster.taskmanager.kill()
        cluster.start_taskmanager()
        timings["taskmanager killed"] = time.monotonic() - started
        seen = len(alerts_on_topic(config))
        deadline = time.monotonic() + 120
        while len(alerts_on_topic(config)) == seen:  # the restarted job's first alerts
            assert time.monotonic() < deadline, "no new alert within 120 s of the TaskManager's restart"
            time.sleep(0.5)
        service.kill()
        service.start()
        timings["alerts killed"] = time.monotonic() - started
        writer.join(180)
        assert not writer.is_alive(), "producing March's events took more than 180 s"
        barrier(job_id)
        timings["march"] = time.monotonic() - started

        for phase in ("april_start", "in_grace", "april_to_final"):
            send(phase)
            barrier(job_id)
            timings[phase] = time.monotonic() - started
        march_finals = [
            f
            for f in (json.loads(v) for v in committed_values(bootstrap, topics.finals))
            if f["period_start_ms"] == period_start_ms(MARCH)
        ]
        assert len(march_finals) == len(PLANS) * (1 + len(MODELS)), march_finals  # api_calls + tokens per model
        send("after_final")
        barrier(job_id)
        timings["after_final"] = time.monotonic() - started

        deadline = time.monotonic() + 90
        while set(receiver.posts) != set(expected) and time.monotonic() < deadline:
            service.alive()
            time.sleep(0.5)
        time.sleep(2)  # anything extra would come now
        timings["webhooks"] = time.monotonic() - started
        alerts = alerts_on_topic(config)
    finally:
        service.stop()
        if job_id is not None:
            metering(env, "job", "cancel", job_id, *cluster_args)

    ids = Counter(a["id"] for a in alerts)
    posts = Counter(receiver.posts)
    report = {
        "expected": dict(Counter(kind for kind, *_ in expected.values())),
        "on_topic": len(alerts),
        "doubled_on_topic": sorted(i for i, n in ids.items() if n > 1),
        "missing_on_topic": sorted(set(expected) - set(ids)),
        "unexpected_on_topic": [a for a in alerts if a["id"] not in expected],
        "posts": len(receiver.posts),
        "redelivered": {i: n for i, n in posts.items() if n > 1},
        "missing_posts": sorted(set(expected) - set(posts)),
        "unexpected_posts": [receiver.bodies.get(i) for i in set(posts) - set(expected)],
        "bad_signatures": receiver.bad_signatures,
        "events": {p: len(e) for p, e in workload.events.items()},
        "lines": {p: len(lines) for p, lines in workload.lines.items()},
        "duplicates": workload.duplicates,
        "late_in_stream": workload.late_in_stream,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    folder = artifacts_dir() / f"alerts-e2e-{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (folder / "alerts.log").write_text(service.log.read_text())
    print(json.dumps({k: v for k, v in report.items() if not k.startswith(("missing", "unexpected", "doubled"))}, default=str))

    assert not report["doubled_on_topic"], report
    assert not report["missing_on_topic"] and not report["unexpected_on_topic"], report
    for alert in alerts:
        got = (alert["kind"], alert["rule"], alert["customer_id"], Decimal(alert["threshold"]), alert["sequence"])
        assert got == expected[alert["id"]], alert
    assert receiver.bad_signatures == 0, report
    assert set(posts) == set(expected), report
    assert "restored" in service.log.read_text()


def paced(bootstrap: str, topic: str, lines: list[str], folder: Path, seconds: float, chunks: int = 25) -> None:
    """Produce ``lines`` in ``chunks`` pieces spread over about ``seconds``."""
    size = -(-len(lines) // chunks)
    for n in range(chunks):
        piece = lines[n * size : (n + 1) * size]
        if piece:
            produce(bootstrap, topic, piece, folder / f"march-{n:02d}.jsonl")
        time.sleep(seconds / chunks)
