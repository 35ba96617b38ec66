"""The version pins that must match each other agree everywhere they are written."""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from importlib.metadata import version

import pytest

from infra import versions
from infra.jars import LOCK_FILE, POM, read_lock
from infra.settings import PROJECT_ROOT

NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _pom_property(name: str) -> str:
    node = ET.parse(POM).getroot().find(f"m:properties/m:{name}", NS)
    assert node is not None and node.text
    return node.text


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m.group(1): m.group(2) for d in deps if (m := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", d))}


def test_pom_matches_versions_module() -> None:
    assert _pom_property("kafka.version") == versions.KAFKA_VERSION
    assert _pom_property("flink.kafka.connector.version") == versions.FLINK_KAFKA_CONNECTOR_VERSION


def test_connector_is_built_for_the_pinned_flink_minor() -> None:
    flink_minor = ".".join(versions.PYFLINK_VERSION.split(".")[:2])
    assert versions.FLINK_KAFKA_CONNECTOR_VERSION.endswith(f"-{flink_minor}")


def test_pyproject_pins_match_versions_module() -> None:
    pins = _pyproject_pins()
    assert pins["apache-flink"] == versions.PYFLINK_VERSION
    assert pins["chdb"] == versions.CHDB_VERSION
    assert pins["clickhouse-connect"] == versions.CLICKHOUSE_CONNECT_VERSION
    assert pins["kafka-python"] == versions.KAFKA_PYTHON_VERSION


def test_installed_packages_are_the_pinned_ones() -> None:
    assert version("apache-flink") == versions.PYFLINK_VERSION
    assert version("chdb") == versions.CHDB_VERSION
    assert version("clickhouse-connect") == versions.CLICKHOUSE_CONNECT_VERSION


def test_lock_file_pins_the_same_versions() -> None:
    lock = read_lock(LOCK_FILE)
    assert set(lock) == {"kafka", "flink-connector"}
    assert f"kafka_2.13-{versions.KAFKA_VERSION}.jar" in lock["kafka"]
    assert f"kafka-clients-{versions.KAFKA_VERSION}.jar" in lock["kafka"]
    assert list(lock["flink-connector"]) == [f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR_VERSION}.jar"]
    for jars in lock.values():
        for digest in jars.values():
            assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_kafka_python_checksums_record_batches_in_c() -> None:
    # The `crc32c` dependency: without it the loader and producer need ~2x the CPU per record.
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.crc32c_c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_a_pure_python_crc32c_is_reported(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from kafka.record import util

    from jobs.produce import kafka_crc32c_is_native

    kafka_crc32c_is_native.cache_clear()
    monkeypatch.setattr(util, "crc32c_c", None)
    try:
        assert kafka_crc32c_is_native() is False
    finally:
        kafka_crc32c_is_native.cache_clear()
    assert "pip install 'crc32c'" in caplog.text


def test_confluent_kafka_is_pinned_once_as_a_main_dependency_and_installed() -> None:
    # The loader's consumer (jobs/loader/kafka_consumer.py); quixstreams (the bench extra) bounds it below 2.13.
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pinned = _pyproject_pins()["confluent-kafka"]
    extras = [d for deps in project["optional-dependencies"].values() for d in deps]
    assert not [d for d in extras if d.startswith("confluent-kafka")]
    assert version("confluent-kafka") == pinned
    assert tuple(int(n) for n in pinned.split(".")[:2]) < (2, 13)
