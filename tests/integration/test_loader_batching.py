"""The loader on the real broker and chDB: a trickle becomes a few inserts, and no row is lost to it.

Records that trickle in (the duplicates topic is written as it happens, not at checkpoints) are
held for at most ``pipeline.loader_max_batch_delay`` and inserted together; their offsets are
committed only after that insert, so a loader that dies holding rows loses none of them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from jobs.config import Config, KafkaSettings, PipelineSettings, Topics
from jobs.loader.loader import Loader
from jobs.produce import make_producer
from jobs.topics import ensure_topics
from schemas.validate import raw_event_line

TRICKLE_EVENTS = 120
TRICKLE_GAP_S = 0.025  # one event every 25 ms: ~3 s of trickle, never a gap the loader mistakes for idle


def _config(bootstrap: str, storage: StorageSettings, max_batch_delay: timedelta) -> Config:
    prefix = f"batching-{uuid.uuid4().hex[:8]}"
    topics = Topics(*(f"{prefix}-{name}" for name in ("events", "raw", "aggregates", "finals", "corrections", "dead-letters")))
    config = Config(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=topics),
        storage=storage,
        pipeline=PipelineSettings(loader_max_batch_delay=max_batch_delay),
    )
    ensure_topics(config, partitions=2)
    return config


def _trickle(config: Config) -> threading.Thread:
    """Send TRICKLE_EVENTS raw rows (as the job writes them), one every TRICKLE_GAP_S, from a thread."""

    def send() -> None:
        producer = make_producer(config.kafka.bootstrap_servers, linger_ms=0)
        try:
            for n in range(TRICKLE_EVENTS):
                event = {"event_id": f"e-{n}", "customer_id": "acme", "event_type": "api_call"}
                event |= {"timestamp": "2026-03-01T00:00:00Z", "quantity": "1"}
                key, value = raw_event_line(json.dumps(event).encode(), offset=n) or (b"", b"")
                producer.send(config.kafka.topics.raw, key=key, value=value)
                producer.flush()
                time.sleep(TRICKLE_GAP_S)
        finally:
            producer.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _load_trickle(config: Config) -> tuple[int, int]:
    """(batches, distinct events loaded) for the loader reading the trickle as it arrives."""
    with open_storage(config.storage) as storage:
        migrate(storage)
        sender = _trickle(config)
        stats = Loader(config, storage, group_id="loader").run(until_idle=True, idle_s=1.5)
        sender.join()
        loaded = storage.query_rows("SELECT uniqExact(event_id) FROM raw_events")[0][0]
    return stats.batches, loaded


@pytest.mark.integration
def test_a_trickle_is_inserted_in_few_batches_none_older_than_the_delay(
    bootstrap: str, storage_settings: StorageSettings
) -> None:
    batches, loaded = _load_trickle(_config(bootstrap, storage_settings, timedelta(seconds=1)))
    assert loaded == TRICKLE_EVENTS
    # ~3 s of trickle with no gap: one insert per second of it (and one at the end), not per poll.
    assert 2 <= batches <= 7


@pytest.mark.integration
def test_a_zero_delay_inserts_every_poll(bootstrap: str, storage_settings: StorageSettings) -> None:
    batches, loaded = _load_trickle(_config(bootstrap, storage_settings, timedelta(0)))
    assert loaded == TRICKLE_EVENTS
    assert batches > 20


@pytest.mark.integration
def test_a_loader_that_dies_holding_rows_loses_none(
    bootstrap: str, storage_settings: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(bootstrap, storage_settings, timedelta(seconds=1))
    inserted_batches = 0
    real_insert = Loader._insert_batch

    def insert_then_die(self: Loader, consumer: Any, batch: Any) -> None:
        nonlocal inserted_batches
        if inserted_batches == 1:  # the second batch never reaches ClickHouse: the process "dies"
            raise KeyboardInterrupt
        inserted_batches += 1
        real_insert(self, consumer, batch)

    with open_storage(config.storage) as storage:
        migrate(storage)
        sender = _trickle(config)
        with monkeypatch.context() as patch:
            patch.setattr(Loader, "_insert_batch", insert_then_die)
            with pytest.raises(KeyboardInterrupt):
                Loader(config, storage, group_id="loader").run(until_idle=True, idle_s=1.5)
        first_life = storage.query_rows("SELECT uniqExact(event_id) FROM raw_events")[0][0]
        sender.join()
        Loader(config, storage, group_id="loader").run(until_idle=True, idle_s=1.5)
        rows = storage.query_rows("SELECT event_id FROM raw_events FINAL")
    assert 0 < first_life < TRICKLE_EVENTS  # it died with rows read but not inserted
    assert sorted(event_id for (event_id,) in rows) == sorted(f"e-{n}" for n in range(TRICKLE_EVENTS))
