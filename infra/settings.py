"""Where the local stack keeps its files and which loopback ports it uses.

Values come from defaults, overridden by ``METERING_*`` environment variables.
Every process of the stack binds to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

LOOPBACK = "127.0.0.1"


class SettingsError(ValueError):
    """A stack setting from the environment is invalid."""


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r}: must be a port number (1024-65535)") from None
    if not 1024 <= value <= 65535:
        raise SettingsError(f"{key}={raw!r}: must be a port number (1024-65535)")
    return value


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r}: must be a positive integer") from None
    if value < 1:
        raise SettingsError(f"{key}={raw!r}: must be a positive integer")
    return value


@dataclass(frozen=True)
class StackSettings:
    """Locations and ports of one local stack instance."""

    home: Path
    jar_cache: Path
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    flink_rest_port: int = 18081
    flink_rpc_port: int = 16123
    taskmanager_slots: int = 4
    startup_timeout_s: float = 90.0
    python_executable: str = field(default="")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackSettings:
        """Build settings from ``METERING_*`` variables over the defaults."""
        env = os.environ if env is None else env
        home = Path(env.get("METERING_HOME") or PROJECT_ROOT / ".metering").resolve()
        cache = Path(env.get("METERING_JAR_CACHE") or PROJECT_ROOT / ".metering" / "cache").resolve()
        settings = cls(
            home=home,
            jar_cache=cache,
            kafka_port=_port(env, "METERING_KAFKA_PORT", 19092),
            kafka_controller_port=_port(env, "METERING_KAFKA_CONTROLLER_PORT", 19093),
            flink_rest_port=_port(env, "METERING_FLINK_REST_PORT", 18081),
            flink_rpc_port=_port(env, "METERING_FLINK_RPC_PORT", 16123),
            taskmanager_slots=_positive_int(env, "METERING_FLINK_SLOTS", 4),
            python_executable=env.get("METERING_PYTHON") or sys.executable,
        )
        ports = [
            settings.kafka_port,
            settings.kafka_controller_port,
            settings.flink_rest_port,
            settings.flink_rpc_port,
        ]
        if len(set(ports)) != len(ports):
            raise SettingsError(f"METERING_*_PORT: the stack's ports must differ, got {ports}")
        return settings

    def with_ports(self, base: int) -> StackSettings:
        """A copy whose four ports start at ``base`` (used to run a test stack beside a dev one)."""
        return replace(
            self,
            kafka_port=base,
            kafka_controller_port=base + 1,
            flink_rest_port=base + 2,
            flink_rpc_port=base + 3,
        )

    # Derived locations -------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def flink_dir(self) -> Path:
        return self.home / "flink"

    @property
    def checkpoint_dir(self) -> Path:
        return self.flink_dir / "checkpoints"

    @property
    def savepoint_dir(self) -> Path:
        return self.flink_dir / "savepoints"

    @property
    def chdb_path(self) -> Path:
        return self.home / "chdb"

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.kafka_port}"

    @property
    def flink_rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.flink_rest_port}"
