"""Alert latency: from an aggregate record's arrival on the aggregates topic to its alert, committed.

``metering alerts run`` runs as a real process on a broker of its own (``--port-base``) or on
``--bootstrap``. A producer writes aggregate records (schemas/records.py's shape) at ``--rate``
records per second for ``--seconds``: one in ``--probe-every`` is a **probe**, a new customer's
minute that crosses the usage rule's threshold at once; the others update ``--customers``
customers that stay under it (the evaluator's ordinary work). A ``read_committed`` consumer of the
alerts topic takes the time each probe's alert becomes visible; the latency is that time minus the
probe's send time (both on this machine's clock). Reported: p50 / p95 / p99 / max of that, and the
p95 of the evaluator's own ``lag_ms`` (record timestamp to evaluation, before the commit).

Usage::

    python -m bench.alerts [--rate 500] [--seconds 20] [--probe-every 10] [--customers 200]
                           [--port-base 59492 | --bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from statistics import quantiles
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

P0, P1 = 1_772_323_200_000, 1_775_001_600_000  # 2026-03-01 and 2026-04-01 UTC
THRESHOLD = 1_000_000


def aggregate(customer: str, minute: int, version: int, total: int) -> bytes:
    record = {
        "customer_id": customer,
        "meter": "api_calls",
        "group_key": "",
        "aggregation": "sum",
        "minute_ms": P0 + minute * 60_000,
        "day_start_ms": P0,
        "period_start_ms": P0,
        "period_end_ms": P1,
        "segment": "on_time",
        "version": P0 + minute * 60_000 + version,
        "value": str(total),
        "event_count": 1,
        "sum": str(total),
        "max": None,
        "min": None,
        "distinct_values": [],
        "latest_ms": None,
        "latest_value": None,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


def run(bootstrap: str, rate: int, seconds: float, probe_every: int, customers: int, workdir: Path) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    from jobs.topics import ensure_topic

    run_id = uuid.uuid4().hex[:8]
    topics = {name: f"bench-alerts-{name}-{run_id}" for name in ("events", "aggregates", "finals", "corrections")}
    for topic in topics.values():
        ensure_topic(bootstrap, topic, partitions=2)
    alerts_topic = f"{topics['events']}-alerts"
    config = workdir / "metering.yaml"
    config.write_text(
        json.dumps(
            {
                "kafka": {"bootstrap_servers": bootstrap, "topics": topics},
                "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "sum"}],
                "alerts": {"rules": [{"name": "bench", "kind": "usage", "meter": "api_calls", "thresholds": [THRESHOLD]}]},
            }
        )
    )
    log = (workdir / "alerts.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "alerts", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    lags: list[int] = []
    stop = threading.Event()

    def read() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{run_id}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([alerts_topic])
        try:
            while not stop.is_set():
                message = consumer.poll(0.05)
                if message is None or message.error() is not None:
                    continue
                at = time.time()
                alert = json.loads(message.value())
                seen.setdefault(alert["customer_id"], at)
                lags.append(int(alert["lag_ms"]))
        finally:
            consumer.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    try:
        # Warm-up: one probe, until its alert is visible (the service is up and assigned).
        deadline = time.monotonic() + 120
        sent["warmup"] = time.time()
        producer.produce(topics["aggregates"], aggregate("warmup", 0, 1, THRESHOLD), key=b"warmup")
        producer.flush()
        while "warmup" not in seen:
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the alerts service did not answer: " + (workdir / "alerts.log").read_text()[-2000:])
            time.sleep(0.05)
        total = int(rate * seconds)
        start = time.monotonic()
        for n in range(total):
            target = start + n / rate
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if n % probe_every == 0:
                customer = f"probe-{n}"
                value = aggregate(customer, 0, 1, THRESHOLD)
                sent[customer] = time.time()
            else:
                customer = f"pool-{n % customers}"
                value = aggregate(customer, (n // customers) % 60, n, 1)
            producer.produce(topics["aggregates"], value, key=customer.encode())
            producer.poll(0)
        producer.flush()
        achieved = total / (time.monotonic() - start)
        deadline = time.monotonic() + 60
        while set(sent) - set(seen) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(5)
        service.terminate()
        service.wait(30)
        log.close()
    probes = [c for c in sent if c != "warmup"]
    latencies = sorted((seen[c] - sent[c]) * 1000 for c in probes if c in seen)
    return {
        "records": int(rate * seconds),
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "probes": len(probes),
        "alerts_seen": len(latencies),
        "missing": len(probes) - len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1),
        "evaluation_lag_p95_ms": round(percentile([float(x) for x in lags], 95), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=500, help="aggregate records per second (default 500)")
    parser.add_argument("--seconds", type=float, default=20, help="how long to write (default 20)")
    parser.add_argument("--probe-every", type=int, default=10, help="one record in this many crosses a threshold (10)")
    parser.add_argument("--customers", type=int, default=200, help="customers of the other records (200)")
    parser.add_argument("--port-base", type=int, default=59492, help="a broker of its own on these ports (default)")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    print("command: python -m bench.alerts " + " ".join(sys.argv[1:] if argv is None else argv), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as scratch:
        if args.bootstrap:
            figures = run(args.bootstrap, args.rate, args.seconds, args.probe_every, args.customers, Path(scratch))
        else:
            from infra.kafka import KafkaBroker
            from jobs.config import load_stack

            env = {**os.environ, "METERING__STACK__HOME": str(ROOT / ".metering" / "bench-alerts")}
            stack = load_stack(env).with_ports(args.port_base)
            stack.home.mkdir(parents=True, exist_ok=True)
            broker = KafkaBroker(stack)
            broker.start()
            try:
                figures = run(stack.bootstrap_servers, args.rate, args.seconds, args.probe_every, args.customers, Path(scratch))
            finally:
                broker.stop()
    print("| rate (records/s) | achieved | probes | alerts seen | p50 ms | p95 ms | p99 ms | max ms | evaluation lag p95 ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    f = figures
    print(
        f"| {f['rate']} | {f['achieved_rate']} | {f['probes']} | {f['alerts_seen']} | {f['p50_ms']} | {f['p95_ms']} | "
        f"{f['p99_ms']} | {f['max_ms']} | {f['evaluation_lag_p95_ms']} |"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
