"""Stack and storage settings: environment overrides and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickhouse.client import StorageError, StorageSettings
from infra.settings import SettingsError, StackSettings


def test_defaults_bind_loopback_ports() -> None:
    settings = StackSettings.from_env({})
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.flink_rest_url == "http://127.0.0.1:18081"


def test_environment_overrides(tmp_path: Path) -> None:
    settings = StackSettings.from_env({"METERING_HOME": str(tmp_path), "METERING_KAFKA_PORT": "39092"})
    assert settings.home == tmp_path and settings.kafka_port == 39092
    assert settings.chdb_path == tmp_path / "chdb"


@pytest.mark.parametrize("value", ["abc", "80", "70000"])
def test_bad_port_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=f"METERING_FLINK_REST_PORT={value!r}"):
        StackSettings.from_env({"METERING_FLINK_REST_PORT": value})


def test_ports_must_differ() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        StackSettings.from_env({"METERING_KAFKA_PORT": "18081"})


def test_storage_repr_never_shows_the_password() -> None:
    settings = StorageSettings(backend="server", url="http://ch:8123", password="hunter2")
    assert "hunter2" not in repr(settings) and "***" in repr(settings)


def test_storage_server_backend_needs_a_url() -> None:
    with pytest.raises(StorageError, match=r"storage\.url"):
        StorageSettings(backend="server")


def test_storage_database_must_be_an_identifier() -> None:
    with pytest.raises(StorageError, match=r"storage\.database"):
        StorageSettings(database="x; DROP TABLE y")


def test_storage_from_env_selects_server_by_url() -> None:
    assert StorageSettings.from_env({}).backend == "chdb"
    assert StorageSettings.from_env({"METERING_CLICKHOUSE_URL": "http://h:8123"}).backend == "server"
