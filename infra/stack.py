"""The local stack as one unit: Kafka broker + Flink cluster (+ chDB location)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from infra.flink import FlinkCluster
from infra.kafka import KafkaBroker
from infra.settings import StackSettings


@dataclass
class Stack:
    """Start, check, stop and reset every local service from one settings object."""

    settings: StackSettings

    @property
    def kafka(self) -> KafkaBroker:
        return KafkaBroker(self.settings)

    @property
    def flink(self) -> FlinkCluster:
        return FlinkCluster(self.settings)

    def up(self) -> None:
        """Start what is not running and wait until everything is ready (idempotent)."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.kafka.start()
        self.flink.start()

    def status(self) -> dict[str, Any]:
        kafka, flink = self.kafka.status(), self.flink.status()
        return {
            "home": str(self.settings.home),
            "healthy": bool(kafka.get("healthy") and flink.get("healthy")),
            "kafka": kafka,
            "flink": flink,
            "clickhouse": {
                "component": "clickhouse",
                "backend": "chdb (embedded)",
                "path": str(self.settings.chdb_path),
            },
        }

    def down(self) -> list[str]:
        """Stop every process of ours; returns the names of those that were running."""
        stopped = []
        if self.flink.stop():
            stopped.append("flink")
        if self.kafka.stop():
            stopped.append("kafka")
        return stopped

    def reset(self, *, jars: bool = False) -> None:
        """Stop everything and wipe broker data, checkpoints, savepoints, chDB data and logs."""
        self.down()
        if self.settings.home.exists():
            for child in self.settings.home.iterdir():
                if child.resolve() == self.settings.jar_cache.resolve():
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        if jars and self.settings.jar_cache.exists():
            shutil.rmtree(self.settings.jar_cache)
