"""The Flink settings behind ``--state-backend`` (infra.flink.state_backend_settings)."""

from __future__ import annotations

import pytest

from infra.flink import MINI_CLUSTER_ROCKSDB_MANAGED_MEMORY, STATE_BACKENDS, state_backend_settings


def test_hashmap_sets_only_the_backend() -> None:
    for mini_cluster in (True, False):
        assert state_backend_settings("hashmap", mini_cluster=mini_cluster) == {"state.backend.type": "hashmap"}


def test_rocksdb_checkpoints_incrementally_with_bloom_filters_everywhere() -> None:
    for mini_cluster in (True, False):
        settings = state_backend_settings("rocksdb", mini_cluster=mini_cluster)
        assert settings["state.backend.type"] == "rocksdb"
        assert settings["execution.checkpointing.incremental"] == "true"
        # Without them a 1.5M-event backlog fell to ~500 events/s (docs/benchmarks.md).
        assert settings["state.backend.rocksdb.use-bloom-filter"] == "true"


def test_rocksdb_gets_managed_memory_only_on_the_mini_cluster() -> None:
    local = state_backend_settings("rocksdb", mini_cluster=True)
    assert local["taskmanager.memory.managed.size"] == MINI_CLUSTER_ROCKSDB_MANAGED_MEMORY
    # A cluster's TaskManagers size their memory from their own configuration.
    assert "taskmanager.memory.managed.size" not in state_backend_settings("rocksdb", mini_cluster=False)


def test_an_unknown_backend_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="forst") as refused:
        state_backend_settings("forst", mini_cluster=True)
    assert all(backend in str(refused.value) for backend in STATE_BACKENDS)
