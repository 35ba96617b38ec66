"""Test tiers and shared fixtures.

Tiers follow folders: tests/unit (marker ``unit``, the default run), tests/flink,
tests/integration, tests/e2e. Services start once per session from the project's
own infra code (a separate stack home and ports, so a developer's running stack
is left alone), are probed for readiness, and are stopped at the end. Each test
gets its own topic names and ClickHouse database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import load_stack

TIERS = ("unit", "flink", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(PROJECT_ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def stack_settings() -> StackSettings:
    """Settings of the test stack: own home under .metering/test-stack, ports from 29092 (METERING_TEST_PORT_BASE)."""
    base = int(os.environ.get("METERING_TEST_PORT_BASE", "29092"))
    env = dict(os.environ)
    env["METERING__STACK__HOME"] = str(PROJECT_ROOT / ".metering" / "test-stack")
    return load_stack(env).with_ports(base)


@pytest.fixture(scope="session")
def stack(stack_settings: StackSettings) -> Iterator[object]:
    """The real Kafka broker + Flink standalone cluster, up for the whole session."""
    from infra.stack import Stack

    the_stack = Stack(stack_settings)
    the_stack.reset()  # a clean broker and cluster per session
    the_stack.up()
    yield the_stack
    the_stack.down()


@pytest.fixture(scope="session")
def bootstrap(stack: object, stack_settings: StackSettings) -> str:
    return stack_settings.bootstrap_servers


@pytest.fixture
def new_topic(bootstrap: str) -> Callable[..., str]:
    """Create a uniquely named topic for this test."""
    from jobs.topics import ensure_topic

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        ensure_topic(bootstrap, name, partitions=partitions)
        return name

    return make


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One chDB directory per test session (the engine is process-wide); databases isolate tests."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def storage_settings(chdb_path: Path) -> Iterator[object]:
    """Settings for a throwaway database in the session's chDB directory."""
    from clickhouse.client import StorageSettings, open_storage

    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_{uuid.uuid4().hex[:12]}")
    yield settings
    with open_storage(settings, create_database=False) as storage:
        storage.drop_database()
