"""The stack's own lifecycle and its failure modes, each ending in an error that names cause and log."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from infra.errors import JarChecksumError, StackError
from infra.kafka import KafkaBroker
from infra.process import MARKER_VARIABLE
from infra.settings import PROJECT_ROOT, StackSettings
from infra.stack import Stack
from jobs.cli import main
from tests.support.spare_broker import spare_stack_settings


def our_processes(home: Path, settings: StackSettings) -> list[str]:
    """Every live process carrying one of this stack's markers (in argv or environment)."""
    markers = [f"-{settings.kafka_port}".encode(), f"-{settings.flink_rest_port}".encode()]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(") ", 1)[-1][0]
        except OSError:
            continue
        if state == "Z":
            continue
        for var in environ.split(b"\0"):
            if var.startswith(MARKER_VARIABLE.encode() + b"=") and any(var.endswith(m) for m in markers):
                found.append(cmdline.replace(b"\0", b" ").decode()[:120])
    return found


@pytest.fixture
def spare_settings(tmp_path: Path, stack_settings: StackSettings) -> StackSettings:
    """A second, independent stack (own home and ports) sharing the verified jar cache."""
    return spare_stack_settings(stack_settings, tmp_path / "home")


def test_up_status_idempotent_up_and_down_leaves_no_process(
    spare_settings: StackSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(spare_settings)
    try:
        stack.up()
        status = stack.status()
        assert status["healthy"], status
        assert status["flink"]["taskmanagers"] == 1 and status["flink"]["flink_version"] == "2.2.1"
        assert status["kafka"]["brokers"] == 1
        pids = (status["kafka"]["pid"], status["flink"]["jobmanager_pid"], status["flink"]["taskmanager_pid"])
        stack.up()  # idempotent: same processes, no second broker
        again = stack.status()
        assert (again["kafka"]["pid"], again["flink"]["jobmanager_pid"], again["flink"]["taskmanager_pid"]) == pids
        env = {
            "METERING__STACK__HOME": str(spare_settings.home),
            "METERING__STACK__KAFKA_PORT": str(spare_settings.kafka_port),
            "METERING__STACK__KAFKA_CONTROLLER_PORT": str(spare_settings.kafka_controller_port),
            "METERING__STACK__FLINK_REST_PORT": str(spare_settings.flink_rest_port),
            "METERING__STACK__FLINK_RPC_PORT": str(spare_settings.flink_rpc_port),
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            assert main(["stack", "status", "--format", "json"]) == 0
            assert json.loads(capsys.readouterr().out)["healthy"] is True
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        stopped = stack.down()
    assert set(stopped) == {"kafka", "flink"}
    assert our_processes(spare_settings.home, spare_settings) == []
    assert not stack.status()["healthy"]


def test_port_in_use_is_named(spare_settings: StackSettings) -> None:
    with socket.socket() as blocker:
        # the test before stopped a broker on this port: its connections may linger in TIME_WAIT, which
        # blocks a plain bind; a listener bound with SO_REUSEADDR still keeps the broker off the port
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", spare_settings.kafka_port))
        blocker.listen()
        with pytest.raises(StackError) as err:
            KafkaBroker(spare_settings).start()
    message = str(err.value)
    assert f"127.0.0.1:{spare_settings.kafka_port} is already in use" in message
    assert "METERING__STACK__KAFKA_PORT" in message and "log:" in message


def test_missing_java_is_named(spare_settings: StackSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="no Java runtime found") as err:
        KafkaBroker(spare_settings).start()
    assert "fix:" in str(err.value)


def test_too_old_java_is_named(spare_settings: StackSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_home = tmp_path / "jdk11"
    (fake_home / "bin").mkdir(parents=True)
    java = fake_home / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.20\" 2023-07-18' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAVA_HOME", str(fake_home))
    with pytest.raises(StackError, match="is Java 11; the stack needs Java 17"):
        KafkaBroker(spare_settings).start()


def test_jar_checksum_mismatch_is_named(spare_settings: StackSettings, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(spare_settings.jar_cache / "jars" / "kafka", cache / "jars" / "kafka")
    victim = cache / "jars" / "kafka" / "kafka-clients-4.2.0.jar"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(JarChecksumError) as err:
        KafkaBroker(replace(spare_settings, jar_cache=cache)).start()
    assert "checksum mismatch" in str(err.value) and str(victim) in str(err.value)


def test_broker_that_fails_to_start_reports_its_log(spare_settings: StackSettings) -> None:
    broker = KafkaBroker(spare_settings)
    broker.data_dir.mkdir(parents=True)
    # Storage formatted for another node id: the broker refuses it at start-up.
    (broker.data_dir / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    with pytest.raises(StackError) as err:
        broker.start(timeout_s=60)
    message = str(err.value)
    assert "Kafka broker exited during start-up" in message
    assert "doesn't match previous node id" in message, "the cause from the broker's own log"
    assert str(spare_settings.logs / "kafka.log") in message
    assert not broker.process.is_running()


def test_project_root_is_the_checkout() -> None:
    assert (PROJECT_ROOT / "pyproject.toml").exists()
