"""What the job's per-event parse stage costs, in one process, variants side by side.

Reads N generated demo lines from a file (``format = raw``, so no broker is involved) through the
job's parse stage (source rowtime column + ``jobs/sql.parse_view``) into a blackhole sink, at
parallelism 1 on the local MiniCluster, and prints seconds per variant:

  one_json_value:  one ``JSON_VALUE`` per record (reading and a single parse: the floor)
  parse_view:      the job's parse stage as it is now (with the Java functions of ``udfs/jvm``)
  parse_view_old:  the parse stage of an older ``jobs/flink/sql.py`` given with ``--old-sql`` (for
                   example ``git show be81cb0:jobs/flink/sql.py > /tmp/old_sql.py``), for a ratio

Each variant runs ``--repeat`` times, alternating, in one JVM; the first round includes JIT
warm-up. Each figure includes the job's start-up (~2 s once warm). The Kafka metadata columns are
constants here (partition 0, offset 0, received at 2027-01-15T08:00:00Z).

Usage: .venv/bin/python -m bench.sql_parse_probe --events 200000 [--old-sql /tmp/old_sql.py] [--repeat 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.udf_jar import udf_jar  # noqa: E402
from jobs.config import load_config, load_stack  # noqa: E402
from jobs.demo import generate  # noqa: E402
from jobs.flink import sql  # noqa: E402

RECEIVED_MS = 1_800_000_000_000
SKEW = timedelta(minutes=5)


def table_env() -> Any:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.jars", udf_jar(load_stack()).as_uri())
    for statement in sql.function_ddl():
        t_env.execute_sql(statement)
    return t_env


def run(t_env: Any, path: Path, sql_module: ModuleType | None, name: str) -> float:
    """Seconds to push the file through one variant into a blackhole."""
    received = f"TO_TIMESTAMP_LTZ({RECEIVED_MS}, 3)"
    if sql_module is None:  # one JSON_VALUE per record
        computed = "rowtime AS TO_TIMESTAMP_LTZ(0, 3)"
        query = f"SELECT CHAR_LENGTH(JSON_VALUE({sql.doc_sql()}, '$.timestamp')) AS x FROM {name}"
        sink = "x INT"
    else:
        meters = load_config(ROOT / "config" / "metering.example.yaml", env={}).meters
        # Computed columns cannot reference each other: the received time is inlined as a constant.
        computed = ",\n  ".join(
            f"{column} AS {expr.replace('kafka_ts', received)}" for column, expr in sql_module.source_schema_columns(SKEW, meters)
        )
        query = f"SELECT reason, event_ms, rowtime FROM ({sql_module.parse_view(name, meters, SKEW)})"
        sink = "reason STRING, event_ms BIGINT, rowtime TIMESTAMP_LTZ(3)"
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE {name} (payload BYTES, kafka_partition AS 0, kafka_offset AS CAST(0 AS BIGINT), "
        f"kafka_ts AS {received}, {computed}, WATERMARK FOR rowtime AS rowtime - INTERVAL '30' SECOND) "
        f"WITH ('connector' = 'filesystem', 'path' = {sql.lit(str(path))}, 'format' = 'raw')"
    )
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {name}_sink ({sink}) WITH ('connector' = 'blackhole')")
    started = time.monotonic()
    t_env.execute_sql(f"INSERT INTO {name}_sink {query}").wait()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--old-sql", type=Path, help="an older jobs/flink/sql.py to compare against")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    path = load_stack().home / "bench" / f"parse-probe-{args.events}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(path, args.events, seed=3)
    lines = sum(1 for _ in path.open("rb"))
    variants: dict[str, ModuleType | None] = {"one_json_value": None, "parse_view": sql}
    if args.old_sql is not None:
        spec = importlib.util.spec_from_file_location("old_sql", args.old_sql)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        variants["parse_view_old"] = old
    print(f"{lines} lines from {path}; parallelism 1; seconds per run including job start-up", flush=True)
    t_env = table_env()
    for round_number in range(1, args.repeat + 1):
        for variant, module in variants.items():
            seconds = run(t_env, path, module, f"{variant}_{round_number}")
            print(f"round {round_number}  {variant:15s} {seconds:6.1f} s  {lines / seconds:9,.0f} lines/s", flush=True)


if __name__ == "__main__":
    main()
