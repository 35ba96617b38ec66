"""Benchmark the dashboard queries on a realistic volume; prints p50/p95/p99 and keeps them in .metering/bench.

Data (synthetic, generated inside ClickHouse with INSERT ... SELECT FROM numbers(), so loading is
fast): N customers x D days of minute segments, several meters per customer (a count, a sum grouped
by model with two values, a max, a unique count with small distinct sets), ``--per-hour`` active
minutes per hour per series, customers spread over seven UTC offsets (their local days and monthly
periods follow them), 10% of segments re-emitted with a higher version (so FINAL has work), 1% late
segments, finals for every closed period, plus dead letters, duplicates, raw events and loader
batches for the health panel.

Every timed call is the real code path: the functions of clickhouse/queries.py over a
StorageReader (named query, server-side parameters, parameterized views, row conversion), for a
random customer each time (seeded).

Usage:
    .venv/bin/python -m bench.dashboard_queries                      # 10,000 customers x 35 days
    .venv/bin/python -m bench.dashboard_queries --small --no-record  # 200 x 3, seconds (used by a test)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse import queries
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import Scope, StorageReader

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 2, 1, tzinfo=UTC)
TARGET_P95_MS = 100.0

# (meter, group_key, aggregation) per series; the value columns follow the aggregation.
SERIES = [
    ("api_calls", "{}", "count"),
    ("tokens", '{"model":"large"}', "sum"),
    ("tokens", '{"model":"small"}', "sum"),
    ("storage_peak_bytes", "{}", "max"),
    ("active_users", "{}", "unique_count"),
]


def customer_name(index: int) -> str:
    return f"cust-{index:05d}"


def _segments_select(customers: int, days: int, per_hour: int, where: str, version: str, segment: str) -> str:
    """SELECT producing segment rows from numbers(); n -> (customer, hour, slot, series)."""
    series = len(SERIES)
    total = customers * days * 24 * per_hour * series
    meters = "[" + ",".join(f"'{m}'" for m, _, _ in SERIES) + "]"
    groups = "[" + ",".join(f"'{g}'" for _, g, _ in SERIES) + "]"
    aggs = "[" + ",".join(f"'{a}'" for _, _, a in SERIES) + "]"
    return f"""
SELECT
    concat('cust-', leftPad(toString(c), 5, '0')) AS customer_id,
    {meters}[s + 1] AS meter, {groups}[s + 1] AS group_key, {aggs}[s + 1] AS aggregation,
    toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalHour(h) + toIntervalMinute((slot * 7 + c) % 60) AS minute,
    toDateTime64(toStartOfDay(minute + toIntervalHour(o)), 3, 'UTC') - toIntervalHour(o) AS day_start,
    toDateTime64(toStartOfMonth(minute + toIntervalHour(o)), 3, 'UTC') - toIntervalHour(o) AS period_start,
    toDateTime64(addMonths(toStartOfMonth(minute + toIntervalHour(o)), 1), 3, 'UTC') - toIntervalHour(o) AS period_end,
    {segment} AS segment,
    {version} AS version,
    toDecimal128(1 + n % 97, 9) AS v,
    if(aggregation = 'unique_count', toDecimal128(3, 9), v) AS value,
    toInt64(1 + n % 5) AS event_count,
    if(aggregation = 'sum', v, toDecimal128(0, 9)) AS sum_value,
    if(aggregation = 'max', v, NULL) AS max_value,
    CAST(NULL, 'Nullable(Decimal(38, 9))') AS min_value,
    if(aggregation = 'unique_count', [concat('u', toString(n % 50)), concat('u', toString((n + 1) % 50)),
       concat('u', toString((n + 2) % 50))], []) AS distinct_values,
    CAST(NULL, 'Nullable(Int64)') AS latest_ms,
    CAST(NULL, 'Nullable(Decimal(38, 9))') AS latest_value
