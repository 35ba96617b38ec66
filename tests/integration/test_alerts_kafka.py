"""``metering alerts run`` as a real process on a real broker, killed with SIGKILL mid-stream: every alert exactly once.

The job's record shapes (schemas/records.py) are written to aggregates, finals and corrections
topics of two partitions, in three phases; the service is killed with SIGKILL while the first and the
third are being written, and started again. The alerts topic, read ``read_committed``, must then
hold exactly the alerts the evaluator gives for the same records in-process (each id once), and a
webhook receiver on 127.0.0.1, which checks every signature and refuses each alert's first attempt,
must have every alert of the webhook rule (deduplicated by ``webhook-id``, as receivers do).

Before them, prepaid credit grants of some customers are published to the credit ledger topic as
``metering credits grant`` does, and the test waits until the service has consumed them: a
``credit_remaining`` rule then alarms and resolves as the usage, the finals (whose watermark starts
the next billing period) and the corrections burn the credit, across both kills too.

Each phase ends with a sentinel record per partition; the phase is done when the sentinels' alerts
are on the alerts topic (transactions commit in order, so everything before them is too). Then
the loader loads the alerts topic into chDB (migration 0013) and ``metering query alerts``'s named
query returns every alert once, one customer's alone when asked for one.

The configuration rates, so the service writes cost records too (``alerts.costs``), in the same
transactions: per group, the committed ones are a subsequence of what the evaluator gives record by
record (a transaction coalesces a group's changes into one record; a record written twice, or one
of a transaction that never committed, would break it) and end at the same value; ``stream_cost``
returns each group's last one.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import run_query
from infra.kafka import KafkaBroker
from infra.settings import PROJECT_ROOT
from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, LEDGER, Evaluator
from jobs.alerts.webhooks import verify
from jobs.config import load_config
from jobs.loader.loader import Loader
from jobs.topics import committed_values, ensure_topic

P0, P1 = 1_772_323_200_000, 1_775_001_600_000  # 2026-03-01 and 2026-04-01 UTC
SECRET = "whsec_" + base64.b64encode(b"alerts-integration-key-0123456789").decode()
CUSTOMERS = [f"cust-{n:02d}" for n in range(16)]
MINUTES = 40
PARTITIONS = 2
#: Customers with prepaid credit (15.00 each) and a credit_remaining rule.
CREDITED = CUSTOMERS[:6]


def _value(total: int) -> dict[str, Any]:
    return {
        "value": str(total),
        "event_count": total,
        "sum": str(total),
        "max": None,
        "min": None,
        "distinct_values": [],
        "latest_ms": None,
        "latest_value": None,
    }


def _key(customer: str) -> dict[str, Any]:
    return {"customer_id": customer, "meter": "api_calls", "group_key": "", "aggregation": "count"}


def aggregates(customer: str, rate: int) -> list[dict[str, Any]]:
    """Minutes of ``rate`` calls each, every minute in two versions (the second replaces the first)."""
    out = []
    for minute in range(MINUTES):
        at = P0 + minute * 60_000
        for step, share in ((1, rate // 2), (2, rate)):
            out.append(
                {
                    **_key(customer),
                    "minute_ms": at,
                    "day_start_ms": P0,
                    "period_start_ms": P0,
                    "period_end_ms": P1,
                    "segment": "on_time",
                    "version": at + step * 30_000,
                    **_value(share),
                }
            )
    return out


def final(customer: str, total: int) -> dict[str, Any]:
    return {**_key(customer), "period_start_ms": P0, "period_end_ms": P1, "finalized_at_watermark_ms": P1 + 1, **_value(total)}


def correction(customer: str, total: int, retract: bool) -> dict[str, Any]:
    return {
        **_key(customer),
        "period_start_ms": P0,
        "period_end_ms": P1,
        "minute_ms": P0,
        "retract": retract,
        "event_id": f"late-{customer}",
        **_value(total),
    }


def partition_of(customer: str) -> int:
    return CUSTOMERS.index(customer) % PARTITIONS if customer in CUSTOMERS else int(customer.rsplit("-", 1)[1])


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint: checks the signature, refuses each id's first attempt (503), records the rest."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.received: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        #: Refuse every attempt (503) and record nothing: an endpoint that is down.
        self.down = False


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if not verify(SECRET, headers, body, now=int(time.time())):
            with self.server.lock:
                self.server.bad_signatures += 1
            self.send_response(401)
        else:
            msg_id = headers["webhook-id"]
            with self.server.lock:
                self.server.attempts[msg_id] = self.server.attempts.get(msg_id, 0) + 1
                refuse = self.server.down or self.server.attempts[msg_id] == 1
                if not refuse:
                    self.server.received.setdefault(msg_id, json.loads(body))
            self.send_response(503 if refuse else 204)
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


class Service:
    """``metering alerts run`` as a child process; ``kill`` sends SIGKILL."""

    def __init__(self, config: Path, log: Path, *options: str) -> None:
        self.config, self.log, self.options = config, log, options
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "ALERTS_TEST_SECRET": SECRET}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jobs.cli", "alerts", "run", "--config", str(self.config), "--verbose", *self.options],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
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


def grant(customer: str, amount: str) -> dict[str, Any]:
    """A ledger row as ``metering credits grant`` publishes it (schemas/records.py ``CREDIT_LEDGER``)."""
    at = P0 - 86_400_000
    return {
        "customer_id": customer,
        "grant_id": f"g-{customer}",
        "action": "grant",
        "amount": amount,
        "currency": "USD",
        "priority": 10,
        "effective_at_ms": at,
        "expires_at_ms": None,
        "rollover": "carry",
        "recorded_at_ms": at,
        "recorded_by": "local:test",
        "reason": "prepaid",
    }


def wait_consumed(bootstrap: str, topic: str, count: int, service: Service, timeout_s: float = 60) -> None:
    """Until the evaluator's committed offset of ``topic`` (one partition) reaches ``count``."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from jobs.alerts.service import GROUP

    admin = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                [committed] = admin.committed([TopicPartition(topic, 0)], timeout=10)
            except KafkaException:  # the group's coordinator still moving or loading (NOT_COORDINATOR): ask again
                pass
            else:
                if committed.offset >= count:
                    return
            assert time.monotonic() < deadline, service.log.read_text()[-3000:]
            assert service.process is not None and service.process.poll() is None, service.log.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        admin.close()


