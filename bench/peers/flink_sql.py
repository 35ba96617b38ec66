"""Peer (b): the vanilla Flink SQL reference on PyFlink's MiniCluster, bounded (like the project's backfill run).

Kafka source (JSON format, read_committed, from the earliest offset to the end offsets at start,
or on past them with ``--unbounded``: bench/compare.py's latency mode; offsets committed to the
group on checkpoints), the same event rule as far as SQL expresses it
(``json.ignore-parse-errors``; rows without a customer, event id, quantity or timestamp, or of an
unknown type, are dropped), ROW_NUMBER keep-first dedup on (customer_id, event_id) in arrival
order (processing time), window TVF TUMBLE(1 minute) on event time with a watermark the allowed
lateness behind (``--lateness-ms``), SUM(quantity) as DECIMAL(38, 9) per (customer, meter =
event_type), and an exactly-once (transactional) Kafka sink. Checkpoints every
``--checkpoint-interval`` ms, EXACTLY_ONCE, stored in a temporary folder; hashmap state;
parallelism 1.

What SQL does not express: the project's schema checks (quantity text format, time range),
future-dated events, dedup retention (the state here grows without bound), late events beyond the
watermark (dropped here; the project counts them as late segments or corrections).

Usage: python -m bench.peers.flink_sql --bootstrap HOST:PORT --input T --output T --group G --connector-jar JAR
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from bench.peers.common import LATENESS_MS, METERS, peer_parser


def day_to_second(millis: int) -> str:
    """An interval literal of ``millis`` (``INTERVAL '360' SECOND`` overflows SECOND's default precision of 2 digits)."""
    days, rest = divmod(millis, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{rest / 1000:06.3f}' DAY TO SECOND(3)"


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def with_options(options: dict[str, str]) -> str:
    return ", ".join(f"{lit(k)} = {lit(v)}" for k, v in options.items())


def statements(
    bootstrap: str,
    source: str,
    sink: str,
    group: str,
    transaction_timeout_ms: int = 60_000,
    *,
    lateness_ms: int = LATENESS_MS,
    bounded: bool = True,
) -> list[str]:
    meters = ", ".join(lit(m) for m in METERS)
    source_options = {
        "connector": "kafka",
        "topic": source,
        "properties.bootstrap.servers": bootstrap,
        "properties.group.id": group,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "earliest-offset",
        **({"scan.bounded.mode": "latest-offset"} if bounded else {}),
        "format": "json",
        "json.ignore-parse-errors": "true",
        "json.timestamp-format.standard": "ISO-8601",
    }
    sink_options = {
        "connector": "kafka",
        "topic": sink,
        "properties.bootstrap.servers": bootstrap,
        "format": "json",
        "json.encode.decimal-as-plain-number": "true",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{group}-tx",
        "properties.transaction.timeout.ms": str(transaction_timeout_ms),
    }
    return [
        f"""CREATE TABLE events (
            customer_id STRING, event_id STRING, event_type STRING, `timestamp` TIMESTAMP_LTZ(3),
            quantity DECIMAL(38, 9),
            rt AS COALESCE(`timestamp`, TO_TIMESTAMP_LTZ(0, 3)),
            pt AS PROCTIME(),
            WATERMARK FOR rt AS rt - {day_to_second(lateness_ms)}
        ) WITH ({with_options(source_options)})""",
        f"""CREATE TABLE totals (
            customer_id STRING, meter STRING, window_start STRING, total DECIMAL(38, 9)
        ) WITH ({with_options(sink_options)})""",
        f"""CREATE TEMPORARY VIEW firsts AS
            SELECT customer_id, event_id, event_type, quantity, rt FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id, event_id ORDER BY pt ASC) AS rn
                FROM events
                WHERE customer_id <> '' AND event_id <> '' AND quantity IS NOT NULL AND `timestamp` IS NOT NULL
                  AND event_type IN ({meters})
            ) WHERE rn = 1""",
        """INSERT INTO totals
            SELECT customer_id, event_type, DATE_FORMAT(window_start, 'yyyy-MM-dd HH:mm:ss'), SUM(quantity)
            FROM TABLE(TUMBLE(TABLE firsts, DESCRIPTOR(rt), INTERVAL '1' MINUTE))
            GROUP BY customer_id, event_type, window_start, window_end""",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = peer_parser("flink_sql")
    parser.add_argument("--unbounded", action="store_true", help="read on past the end offsets (the latency mode)")
    parser.add_argument("--connector-jar", type=Path, required=True)
    parser.add_argument("--checkpoint-interval", type=int, default=2000, help="ms")
    parser.add_argument("--explain", action="store_true", help="print the plan instead of running")
    args = parser.parse_args(argv)

    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    conf = Configuration()
    conf.set_string("pipeline.jars", args.connector_jar.resolve().as_uri())
    conf.set_string("pipeline.object-reuse", "true")
    # Checkpoints on disk: the JobManager's heap storage refuses state over 5 MiB (the sparse shape's windows).
    checkpoints = Path(tempfile.mkdtemp(prefix="compare-flink-sql-"))
    conf.set_string("execution.checkpointing.dir", checkpoints.as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    env.enable_checkpointing(args.checkpoint_interval, CheckpointingMode.EXACTLY_ONCE)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")
    t_env.get_config().set("pipeline.name", "compare-flink-sql")
    *ddl, insert = statements(
        args.bootstrap, args.input, args.output, args.group, lateness_ms=args.lateness_ms, bounded=not args.unbounded
    )
    for statement in ddl:
        t_env.execute_sql(statement)
    if args.explain:
        print(t_env.explain_sql(insert))
        return 0
    try:
        t_env.execute_sql(insert).wait()
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
