"""Where the local stack keeps its files and which loopback ports it uses.

A plain value: the configuration (jobs/config.py, section ``stack``) reads it from the YAML file
and the ``METERING__STACK__*`` variables and validates it; infra/ only uses it. Every process of
the stack binds to 127.0.0.1 only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class StackSettings:
    """Locations and ports of one local stack instance."""

    home: Path = PROJECT_ROOT / ".metering"
    jar_cache: Path = PROJECT_ROOT / ".metering" / "cache"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    flink_rest_port: int = 18081
    flink_rpc_port: int = 16123
    taskmanager_slots: int = 4
    startup_timeout_s: float = 90.0
    python_executable: str = field(default=sys.executable)
    #: A prebuilt jar of the job's Java functions (an image built with it, no JDK); None compiles
    #: udfs/jvm into ``jar_cache`` on first use.
    udf_jar: Path | None = None

    @property
    def ports(self) -> tuple[int, int, int, int]:
        return (self.kafka_port, self.kafka_controller_port, self.flink_rest_port, self.flink_rpc_port)

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
