"""Measure what the per-event SQL parsing costs: does Flink reuse repeated sub-expressions?

Reads a bounded Kafka topic (e.g. a demo run's events) into a blackhole sink through three
projections and prints records/s for each:
  one:       a single JSON_VALUE per record
  repeated:  the same JSON_VALUE expression referenced 10 times
  ts_arith:  the job's event-time expression (jobs/sql.event_millis_sql)
  parse_view: the job's whole parse stage (source rowtime + jobs/sql.parse_view), the way the job runs it
Usage: .venv/bin/python bench/sql_parse_probe.py TOPIC [BOOTSTRAP [OLD_SQL_PY]]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402

from infra.flink import connector_jar  # noqa: E402
from infra.settings import StackSettings  # noqa: E402
from jobs.sql import event_millis_sql  # noqa: E402


def run(topic: str, bootstrap: str, projection: str) -> float:
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.jars", connector_jar(StackSettings.from_env()).as_uri())
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE src (payload BYTES) WITH ('connector' = 'kafka', 'topic' = '{topic}', "
        f"'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'raw', 'scan.startup.mode' = 'earliest-offset', "
        "'scan.bounded.mode' = 'latest-offset')"
    )
    t_env.execute_sql("CREATE TEMPORARY TABLE sink (x BIGINT) WITH ('connector' = 'blackhole')")
    started = time.monotonic()
    t_env.execute_sql(f"INSERT INTO sink SELECT {projection} FROM (SELECT CAST(payload AS STRING) AS doc FROM src)").wait()
    return time.monotonic() - started


def run_parse_view(topic: str, bootstrap: str) -> float:
    """The job's parse stage: the events source with its rowtime column, then parse_view, into a blackhole."""
    from datetime import timedelta

    from jobs.config import load_config
    from jobs.sql import lit, parse_view, source_schema_columns

    meters = load_config(ROOT / "config" / "metering.example.yaml", env={}).meters
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.jars", connector_jar(StackSettings.from_env()).as_uri())
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    computed = ",\n  ".join(f"{name} AS {expr}" for name, expr in source_schema_columns(timedelta(minutes=5)))
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE events (payload BYTES, kafka_partition INT METADATA FROM 'partition' VIRTUAL, "
        "kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL, kafka_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL, "
        f"{computed}, WATERMARK FOR rowtime AS rowtime - INTERVAL '30' SECOND) WITH ('connector' = 'kafka', "
        f"'topic' = {lit(topic)}, 'properties.bootstrap.servers' = {lit(bootstrap)}, 'format' = 'raw', "
        "'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset')"
    )
    t_env.execute_sql("CREATE TEMPORARY TABLE sink (reason STRING, event_ms BIGINT) WITH ('connector' = 'blackhole')")
    started = time.monotonic()
    t_env.execute_sql(
        f"INSERT INTO sink SELECT reason, event_ms FROM ({parse_view('events', meters, timedelta(minutes=5))})"
    ).wait()
    return time.monotonic() - started


def main() -> None:
    topic = sys.argv[1]
    bootstrap = sys.argv[2] if len(sys.argv) > 2 else StackSettings.from_env().bootstrap_servers
    one = "CAST(CHAR_LENGTH(JSON_VALUE(doc, '$.timestamp')) AS BIGINT)"
    repeated = " + ".join([one] * 10)
    variants = {"one": one, "repeated": repeated, "ts_arith": event_millis_sql("JSON_VALUE(doc, '$.timestamp')")}
    if len(sys.argv) > 3:  # an older jobs/sql.py to compare against
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_sql", sys.argv[3])
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        variants = {"ts_old": old.event_millis_sql("JSON_VALUE(doc, '$.timestamp')"), "ts_arith": variants["ts_arith"]}
    for name, projection in variants.items():
        print(f"{name:10s} {run(topic, bootstrap, projection):6.1f} s", flush=True)
    print(f"{'parse_view':10s} {run_parse_view(topic, bootstrap):6.1f} s", flush=True)


if __name__ == "__main__":
    main()
