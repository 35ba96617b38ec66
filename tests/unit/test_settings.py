"""One settings object: the stack's and the storage's settings come from the configuration, with
one environment style (``METERING__SECTION__KEY``); the older names still work, with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from clickhouse.client import StorageError, StorageSettings
from jobs.cli import main
from jobs.config import DEPRECATED_ENV, ConfigError, DeprecatedSetting, load_config, load_stack, variable_of


def test_defaults_bind_loopback_ports() -> None:
    settings = load_stack({})
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.flink_rest_url == "http://127.0.0.1:18081"


def test_environment_overrides(tmp_path: Path) -> None:
    settings = load_stack({"METERING__STACK__HOME": str(tmp_path), "METERING__STACK__KAFKA_PORT": "39092"})
    assert settings.home == tmp_path and settings.kafka_port == 39092
    assert settings.chdb_path == tmp_path / "chdb" and settings.jar_cache == tmp_path / "cache"


def test_the_stack_feeds_the_defaults_of_the_broker_and_the_chdb_folder(tmp_path: Path) -> None:
    config = load_config(
        None, {"METERING__STACK__HOME": str(tmp_path), "METERING__STACK__KAFKA_PORT": "39092"}, require_meters=False
    )
    assert config.kafka.bootstrap_servers == "127.0.0.1:39092"
    assert config.storage.path == tmp_path / "chdb"


def test_the_stack_section_of_a_file_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "metering.yaml"
    path.parent.mkdir()
    path.write_text("stack:\n  home: ../state\n  flink_rest_port: 28081\n")
    config = load_config(path, {}, require_meters=False)
    assert config.stack.home == tmp_path / "state" and config.stack.flink_rest_url == "http://127.0.0.1:28081"


@pytest.mark.parametrize("value", ["abc", "80", "70000", "-1"])
def test_bad_port_names_the_key_and_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"stack\.flink_rest_port: .* must be a port number \(1024-65535\) "):
        load_stack({"METERING__STACK__FLINK_REST_PORT": value})
    with pytest.raises(ConfigError, match=r"\(set by METERING__STACK__FLINK_REST_PORT\)"):
        load_stack({"METERING__STACK__FLINK_REST_PORT": value})


def test_ports_must_differ() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        load_stack({"METERING__STACK__KAFKA_PORT": "18081"})


def test_an_unknown_stack_key_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"stack\.kafka_prot: unknown key; did you mean stack\.kafka_port\?"):
        load_stack({"METERING__STACK__KAFKA_PROT": "29092"})


def test_a_storage_url_selects_the_server_backend() -> None:
    assert load_config(None, {}, require_meters=False).storage.backend == "chdb"
    storage = load_config(None, {"METERING__STORAGE__URL": "http://h:8123"}, require_meters=False).storage
    assert storage.backend == "server" and storage.url == "http://h:8123"


def test_meters_are_required_only_where_they_are_used() -> None:
    with pytest.raises(ConfigError, match="at least one meter is required"):
        load_config(None, {})
    assert load_config(None, {}, require_meters=False).meters == ()


@pytest.mark.parametrize(("old", "key"), sorted(DEPRECATED_ENV.items()))
def test_every_old_variable_still_sets_its_key_with_a_warning(old: str, key: str, tmp_path: Path) -> None:
    values = {"stack.python": "/usr/bin/python3", "storage.url": "http://h:8123", "storage.database": "old_db"}
    value = values.get(key) or ("29092" if key.endswith("_port") else "3" if key.endswith("slots") else str(tmp_path / "x"))
    with pytest.warns(DeprecatedSetting, match=rf"{old} is deprecated .* set {variable_of(key)} instead"):
        old_config = load_config(None, {old: value}, require_meters=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_config = load_config(None, {variable_of(key): value}, require_meters=False)
    assert old_config == new_config != load_config(None, {}, require_meters=False)


def test_the_new_variable_wins_over_the_old_one() -> None:
    with pytest.warns(DeprecatedSetting, match="METERING_KAFKA_PORT is ignored: METERING__STACK__KAFKA_PORT is set too"):
        settings = load_stack({"METERING_KAFKA_PORT": "29092", "METERING__STACK__KAFKA_PORT": "39092"})
    assert settings.kafka_port == 39092


def test_a_bad_old_variable_is_named_as_the_user_wrote_it() -> None:
    with pytest.warns(DeprecatedSetting), pytest.raises(ConfigError, match=r"\(set by METERING_KAFKA_PORT\)"):
        load_stack({"METERING_KAFKA_PORT": "not-a-port"})


def test_the_command_line_shows_the_deprecation_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("METERING_HOME", str(tmp_path))
    monkeypatch.setenv("METERING__STACK__KAFKA_PORT", "39092")
    main(["stack", "status"])
    err = capsys.readouterr().err
    assert "metering: warning: METERING_HOME is deprecated and goes in release" in err
    assert "set METERING__STACK__HOME instead" in err and "DeprecatedSetting" not in err


def test_storage_repr_never_shows_the_password() -> None:
    settings = StorageSettings(backend="server", url="http://ch:8123", password="hunter2")
    assert "hunter2" not in repr(settings) and "***" in repr(settings)


def test_storage_server_backend_needs_a_url() -> None:
    with pytest.raises(StorageError, match=r"storage\.url"):
        StorageSettings(backend="server")


def test_storage_database_must_be_an_identifier() -> None:
    with pytest.raises(StorageError, match=r"storage\.database"):
        StorageSettings(database="x; DROP TABLE y")


def test_the_operators_table_of_old_names_is_the_code_s() -> None:
    from infra.settings import PROJECT_ROOT

    text = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    for old, key in DEPRECATED_ENV.items():
        assert f"| `{old}` | `{variable_of(key)}` |" in text