def alerts_on(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [json.loads(v) for v in committed_values(bootstrap, topic, timeout_s=60)]


def wait_for(bootstrap: str, topic: str, ids: set[str], service: Service, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The alerts topic once it holds every id of ``ids`` (the phase's sentinels)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alerts = alerts_on(bootstrap, topic)
        if ids <= {a["id"] for a in alerts}:
            return alerts
        assert service.process is not None and service.process.poll() is None, service.log.read_text()[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"sentinel alerts not written within {timeout_s} s:\n{service.log.read_text()[-3000:]}")


def test_alerts_exactly_once_across_sigkill_with_signed_webhooks(
    spare_broker: KafkaBroker, receiver: Receiver, tmp_path: Path, storage_settings: StorageSettings
) -> None:
    bootstrap = spare_broker.settings.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    names = ("events", "raw", "aggregates", "finals", "corrections", "dead_letters")
    topics = {name: f"alerts-{name}-{run}" for name in names}
    for topic in [*topics.values(), f"{topics['events']}-duplicates", f"{topics['events']}-amendments"]:
        ensure_topic(bootstrap, topic, partitions=PARTITIONS)
    document = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": topics},
        "storage": {"backend": "chdb", "path": str(storage_settings.path), "database": storage_settings.database},
        "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "rating": {
            "default_plan": "std",
            "plans": {
                "std": {
                    "meters": {"api_calls": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "0.01"}]}
                }
            },
        },
        "alerts": {
            "rules": [
                {"name": "calls", "kind": "usage", "meter": "api_calls", "thresholds": [500, 1000, 2000, 4000]},
                {
                    "name": "quota",
                    "kind": "entitlement_pct",
                    "meter": "api_calls",
                    "entitlement": "3000",
                    "thresholds": [50, 100],
                    "webhook": {"url": f"http://127.0.0.1:{receiver.server_port}/hook", "secret_env": "ALERTS_TEST_SECRET"},
                },
                {"name": "spend", "kind": "spend", "meter": "api_calls", "thresholds": ["10.00", "30.00"]},
                {"name": "forecast", "kind": "projected_spend", "meter": "api_calls", "thresholds": ["5000"]},
                {"name": "credit", "kind": "credit_remaining", "thresholds": ["0", "5.00", "10.00"], "customers": CREDITED},
            ]
        },
    }
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path, env={"ALERTS_TEST_SECRET": SECRET})
    sentinels = [f"sentinel-{p}" for p in range(PARTITIONS)]

    # Phase 1: aggregates (customer n at 5 × (n + 1) calls a minute), a sentinel per partition crossing 500.
    phase1 = [(c, AGGREGATE, r) for n, c in enumerate(CUSTOMERS) for r in aggregates(c, 5 * (n + 1))]
    phase1.sort(key=lambda item: (item[2]["minute_ms"], item[2]["version"], item[0]))  # minute by minute, all customers
    phase1 += [(s, AGGREGATE, r) for s in sentinels for r in aggregates(s, 1000)[-2:]]
    # Phase 2: finals (the running totals, some higher: what arrived late but within grace).
    totals = {c: 5 * (n + 1) * MINUTES + (300 if n % 3 == 0 else 0) for n, c in enumerate(CUSTOMERS)}
    phase2 = [(c, FINAL, final(c, totals[c])) for c in CUSTOMERS] + [(s, FINAL, final(s, 100)) for s in sentinels]
    # Phase 3: corrections after the finals, up and down; then sentinels crossing a threshold after their final.
    phase3 = [(c, CORRECTION, correction(c, 700, n % 2 == 1)) for n, c in enumerate(CUSTOMERS) for _ in range(3)]
    phase3 += [(s, CORRECTION, correction(s, 5000, False)) for s in sentinels]

    ledger = [grant(c, "15.00") for c in CREDITED]
    oracle = Evaluator(config.alerts, config.rating, lambda c: config.billing.policy_for(c).cycle)
    expected: dict[str, dict[str, Any]] = {}
    for row in ledger:
        assert oracle.apply(LEDGER, row, arrival_ms=0, now_ms=0) == []  # the stream's time is before the grants
    phase_sentinels: list[set[str]] = []
    #: Per group, every cost record the evaluator gives when each record is its own transaction.
    finest: dict[tuple[str, str, str, int], list[tuple[str, bool, int]]] = {}
    for phase in (phase1, phase2, phase3):
        sentinel_ids: set[str] = set()
        for customer, kind, record in phase:
            alerts_of_record = oracle.apply(kind, record, arrival_ms=0, now_ms=0)
            for cost in oracle.take_costs(now_ms=0):
                finest.setdefault(_group(cost), []).append(_figures(cost))
            for alert in alerts_of_record:
                assert alert["id"] not in expected
                expected[alert["id"]] = alert
                if customer in sentinels:
                    sentinel_ids.add(alert["id"])
        assert len({expected[i]["customer_id"] for i in sentinel_ids}) == PARTITIONS
        phase_sentinels.append(sentinel_ids)
    kinds = {k: sum(a["kind"] == k for a in expected.values()) for k in ("alert.triggered", "alert.resolved", "alert.corrected")}
    assert all(kinds.values()), kinds  # the workload exercises every kind
    credit = {k: sum(a["kind"] == k and a["rule"] == "credit" for a in expected.values()) for k in kinds}
    assert credit["alert.triggered"] >= 6 and credit["alert.resolved"] >= 2, credit  # credit alarms, and resolves

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    kind_topic = {AGGREGATE: topics["aggregates"], FINAL: topics["finals"], CORRECTION: topics["corrections"]}

    def write(items: list[tuple[str, str, dict[str, Any]]], per_second: float) -> None:
        for customer, kind, record in items:
            producer.send(kind_topic[kind], json.dumps(record).encode(), key=customer.encode(), partition=partition_of(customer))
            time.sleep(1 / per_second)
        producer.flush()

    from jobs.alerts.service import publish_ledger
    from jobs.topics import credit_ledger_topic

    for row in ledger:  # what `metering credits grant` does: acknowledged (acks=all) before it returns
        assert publish_ledger(config, [row]) is None
    service = Service(path, tmp_path / "alerts.log")
    service.start()
    try:
        wait_consumed(bootstrap, credit_ledger_topic(config), len(ledger), service)
        # Phase 1 while the service runs; SIGKILL once alerts are flowing, then a restart while writing goes on.
        writer = threading.Thread(target=write, args=(phase1, 250))
        writer.start()
        deadline = time.monotonic() + 60
        while len(alerts_on(bootstrap, f"{topics['events']}-alerts")) < 10:
            assert time.monotonic() < deadline, service.log.read_text()[-3000:]
            time.sleep(0.2)
        service.kill()
        service.start()
        writer.join()
        wait_for(bootstrap, f"{topics['events']}-alerts", phase_sentinels[0], service)
        write(phase2, 1000)
        wait_for(bootstrap, f"{topics['events']}-alerts", phase_sentinels[1], service)
        # Phase 3: SIGKILL while the corrections are being written.
        writer = threading.Thread(target=write, args=(phase3, 20))
        writer.start()
        time.sleep(1.0)
        service.kill()
        service.start()
        writer.join()
        alerts = wait_for(bootstrap, f"{topics['events']}-alerts", phase_sentinels[2], service)
        quota = {i for i, a in expected.items() if a["rule"] == "quota"}
        deadline = time.monotonic() + 180
        while set(receiver.received) != quota and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        service.stop()
        producer.close()

    ids = [a["id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was written twice"
    assert set(ids) == set(expected), (set(expected) - set(ids), set(ids) - set(expected))
    deterministic = ("kind", "rule", "threshold", "value", "previous_value", "final", "sequence", "reason", "as_of_ms")
    for alert in alerts:
        assert {k: alert[k] for k in deterministic} == {k: expected[alert["id"]][k] for k in deterministic}
    assert "restored" in service.log.read_text()

    # Webhooks: every alert of the quota rule, each signature valid, each id received (after one refusal).
    assert receiver.bad_signatures == 0
    assert set(receiver.received) == quota, (quota - set(receiver.received), set(receiver.received) - quota)
    assert all(receiver.attempts[i] >= 2 for i in quota)

    # Into ClickHouse: the loader loads the alerts topic; the named query returns each alert once.
    with open_storage(storage_settings) as storage:
        migrate(storage)
        Loader(config, storage, group_id=f"loader-{run}").run(until_idle=True, idle_s=1.5)
        stored = run_query(storage, "alerts", {"customer": "", "meter": ""})
        one = run_query(storage, "alerts", {"customer": CUSTOMERS[0], "meter": "api_calls"})
        current = run_query(storage, "stream_cost", {"customer": "", "meter": ""})
    assert sorted(r["id"] for r in stored) == sorted(expected)
    mine = sorted(i for i, a in expected.items() if a["customer_id"] == CUSTOMERS[0] and a["meter"] == "api_calls")
    assert sorted(r["id"] for r in one) == mine  # its credit alerts have no meter
    by_id = {r["id"]: r for r in stored}
    for alert_id, alert in expected.items():
        assert Decimal(by_id[alert_id]["value"]) == Decimal(alert["value"]) and by_id[alert_id]["kind"] == alert["kind"]

    # Cost records: exactly once per transaction, across both kills.
    committed: dict[tuple[str, str, str, int], list[tuple[str, bool, int]]] = {}
    for cost in alerts_on(bootstrap, f"{topics['events']}-costs"):
        committed.setdefault(_group(cost), []).append(_figures(cost))
    assert set(committed) == set(finest)
    for group, figures in committed.items():
        assert _subsequence(figures, finest[group]) and figures[-1] == finest[group][-1], (group, figures, finest[group])
    assert sorted((r["customer_id"], Decimal(r["quantity"]), r["is_final"]) for r in current) == sorted(
        (group[0], Decimal(figures[-1][0]), figures[-1][1]) for group, figures in finest.items()
    )


def _group(cost: dict[str, Any]) -> tuple[str, str, str, int]:
    return (cost["customer_id"], cost["meter"], cost["group_key"], cost["period_start_ms"])


def _figures(cost: dict[str, Any]) -> tuple[str, bool, int]:
    """What a cost record says (its cost follows from these by the card), without its wall-clock ``emitted_ms``."""
    return (cost["quantity"], cost["is_final"], cost["as_of_ms"])


def _subsequence(part: list[Any], whole: list[Any]) -> bool:
    remaining = iter(whole)
    return all(any(item == candidate for candidate in remaining) for item in part)


def test_a_webhook_that_keeps_failing_becomes_a_dead_letter_that_redeliver_sends(
    spare_broker: KafkaBroker, receiver: Receiver, tmp_path: Path
) -> None:
    from jobs.alerts.service import dead_letters

    bootstrap = spare_broker.settings.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    topics = {name: f"dead-{name}-{run}" for name in ("events", "aggregates", "finals", "corrections")}
    for topic in topics.values():
        ensure_topic(bootstrap, topic, partitions=1)
    webhook = {"url": f"http://127.0.0.1:{receiver.server_port}/hook", "secret_env": "ALERTS_TEST_SECRET"}
    rule = {"name": "calls", "kind": "usage", "meter": "api_calls", "thresholds": [100], "webhook": webhook}
    document = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": topics},
        "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "alerts": {"rules": [rule]},
    }
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path, env={"ALERTS_TEST_SECRET": SECRET})
    receiver.down = True
    service = Service(path, tmp_path / "alerts.log", "--webhook-attempts", "3", "--webhook-backoff", "0.05")
    service.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for customer in ("acme", "globex"):
            producer.send(topics["aggregates"], json.dumps(aggregates(customer, 200)[1]).encode(), key=customer.encode())
        producer.flush()
        deadline = time.monotonic() + 90
        while len(dead_letters(config)) < 2:
            assert time.monotonic() < deadline, service.log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        service.stop()
        producer.close()
    letters = dead_letters(config)
    ids = {letter["alert"]["id"] for letter in letters.values()}
    assert len(ids) == 2 and all(letter["attempts"] == 3 for letter in letters.values())
    assert all(receiver.attempts[i] == 3 for i in ids) and receiver.received == {}

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "ALERTS_TEST_SECRET": SECRET}
    command = [sys.executable, "-m", "jobs.cli", "alerts", "redeliver", "--config", str(path), "--format", "json"]
    listed = subprocess.run([*command, "--list"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    assert listed.returncode == 0 and {v["alert"]["id"] for v in json.loads(listed.stdout).values()} == ids
    still_down = subprocess.run([*command, "--attempts", "1"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert still_down.returncode == 1 and json.loads(still_down.stdout) == {"delivered": 0, "still_dead": 2}
    receiver.down = False
    sent = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    assert sent.returncode == 0 and json.loads(sent.stdout) == {"delivered": 2, "still_dead": 0}, sent.stderr
    assert set(receiver.received) == ids and receiver.bad_signatures == 0
    assert dead_letters(config) == {}


def test_credits_grant_and_void_publish_the_ledger_row_and_the_loader_records_it(
    spare_broker: KafkaBroker, tmp_path: Path, storage_settings: StorageSettings
) -> None:
    """The real commands: each row is published to the ledger topic only (``credit_ledger`` stays as it was until a
    loader runs, which then holds the same rows); with the broker unreachable the command fails (exit 1) and
    records nothing; ``credits publish`` moves the stored rows the topic lacks onto it, and only those."""
    import contextlib
    import io

    from clickhouse.credits import LedgerRow
    from clickhouse.credits import ledger as stored_ledger
    from clickhouse.queries import StorageReader
    from clickhouse.tables import LEDGER_COLUMNS
    from jobs.cli import main
    from jobs.topics import credit_ledger_topic
    from schemas.records import CREDIT_LEDGER

    bootstrap = spare_broker.settings.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    with open_storage(storage_settings) as storage:
        migrate(storage)

    def configured(servers: str) -> Path:
        document = {
            "kafka": {"bootstrap_servers": servers, "topics": {"events": f"ledger-events-{run}"}},
            "storage": {"backend": "chdb", "path": str(storage_settings.path), "database": storage_settings.database},
            "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
            "rating": {
                "default_plan": "std",
                "plans": {
                    "std": {
                        "meters": {"api_calls": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1"}]}
                    }
                },
            },
        }
        path = tmp_path / f"metering-{len(servers)}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    def command(*argv: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return main(list(argv)), err.getvalue()

    def stored() -> list[LedgerRow]:
        with open_storage(storage_settings) as storage:
            return stored_ledger(StorageReader(storage))

    path = configured(bootstrap)
    config = load_config(path)
    grant = ["credits", "grant", "--customer", "acme", "--amount", "25", "--reason", "prepaid", "--grant-id", "g1"]
    assert command(*grant, "--effective", "2026-03-01T00:00:00Z", "--config", str(path))[0] == 0
    assert command("credits", "void", "g1", "--reason", "mistake", "--at", "2026-03-05T00:00:00Z", "--config", str(path))[0] == 0
    code, err = command(*grant[:-1], "g2", "--config", str(configured("127.0.0.1:1")))
    assert code == 1 and "could not be read" in err and "nothing recorded" in err, err
    assert stored() == []  # the commands wrote no table

    published = [json.loads(v) for v in committed_values(bootstrap, credit_ledger_topic(config))]
    assert all(tuple(r) == CREDIT_LEDGER.names for r in published)
    assert [(r["grant_id"], r["action"], r["amount"], r["effective_at_ms"]) for r in published] == [
        ("g1", "grant", "25.00", P0),
        ("g1", "void", "0", P0 + 4 * 86_400_000),
    ]

    # a row stored before the topic was the ledger, then `credits publish`: only it goes onto the topic
    old = LedgerRow.from_record({**published[0], "grant_id": "g0", "recorded_by": "local:before"})
    with open_storage(storage_settings) as storage:
        storage.client.insert("credit_ledger", [old.values()], column_names=LEDGER_COLUMNS)
    assert command("credits", "publish", "--config", str(path))[0] == 0
    assert command("credits", "publish", "--config", str(path))[0] == 0  # again: nothing left to move
    on_topic = [json.loads(v) for v in committed_values(bootstrap, credit_ledger_topic(config))]
    assert [(r["grant_id"], r["action"]) for r in on_topic] == [("g1", "grant"), ("g1", "void"), ("g0", "grant")]

    with open_storage(storage_settings) as storage:  # the loader copies the topic into credit_ledger
        Loader(config, storage, group_id=f"ledger-{run}", load_raw=False).run(until_idle=True, idle_s=1.0)

    def essentials(r: LedgerRow) -> tuple[Any, ...]:
        return (r.grant_id, r.action, r.customer, r.amount, r.effective_at, r.recorded_by, r.reason)

    assert sorted(essentials(r) for r in stored()) == sorted(essentials(LedgerRow.from_record(r)) for r in on_topic)