FROM
(
    SELECT number AS n, n % {series} AS s, intDiv(n, {series}) % {per_hour} AS slot,
           intDiv(n, {series * per_hour}) % {customers} AS c, intDiv(n, {series * per_hour * customers}) AS h,
           (c % 7) - 3 AS o
    FROM numbers({total})
)
WHERE {where}
"""


SEGMENT_COLUMNS = (
    "customer_id, meter, group_key, aggregation, minute, day_start, period_start, period_end, segment, version, value, "
    "event_count, sum_value, max_value, min_value, distinct_values, latest_ms, latest_value"
)


def load(storage: Storage, customers: int, days: int, per_hour: int) -> dict[str, Any]:
    """Generate the data set; returns row counts and timings."""
    started = time.monotonic()
    body = ", ".join(c.strip() for c in SEGMENT_COLUMNS.split(","))
    variants = [
        ("1", "1", "'s'"),  # every segment
        ("n % 10 = 0", "2", "'s'"),  # 10% re-emitted with a higher version
        ("n % 100 = 7", "1", "concat('late:', toString(n))"),  # 1% late segments of their own
    ]
    for where, version, segment in variants:
        select = _segments_select(customers, days, per_hour, where, version, segment)
        storage.command(f"INSERT INTO aggregate_segments ({SEGMENT_COLUMNS}) SELECT {body} FROM ({select})")
    segments_s = time.monotonic() - started
    end = START + timedelta(days=days)
    # Finals for every period that ended before the data's end (grace passed).
    storage.command(
        """
        INSERT INTO period_finals (customer_id, meter, group_key, aggregation, period_start, period_end, value, event_count,
                                   finalized_at_watermark)
        SELECT customer_id, meter, group_key, aggregation, period_start, any(period_end), sum(value), sum(event_count),
               any(period_end) + INTERVAL 2 DAY
        FROM aggregate_segments FINAL
        WHERE period_end + INTERVAL 2 DAY <= {end:DateTime64(3, 'UTC')}
        GROUP BY customer_id, meter, group_key, aggregation, period_start
        """,
        {"end": end.strftime("%Y-%m-%d %H:%M:%S")},
    )
    storage.command(
        f"""
        INSERT INTO dead_letters (reason, meter, customer_id, event_id, payload, source_partition, source_offset, source_time)
        SELECT ['malformed_json', 'bad_quantity', 'unknown_meter', 'future_timestamp'][number % 4 + 1], '',
               concat('cust-', leftPad(toString(number % {customers}), 5, '0')), toString(number), '{{"broken": ',
               number % 8, number, now64(3) - toIntervalSecond(number % 200000)
        FROM numbers({customers * 2})
        """
    )
    storage.command(
        f"""
        INSERT INTO duplicates (customer_id, event_id, seen, variants, last_seen)
        SELECT concat('cust-', leftPad(toString(number % {customers}), 5, '0')), toString(number), 2 + number % 3,
               1 + (number % 500 = 0), now64(3)
        FROM numbers({customers * 20})
        """
    )
    storage.command(
        f"""
        INSERT INTO raw_events (event_id, customer_id, event_type, event_time, quantity, properties, kafka_topic, kafka_partition,
                                kafka_offset, received_at, payload)
        SELECT toString(number), concat('cust-', leftPad(toString(number % {customers}), 5, '0')), 'api_call',
               toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalSecond(number % {days * 86400}), 1,
               map('user', concat('u', toString(number % 50))), 'usage-events', number % 8, number, now64(3), '{{}}'
        FROM numbers({customers * 200})
        """
    )
    storage.command(
        """
        INSERT INTO loader_batches (loader_id, batch_at, rows, rows_by_table, newest_source_time, consumer_lag)
        SELECT 'metering-loader', now64(3) - toIntervalSecond(number * 5), 20000, map('aggregate_segments', 20000),
               now64(3) - toIntervalSecond(number * 5 + 2), number % 3
        FROM numbers(5000)
        """
    )
    storage.command("OPTIMIZE TABLE customer_directory FINAL")
    counts = {
        table: storage.query_rows(f"SELECT count() FROM {table}")[0][0]
        for table in ("aggregate_segments", "period_finals", "raw_events", "duplicates", "dead_letters", "loader_batches")
    }
    return {"counts": counts, "segments_s": segments_s, "total_s": time.monotonic() - started}


@dataclass
class Timing:
    name: str
    samples_ms: list[float]
    rows: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(reader: StorageReader, customers: int, days: int, runs: int, seed: int) -> list[Timing]:
    rng = random.Random(seed)
    end = START + timedelta(days=days)

    def pick() -> str:
        return customer_name(rng.randrange(customers))

    def at(hours_before_end: float) -> datetime:
        return end - timedelta(hours=hours_before_end)

    questions: list[tuple[str, Callable[[], list[dict[str, Any]] | dict[str, Any]]]] = [
        ("usage so far (customer_usage)", lambda: queries.usage(reader, Scope(customer=pick(), start=end - timedelta(days=62)))),
        (
            "series minute, 6 h (customer_minutes)",
            lambda: queries.series(reader, Scope(customer=pick(), start=at(6), end=end, granularity="minute")),
        ),
        (
            "series hour, 7 days (customer_series_hour)",
            lambda: queries.series(reader, Scope(customer=pick(), start=at(7 * 24), end=end, granularity="hour")),
        ),
        (
            f"series day, {days} days (customer_series_day)",
            lambda: queries.series(reader, Scope(customer=pick(), start=START, end=end, granularity="day")),
        ),
        ("periods (customer_periods)", lambda: queries.periods(reader, Scope(customer=pick()))),
        ("finals (customer_finals)", lambda: queries.finals(reader, Scope(customer=pick()))),
        ("pipeline health (pipeline_health + reasons)", lambda: queries.health(reader)),
        ("customer list (customers)", lambda: queries.customers(reader)),
    ]
    timings = []
    for name, ask in questions:
        for _ in range(3):  # warm-up
            ask()
        samples, rows = [], 0
        for _ in range(runs):
            t = time.perf_counter()
            result = ask()
            samples.append((time.perf_counter() - t) * 1000)
            rows = len(result) if isinstance(result, list) else 1
        timings.append(Timing(name, samples, rows))
        print(f"  {name:<48} p50 {statistics.median(samples):7.1f} ms  p95 {timings[-1].percentile(0.95):7.1f} ms", flush=True)
    return timings


def du(path: Path) -> str:
    result = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=False)
    return result.stdout.split("\t")[0] if result.returncode == 0 else "?"


def report(args: argparse.Namespace, loaded: dict[str, Any], timings: list[Timing], disk: str) -> str:
    counts = loaded["counts"]
    lines = [
        "",
        f"### Dashboard queries, {args.customers:,} customers x {args.days} days ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Command: `.venv/bin/python -m bench.dashboard_queries --customers {args.customers} --days {args.days} "
        f"--per-hour {args.per_hour} --runs {args.runs}`. Machine: {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}, chDB (embedded ClickHouse 26.9), one process.",
        "",
        f"Data: {counts['aggregate_segments']:,} minute segment rows ({len(SERIES)} series per customer, {args.per_hour} active "
        f"minutes per hour each, 10% with a second version, 1% late segments), {counts['period_finals']:,} finals, "
        f"{counts['raw_events']:,} raw events, {counts['duplicates']:,} duplicate ids, {counts['dead_letters']:,} dead letters, "
        f"{counts['loader_batches']:,} loader batches; {disk} on disk; generated in {loaded['total_s']:.0f} s. "
        f"Each query: {args.runs} runs for random customers after 3 warm-ups, through `clickhouse.queries` "
        "(named query, parameterized view, row conversion).",
        "",
        "| query | rows | p50 ms | p95 ms | p99 ms | max ms | p95 ≤ 100 ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in timings:
        ok = "yes" if t.percentile(0.95) <= TARGET_P95_MS else "**no**"
        lines.append(
            f"| {t.name} | {t.rows:,} | {statistics.median(t.samples_ms):.1f} | {t.percentile(0.95):.1f} | "
            f"{t.percentile(0.99):.1f} | {max(t.samples_ms):.1f} | {ok} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--per-hour", type=int, default=2, help="active minutes per hour per series (default 2)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--small", action="store_true", help="200 customers x 3 days x 30 runs (seconds)")
    parser.add_argument("--dir", type=Path, default=ROOT / ".metering" / "bench-dashboard")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--no-record", action="store_true", help="print the figures only (default: also keep them in .metering/bench)"
    )
    args = parser.parse_args()
    if args.small:
        args.customers, args.days, args.runs = 200, 3, 30
    shutil.rmtree(args.dir, ignore_errors=True)
    settings = StorageSettings(backend="chdb", path=args.dir, database="bench")
    print(f"generating {args.customers:,} customers x {args.days} days in {args.dir} …", flush=True)
    with open_storage(settings) as storage:
        migrate(storage)
        loaded = load(storage, args.customers, args.days, args.per_hour)
        print(f"  {loaded['counts']} in {loaded['total_s']:.0f} s ({du(args.dir)})", flush=True)
        timings = measure(StorageReader(storage), args.customers, args.days, args.runs, args.seed)
    text = report(args, loaded, timings, du(args.dir))
    print(text)
    if not args.no_record:
        kept = ROOT / ".metering" / "bench" / f"dashboard-queries-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.md"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(text)
        print(f"figures kept in {kept}")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0 if all(t.percentile(0.95) <= TARGET_P95_MS for t in timings) else 1


if __name__ == "__main__":
    raise SystemExit(main())
