"""The one place that pairs the versions which must match each other.

PyFlink ships the Flink runtime; the Flink SQL Kafka connector is built per
Flink minor version; the connector bundles a kafka-clients version, and the
local broker runs the same Kafka release. ``infra/maven/pom.xml`` carries the
same numbers for Maven and ``pyproject.toml`` pins the Python side; a unit
test (tests/unit/test_versions.py) fails if they drift apart.
See docs/versions.md for why these and not newer ones.
"""

from __future__ import annotations

#: apache-flink on PyPI. 2.3.0 exists, but no Kafka connector for 2.3 is published.
PYFLINK_VERSION = "2.2.1"
#: org.apache.flink:flink-sql-connector-kafka, built against Flink 2.2 (kafka-clients 4.2.0).
FLINK_KAFKA_CONNECTOR_VERSION = "5.0.0-2.2"
#: org.apache.kafka:kafka_2.13 — the broker, same release as the connector's kafka-clients.
KAFKA_VERSION = "4.2.0"
#: chdb on PyPI (bundles the ClickHouse 26.x engine).
CHDB_VERSION = "4.4.0"
#: ClickHouse server image for deployments: the release line of chDB's engine (SELECT version()).
CLICKHOUSE_SERVER_VERSION = "26.9"
#: clickhouse-connect on PyPI (one client API for ClickHouse server and chDB).
CLICKHOUSE_CONNECT_VERSION = "1.12.0"
#: kafka-python on PyPI (producer/consumer/admin used by the CLI and the loader).
KAFKA_PYTHON_VERSION = "3.0.12"
#: Lowest Java feature release the stack runs on.
MIN_JAVA_VERSION = 17
