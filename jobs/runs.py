"""Run the pipeline's stages from Python: the job on a local MiniCluster, the loader into ClickHouse.

`metering job run`, `metering load` and `metering demo` are thin layers over these functions; tests
and scripts call them directly. They print nothing: progress goes through the callbacks given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.config import Config

log = logging.getLogger("metering.loader")

if TYPE_CHECKING:
    from jobs.loader.loader import LoaderStats


class NotMigratedError(RuntimeError):
    """The database lacks migrations (``pending`` names them); `metering migrate` applies them."""

    def __init__(self, pending: list[str]) -> None:
        self.pending = pending
        super().__init__(f"the database is not migrated: {', '.join(pending)}\n  fix: run `metering migrate`")


def check_migrated(storage: Any) -> None:
    """Raise :class:`NotMigratedError` unless every migration is applied to ``storage``."""
    from clickhouse.migrate import status

    pending = [f"{s.version:04d}_{s.name} ({s.state})" for s in status(storage) if s.state != "applied"]
    if pending:
        raise NotMigratedError(pending)


@dataclass(frozen=True)
class JobRun:
    """What :func:`run_local_job` did."""

    job_name: str
    bounded: bool
    topics_created: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_name": self.job_name,
            "bounded": self.bounded,
            "topics_created": self.topics_created,
            "seconds": round(self.seconds, 1),
        }


def run_local_job(
    config: Config,
    *,
    until_end: bool,
    job_name: str = "metering",
    parallelism: int | None = None,
    on_topics_created: Callable[[list[str]], None] | None = None,
) -> JobRun:
    """Create the pipeline's topics and run the metering job in this process on a Flink MiniCluster.

    ``until_end``: read up to the topic's current end, finalize every period and return; otherwise
    run until interrupted.
    """
    from infra.flink import connector_jar
    from jobs.flink.metering_job import RunOptions, run, with_parallelism
    from jobs.topics import ensure_topics

    config = with_parallelism(config, parallelism)
    created = ensure_topics(config)
    if created and on_topics_created is not None:
        on_topics_created(created)
    settings = config.stack
    started = time.monotonic()
    run(
        config,
        RunOptions(
            bounded=until_end,
            connector_jar=connector_jar(settings),
            job_name=job_name,
            checkpoint_dir=(settings.checkpoint_dir / job_name).resolve().as_uri(),
        ),
    )
    return JobRun(job_name, until_end, created, time.monotonic() - started)


@dataclass
class LoadRun:
    """What :func:`load_outputs` stored (``heartbeats`` only when it sent some, unbounded)."""

    stats: LoaderStats
    heartbeats: dict[str, int] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "rows": dict(self.stats.rows),
            "batches": self.stats.batches,
            "retries": self.stats.retries,
            "quarantined": dict(self.stats.quarantined),
        }
        if self.heartbeats is not None:
            summary["heartbeats"] = self.heartbeats
        return summary


def _loader(config: Config, storage: Any, group_id: str, load_raw: bool) -> Any:
    from jobs.loader.loader import Loader

    return Loader(config, storage, group_id=group_id, load_raw=load_raw, heartbeat_interval=config.pipeline.heartbeat_interval)


def _ensure_ledger_topic(config: Config) -> None:
    """Create the credit ledger topic the loader subscribes to (one partition, kept forever) unless it exists.

    The loader does not wait for Kafka to start: when the brokers cannot be reached now, it warns
    and subscribes all the same; the consumer picks the topic up at a metadata refresh once it exists.
    """
    from infra.kafka_security import KafkaAuthenticationError
    from jobs.topics import ensure_credit_ledger_topic

    try:
        ensure_credit_ledger_topic(config)
    except KafkaAuthenticationError:
        raise
    except Exception as exc:  # unreachable brokers: the loader itself waits for them
        log.warning("the credit ledger topic could not be created now (loaded once it exists): %s", exc)


def load_outputs(
    config: Config,
    *,
    group_id: str = "metering-loader",
    load_raw: bool = True,
    until_idle: bool = False,
    on_batch: Callable[[LoaderStats], None] | None = None,
) -> LoadRun:
    """Load the job's topics into ClickHouse until idle (``until_idle``) or interrupted (Ctrl-C, SIGTERM).

    In embedded mode this process owns the chDB directory while it runs and serves reads to
    `metering query` and `metering dashboard`. Raises :class:`NotMigratedError` before reading anything
    when the database lacks migrations.
    """
    from contextlib import nullcontext

    from clickhouse.client import open_storage
    from clickhouse.gateway import QueryGateway

    with open_storage(config.storage) as storage:
        check_migrated(storage)
        _ensure_ledger_topic(config)
        loader = _loader(config, storage, group_id, load_raw)
        with QueryGateway(storage, access=config.access) if config.storage.backend == "chdb" else nullcontext():
            try:
                stats = loader.run(until_idle=until_idle, on_batch=on_batch)
            except KeyboardInterrupt:
                stats = loader.stats
    heartbeats = None
    if loader.heartbeat is not None:
        heartbeats = {"sent": loader.heartbeat.stats.records, "failures": loader.heartbeat.stats.failures}
    return LoadRun(stats, heartbeats)


def reload_quarantine(config: Config, *, group_id: str = "metering-loader", load_raw: bool = True) -> dict[str, int]:
    """Convert and store the quarantined records again with the current code (after a fix)."""
    from clickhouse.client import open_storage

    with open_storage(config.storage) as storage:
        check_migrated(storage)
        loader = _loader(config, storage, group_id, load_raw)
        reloaded, still = loader.reload_quarantine()
        return {"reloaded": reloaded, "still_quarantined": still, "retries": loader.stats.retries}
