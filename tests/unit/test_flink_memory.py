"""RocksDB's memory per slot from a cluster's REST answers (infra.flink_memory), and the submit report."""

from __future__ import annotations

from typing import Any

import pytest

from infra.flink_memory import (
    MIB,
    ROCKSDB_MEMORY_FLOOR,
    consumer_weights,
    default_managed_memory,
    describe_rocksdb_memory,
    parse_memory_size,
    rocksdb_memory,
    rocksdb_memory_warning,
    rocksdb_share_of_slot,
)
from jobs.cluster.operations import effective_state_backend

#: The local standalone cluster's TaskManager, as `GET /taskmanagers` answered (3072m process, 4 slots).
LOCAL_MANAGED = 1_052_267_001
FACTORY = "EmbeddedRocksDBStateBackendFactory"


def taskmanagers(*managed_and_slots: tuple[int, int]) -> dict[str, Any]:
    return {
        "taskmanagers": [
            {"id": f"127.0.0.1:{33301 + i}-tm", "slotsNumber": slots, "memoryConfiguration": {"managedMemory": managed}}
            for i, (managed, slots) in enumerate(managed_and_slots)
        ]
    }


def config(**settings: str) -> dict[str, str]:
    """A cluster configuration (``FlinkRest.cluster_config``; keys with dots for underscores)."""
    return {key.replace("_", "."): value for key, value in settings.items()}


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1052267001b", 1_052_267_001),
        ("512m", 512 * MIB),
        ("1g", 1024 * MIB),
        ("1 gb", 1024 * MIB),
        ("256 MB", 256 * MIB),
        ("4096", 4096),
        ("64kb", 65_536),
        ("2 gibibytes", 2048 * MIB),
    ],
)
def test_memory_sizes_read_as_flink_reads_them(text: str, size: int) -> None:
    assert parse_memory_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5g", "-1m", "lots", "12 parsecs"])
def test_a_size_flink_would_refuse_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Flink memory size"):
        parse_memory_size(text)


def test_rocksdb_gets_the_whole_slot_the_job_has_no_python_operator() -> None:
    assert consumer_weights("OPERATOR:70,STATE_BACKEND:70,PYTHON:30") == {"OPERATOR": 70, "STATE_BACKEND": 70, "PYTHON": 30}
    assert rocksdb_share_of_slot(consumer_weights("OPERATOR:70,STATE_BACKEND:70,PYTHON:30")) == 1.0
    assert rocksdb_share_of_slot({"STATE_BACKEND": 1, "PYTHON": 99}) == 1.0
    assert rocksdb_share_of_slot({"STATE_BACKEND": 0, "PYTHON": 30}) == 0.0
    with pytest.raises(ValueError, match="STATE_BACKEND:70"):
        consumer_weights("STATE_BACKEND=70")


def test_the_local_cluster_gives_rocksdb_what_its_taskmanager_logged() -> None:
    # The TaskManager's log on this cluster: "Obtained shared RocksDB cache of size 263066750 bytes".
    (memory,) = rocksdb_memory(taskmanagers((LOCAL_MANAGED, 4)), config()) or []
    assert memory.managed_per_slot == LOCAL_MANAGED // 4
    assert abs(memory.rocksdb_per_slot - 263_066_750) <= 1
    assert memory.source == "managed"
    assert "250.9 MiB per slot, of 250.9 MiB managed memory per slot (4 slots" in describe_rocksdb_memory([memory])
    warning = rocksdb_memory_warning([memory])
    assert warning is not None and "250.9 MiB" in warning and "taskmanager.memory.managed.size" in warning


def test_flinks_memory_model_gives_the_local_taskmanagers_managed_memory() -> None:
    # taskmanager.memory.process.size: 3072m (infra/flink.py); Flink computed LOCAL_MANAGED from it.
    assert abs(default_managed_memory(parse_memory_size("3072m")) - LOCAL_MANAGED) < 1024
    # Flink's docker image default (1728m): 512 MiB of managed memory, i.e. 179 MiB for RocksDB in each of two slots.
    assert abs(default_managed_memory(parse_memory_size("1728m")) - 512 * MIB) < 1024


def test_the_smallest_slot_of_the_cluster_is_the_one_reported() -> None:
    memories = rocksdb_memory(taskmanagers((4096 * MIB, 2), (1024 * MIB, 8)), config()) or []
    assert [m.rocksdb_per_slot for m in memories] == [2048 * MIB, 128 * MIB]
    assert "on TaskManager 127.0.0.1:33302-tm" in (rocksdb_memory_warning(memories) or "")


def test_enough_memory_gets_no_warning_and_the_floor_is_inclusive() -> None:
    memories = rocksdb_memory(taskmanagers((2048 * MIB, 2)), config()) or []
    assert memories[0].rocksdb_per_slot >= ROCKSDB_MEMORY_FLOOR
    assert rocksdb_memory_warning(memories) is None
    assert rocksdb_memory_warning(memories, floor=memories[0].rocksdb_per_slot) is None
    assert rocksdb_memory_warning(memories, floor=memories[0].rocksdb_per_slot + 1) is not None


def test_the_clusters_own_weights_and_fixed_memory_are_honoured() -> None:
    custom = {"taskmanager.memory.managed.consumer-weights": "STATE_BACKEND:90,PYTHON:10"}
    assert [m.rocksdb_per_slot for m in rocksdb_memory(taskmanagers((1000 * MIB, 1)), custom) or []] == [1000 * MIB]
    fixed = {"state.backend.rocksdb.memory.fixed-per-slot": "128m"}
    (memory,) = rocksdb_memory(taskmanagers((8192 * MIB, 1)), fixed) or []
    assert (memory.rocksdb_per_slot, memory.source) == (128 * MIB, "fixed-per-slot")
    assert "fixed-per-slot" in describe_rocksdb_memory([memory])
    assert "raise state.backend.rocksdb.memory.fixed-per-slot" in (rocksdb_memory_warning([memory]) or "")


def test_unbounded_or_unknown_rocksdb_memory_gets_no_warning() -> None:
    unbounded = rocksdb_memory(taskmanagers((128 * MIB, 4)), {"state.backend.rocksdb.memory.managed": "false"})
    assert unbounded is None
    assert "not bounded by Flink" in describe_rocksdb_memory(None)
    assert rocksdb_memory_warning(None) is None
    assert rocksdb_memory(taskmanagers(), config()) == []
    assert "no TaskManager" in describe_rocksdb_memory([])
    assert rocksdb_memory_warning([]) is None


@pytest.mark.parametrize(
    ("requested", "cluster", "expected"),
    [
        (None, {}, "hashmap"),
        (None, {"state.backend.type": "rocksdb"}, "rocksdb"),
        (None, {"state.backend.type": f"org.apache.flink.state.rocksdb.{FACTORY}"}, "rocksdb"),
        ("hashmap", {"state.backend.type": "rocksdb"}, "hashmap"),
        ("rocksdb", {"state.backend.type": "hashmap"}, "rocksdb"),
    ],
)
def test_the_job_runs_on_the_requested_backend_else_the_clusters(
    requested: str | None, cluster: dict[str, str], expected: str
) -> None:
    assert effective_state_backend(requested, cluster) == expected
