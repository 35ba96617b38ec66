"""The Kafka client's share of the loader's and the producer's CPU, C CRC-32C against pure Python.

kafka-python checks a CRC-32C over every record batch it fetches (``check_crcs``) and computes one
over every batch it sends. It uses the ``crc32c`` C extension when that is importable and falls
back to a pure-Python loop otherwise; this measures what the difference costs the loader and
``metering produce``, in fresh processes, alternating the two variants round after round.

* ``load``: replay the output topics of a finished benchmark run (default: the last capacity run,
  ``.metering/bench/capacity.yaml``) from the beginning, with a new consumer group, into a scratch
  chDB directory: the whole loader (consume, convert, insert, commit), CPU µs per row. The loader
  consumes with librdkafka now (jobs/loader/kafka_consumer.py); this part runs it on kafka-python's
  consumer (``bench.loader_raw.KafkaPythonConsumer``), whose CRC-32C it is about.
* ``produce``: send ``--lines`` live-shaped events to a scratch topic with the producer of
  ``metering produce``: CPU µs per event.

Usage (the stack up, a capacity run done: ``python bench/pipeline.py --events 0 --rate 0 --no-record``)::

    python -m bench.kafka_client [--rounds 2] [--lines 200000] [--config .metering/bench/capacity.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("c", "pure")
PARTS = ("load", "produce")


def worker(part: str, variant: str, config_path: Path, lines: int) -> dict[str, Any]:
    """One measurement in this process; ``variant`` "pure" hides the C extension from kafka-python."""
    if variant == "pure":
        sys.modules["crc32c"] = None  # type: ignore[assignment]  # makes `import crc32c` fail
    sys.path.insert(0, str(ROOT))
    import yaml
    from kafka.record import util

    crc = "c" if util.crc32c_c is not None else "pure"
    if crc != variant:
        raise SystemExit(f"asked for the {variant} CRC-32C, kafka-python uses the {crc} one (pip install crc32c?)")

    from bench.cpu import process_cpu_seconds
    from bench.loader_raw import KafkaPythonConsumer
    from clickhouse.client import open_storage
    from clickhouse.migrate import migrate
    from jobs.config import load_config
    from jobs.loader.loader import Loader
    from jobs.produce import make_producer, produce_lines
    from jobs.topics import ensure_topics

    document = yaml.safe_load(config_path.read_text())
    topic = f"bench-kafka-client-{uuid.uuid4().hex[:8]}"
    if part == "produce":  # a scratch events topic, created (and deleted) like the pipeline's
        document["kafka"]["topics"]["events"] = topic
    with tempfile.TemporaryDirectory(prefix="bench-kafka-client-") as scratch:
        document["storage"]["path"] = str(Path(scratch) / "chdb")
        scratch_config = Path(scratch) / "config.yaml"
        scratch_config.write_text(yaml.safe_dump(document))
        config = load_config(scratch_config)
        if part == "load":
            with open_storage(config.storage) as storage:
                migrate(storage)
                loader = Loader(
                    config,
                    storage,
                    group_id=f"bench-kafka-client-{uuid.uuid4().hex[:8]}",
                    load_raw=False,
                    consumer_factory=KafkaPythonConsumer,
                )
                before, started = process_cpu_seconds(), time.monotonic()
                stats = loader.run(until_idle=True, idle_s=1.0)
                cpu, wall = process_cpu_seconds() - before, time.monotonic() - started
            count = sum(stats.rows.values())
        else:
            from kafka import KafkaAdminClient

            from bench.pipeline import CAPACITY_CUSTOMERS, CAPACITY_NOMINAL_RATE, live_shaped_lines

            payload = list(live_shaped_lines(lines, CAPACITY_CUSTOMERS, CAPACITY_NOMINAL_RATE, datetime.now(UTC)))
            ensure_topics(config)
            producer = make_producer(config.kafka.bootstrap_servers)
            before, started = process_cpu_seconds(), time.monotonic()
            produce_lines(payload, producer=producer, topic=topic, validate=False)
            producer.flush()
            cpu, wall = process_cpu_seconds() - before, time.monotonic() - started
            producer.close()
            count = len(payload)
            admin = KafkaAdminClient(bootstrap_servers=config.kafka.bootstrap_servers)
            admin.delete_topics([topic])
            admin.close()
    return {"part": part, "crc": crc, "count": count, "wall_s": wall, "cpu_s": cpu, "cpu_us_each": cpu / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / ".metering" / "bench" / "capacity.yaml")
    parser.add_argument("--rounds", type=int, default=2, help="each round runs every part in both variants")
    parser.add_argument("--lines", type=int, default=200_000, help="produce: events sent per measurement")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--worker", nargs=2, metavar=("PART", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.config, args.lines)), flush=True)
        return
    if not args.config.exists():
        raise SystemExit(f"{args.config} does not exist: run the capacity benchmark first, or pass --config")

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_number in range(args.rounds):
        # ABBA: the order flips every round so drift on a noisy machine does not favour one variant.
        order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
        for part in args.parts:
            for variant in order:
                command = [sys.executable, "-m", "bench.kafka_client", "--config", str(args.config)]
                command += ["--lines", str(args.lines), "--worker", part, variant]
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results.setdefault((part, variant), []).append(result)
                print(
                    f"round {round_number + 1} {part:7} {variant:4}: {result['count']:,} in "
                    f"{result['wall_s']:.1f} s wall, {result['cpu_us_each']:.1f} CPU µs each",
                    flush=True,
                )
    print()
    for part in args.parts:
        c, pure = (mean(r["cpu_us_each"] for r in results[(part, v)]) for v in VARIANTS)
        print(f"{part}: CPU µs each, C CRC-32C {c:.1f}, pure-Python {pure:.1f}: pure / C = {pure / c:.2f}")


if __name__ == "__main__":
    main()
