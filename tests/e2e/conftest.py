"""Shared e2e fixtures: a generated workload produced to fresh topics, in a fresh database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clickhouse.client import open_storage
from clickhouse.migrate import migrate
from jobs.config import Config, load_config
from jobs.demo import demo_document, generate
from jobs.produce import make_producer, produce_lines
from jobs.topics import ensure_topics

EVENTS = 4000


@pytest.fixture
def pipeline(tmp_path: Path, bootstrap: str, chdb_path: Path) -> Iterator[tuple[Config, Path, Path]]:
    run_id = uuid.uuid4().hex[:8]
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(demo_document(run_id, bootstrap, chdb_path)))
    config = load_config(config_path, env={})
    events = tmp_path / "events.jsonl"
    generate(events, EVENTS, seed=int(run_id, 16) % 1000)
    ensure_topics(config)
    producer = make_producer(bootstrap)
    try:
        with events.open("rb") as lines:
            summary = produce_lines(lines, producer=producer, topic=config.kafka.topics.events, validate=False)
    finally:
        producer.close()
    assert summary.failed == 0
    with open_storage(config.storage) as storage:
        migrate(storage)
    yield config, config_path, events
    with open_storage(config.storage, create_database=False) as storage:
        storage.drop_database()
