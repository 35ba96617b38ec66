"""The finalization operator's own Python time per partial row, outside Flink.

Drives ``jobs.finalize.FinalizeFunction.process_element`` directly, with in-memory stand-ins for
its two ``ValueState`` handles, the timer service and the counters, over demo-like partial rows
(20 customers, the example configuration's meters, about one row per key and minute as in a
replay). It measures only the Python the operator runs itself: loading and storing a key's state,
the ledger, the output JSON. What PyFlink adds per row (converting the row into Python, state and
timer calls through JNI, the result iterator) is not here; ``bench/profile_job.py --workload
demo`` measures the whole operator in a real job.

Usage::

    python -m bench.finalize_python [--rows 100000] [--rounds 3] [--profile]

Prints µs per row for each round (round 1 includes warming caches).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.config import load_config
from jobs.finalize import FinalizeFunction
from jobs.metrics import FINALIZE_METRICS
from jobs.sql import SEP
from udfs.meters import Aggregation

ROOT = Path(__file__).resolve().parent.parent
#: 2023-11-14 22:14 UTC, a minute boundary
START_MS = 1_699_999_980_000 - 1_699_999_980_000 % 60_000


class _ValueState:
    def __init__(self) -> None:
        self.stored: Any = None

    def value(self) -> Any:
        return self.stored

    def update(self, value: Any) -> None:
        self.stored = value

    def clear(self) -> None:
        self.stored = None


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


class _Context:
    """The parts of ``KeyedProcessFunction.Context`` the operator uses."""

    def __init__(self) -> None:
        self.watermark = 0
        self.timers = 0

    def timer_service(self) -> _Context:
        return self

    def current_watermark(self) -> int:
        return self.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        self.timers += 1


def partial_rows(count: int, config_path: Path, seed: int = 1) -> list[tuple[Any, ...]]:
    """Partial rows (jobs/sql.PARTIAL_COLUMNS) of one-minute windows: ~40 rows per minute over 20 customers."""
    meters = [(m.name, m.aggregation) for m in load_config(config_path, env={}).meters]
    rnd = random.Random(seed)
    rows = []
    for i in range(count):
        minute = START_MS + (i // 40) * 60_000
        meter, aggregation = rnd.choice(meters)
        value = f"{rnd.randint(1, 1000)}.5"
        distinct = f"u{rnd.randint(1, 9)}" if aggregation is Aggregation.UNIQUE_COUNT else None
        latest = f"{minute:015d}{SEP}e{i}{SEP}{value}" if aggregation is Aggregation.LATEST else None
        customer = f"customer-{rnd.randrange(20)}"
        rows.append((customer, meter, "{}", minute, minute + 60_000, 3, value, value, value, distinct, latest, ""))
    return rows


def drive(function: FinalizeFunction, rows: list[tuple[Any, ...]]) -> Iterator[Any]:
    """Every row through ``process_element`` with its key's state, as the keyed operator would."""
    states: dict[tuple[str, str, str], tuple[_ValueState, _ValueState]] = {}
    context = _Context()
    for row in rows:
        key = (row[0], row[1], row[2])
        function.state, function.final_through = states.setdefault(key, (_ValueState(), _ValueState()))
        context.watermark = row[3] - 120_000
        yield from function.process_element(row, context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "metering.example.yaml")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one more round")
    args = parser.parse_args()
    function = FinalizeFunction(load_config(args.config, env={}))
    function.counters = {name: _Counter() for name in FINALIZE_METRICS}
    rows = partial_rows(args.rows, args.config)
    for round_number in range(1, args.rounds + 1):
        started = time.perf_counter()
        outputs = sum(1 for _ in drive(function, rows))
        elapsed = time.perf_counter() - started
        print(f"round {round_number}: {len(rows):,} rows, {outputs:,} outputs, {elapsed / len(rows) * 1e6:.1f} µs per row")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: sum(1 for _ in drive(function, rows)))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
