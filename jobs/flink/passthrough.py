"""A minimal Kafka -> Kafka PyFlink job: the smoke test for connector and cluster wiring.

It copies every record's value from one topic to another through the Flink
SQL Kafka connector (``raw`` format), reading from the earliest offset up to
the offsets that were latest when it started, so it ends by itself.

Run on the local MiniCluster::

    python -m jobs.flink.passthrough --bootstrap 127.0.0.1:19092 --source a --sink b --connector-jar JAR

or submit it to the standalone cluster with ``flink run -py jobs/flink/passthrough.py -- …``
(the cluster has the connector on its classpath, so ``--connector-jar`` is not needed).
Stateless: no operator state, no savepoint concerns. Delivery: at-least-once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyflink.table import DataTypes, EnvironmentSettings, Schema, Table, TableDescriptor, TableEnvironment


def kafka_raw_table(bootstrap: str, topic: str, *, group: str | None = None, bounded: bool = False) -> TableDescriptor:
    """A one-column (``payload BYTES``) Kafka table in ``raw`` format."""
    builder = (
        TableDescriptor.for_connector("kafka")
        .schema(Schema.new_builder().column("payload", DataTypes.BYTES()).build())
        .format("raw")
        .option("topic", topic)
        .option("properties.bootstrap.servers", bootstrap)
    )
    if group is not None:
        builder = (
            builder.option("properties.group.id", group)
            .option("scan.startup.mode", "earliest-offset")
            .option("properties.isolation.level", "read_committed")
        )
    if bounded:
        builder = builder.option("scan.bounded.mode", "latest-offset")
    if group is None:  # used as a sink
        builder = builder.option("sink.delivery-guarantee", "at-least-once")
    return builder.build()


def passthrough(source: Table) -> Table:
    """Table in, table out: the records unchanged (the job's whole 'logic')."""
    return source.select(source.payload)


def run(bootstrap: str, source_topic: str, sink_topic: str, connector_jar: Path | None) -> None:
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = t_env.get_config()
    config.set("parallelism.default", "1")
    config.set("pipeline.name", f"passthrough {source_topic} -> {sink_topic}")
    if connector_jar is not None:
        config.set("pipeline.jars", connector_jar.resolve().as_uri())
    t_env.create_temporary_table(
        "source", kafka_raw_table(bootstrap, source_topic, group=f"passthrough-{source_topic}", bounded=True)
    )
    t_env.create_temporary_table("sink", kafka_raw_table(bootstrap, sink_topic))
    passthrough(t_env.from_path("source")).execute_insert("sink").wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--source", required=True, help="topic to read (from earliest, bounded)")
    parser.add_argument("--sink", required=True, help="topic to write")
    parser.add_argument("--connector-jar", type=Path, help="flink-sql-connector-kafka jar (MiniCluster only)")
    args = parser.parse_args(argv)
    run(args.bootstrap, args.source, args.sink, args.connector_jar)


if __name__ == "__main__":
    main()
