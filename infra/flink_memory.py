"""How much memory RocksDB gets on a Flink cluster, from its REST answers (pure; no requests here).

With RocksDB, Flink bounds each slot's RocksDB instances (block cache, write buffers, and the
index and filter blocks they cache) by the slot's managed memory, shared with the other managed
memory consumers *in that slot* by ``taskmanager.memory.managed.consumer-weights``. The metering
job has no Python operator (it had one, the finalization, until it moved into the JVM: RocksDB
then got 70% with Flink's default weights) and no batch operator, so the state backend is its
slots' only consumer and RocksDB gets all of it (measured: the local cluster's 250.9 MiB slots,
"Obtained shared RocksDB cache of size 263066750 bytes" in the TaskManager's log).

Short of memory, RocksDB does not fail: it slows down, and the job falls behind. Measured on a
1.5M-id dedup state (docs/benchmarks.md, "RocksDB's memory per slot"): 179 MiB for RocksDB
carried 13–29% fewer events/s than 358 or 717 MiB (which were level), and 90 MiB (Flink's local
default of 128 MiB managed) a third. How much is enough grows with the state (the ids within the
dedup retention), so :func:`rocksdb_memory_warning` marks only what is short for that small state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
#: Flink's default ``taskmanager.memory.managed.consumer-weights``.
DEFAULT_CONSUMER_WEIGHTS = "OPERATOR:70,STATE_BACKEND:70,PYTHON:30"
#: Below this much RocksDB memory per slot `metering job submit` warns: 179 MiB was already slow on a
#: 1.5M-id state, 358 MiB was not (docs/operations.md, "State backend").
ROCKSDB_MEMORY_FLOOR = 256 * MIB

_UNITS = {
    "": 1,
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kb": 1024,
    "kibibytes": 1024,
    "m": MIB,
    "mb": MIB,
    "mebibytes": MIB,
    "g": 1024 * MIB,
    "gb": 1024 * MIB,
    "gibibytes": 1024 * MIB,
    "t": 1024 * 1024 * MIB,
    "tb": 1024 * 1024 * MIB,
    "tebibytes": 1024 * 1024 * MIB,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_memory_size(text: str) -> int:
    """Bytes of a Flink memory size (``MemorySize`` syntax: ``1g``, ``512 mb``, ``1052267001b``, plain bytes)."""
    found = _SIZE.match(text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ValueError(f"not a Flink memory size: {text!r} (e.g. 512m, 1g, 1073741824b)")
    return int(found.group(1)) * _UNITS[unit]


def consumer_weights(text: str) -> dict[str, int]:
    """``taskmanager.memory.managed.consumer-weights`` (``OPERATOR:70,STATE_BACKEND:70,PYTHON:30``) as a dict."""
    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        if not weight.strip().isdigit():
            raise ValueError(f"not a managed memory consumer weight: {part!r} (e.g. STATE_BACKEND:70)")
        weights[name.strip().upper()] = int(weight)
    return weights


def rocksdb_share_of_slot(weights: Mapping[str, int]) -> float:
    """The fraction of a slot's managed memory RocksDB gets: all of it, the job's only consumer, unless its weight is 0."""
    return 1.0 if weights.get("STATE_BACKEND", 0) > 0 else 0.0


def default_managed_memory(process_size: int) -> int:
    """Managed memory of a TaskManager given ``taskmanager.memory.process.size`` and Flink's other defaults.

    JVM overhead 10% of the process (192 MiB to 1 GiB), metaspace 256 MiB, managed 40% of the rest
    (Flink's TaskManager memory model; within bytes of what Flink computes).
    """
    overhead = min(max(int(process_size * 0.1), 192 * MIB), 1024 * MIB)
    return int((process_size - 256 * MIB - overhead) * 0.4)


@dataclass(frozen=True)
class SlotMemory:
    """What RocksDB gets in each slot of one TaskManager."""

    taskmanager: str
    slots: int
    managed_per_slot: int
    rocksdb_per_slot: int
    #: ``managed`` (a share of the slot's managed memory) or ``fixed-per-slot`` (the cluster's setting).
    source: str


def rocksdb_memory(taskmanagers: Mapping[str, Any], config: Mapping[str, str]) -> list[SlotMemory] | None:
    """RocksDB's memory per slot on each TaskManager, or None when Flink does not bound it.

    ``taskmanagers`` is the answer of ``GET /taskmanagers``; ``config`` the cluster's configuration
    (``FlinkRest.cluster_config``). ``state.backend.rocksdb.memory.fixed-per-slot`` takes precedence
    over managed memory; ``state.backend.rocksdb.memory.managed: false`` without it leaves RocksDB
    unbounded (None).
    """
    fixed = config.get("state.backend.rocksdb.memory.fixed-per-slot")
    if fixed is None and config.get("state.backend.rocksdb.memory.managed", "true").strip().lower() == "false":
        return None
    share = rocksdb_share_of_slot(
        consumer_weights(config.get("taskmanager.memory.managed.consumer-weights", DEFAULT_CONSUMER_WEIGHTS))
    )
    memories = []
    for tm in taskmanagers.get("taskmanagers", []):
        slots = max(int(tm.get("slotsNumber", 1)), 1)
        managed = int(tm.get("memoryConfiguration", {}).get("managedMemory", 0)) // slots
        rocksdb = parse_memory_size(fixed) if fixed is not None else int(managed * share)
        memories.append(SlotMemory(str(tm.get("id")), slots, managed, rocksdb, "fixed-per-slot" if fixed else "managed"))
    return memories


def smallest_slot(memories: list[SlotMemory] | None) -> SlotMemory | None:
    """The slot that gives RocksDB the least (the one a job may land on), or None when there is none."""
    return min(memories, key=lambda m: m.rocksdb_per_slot) if memories else None


def _mib(size: int) -> str:
    return f"{size / MIB:,.1f} MiB"


def describe_rocksdb_memory(memories: list[SlotMemory] | None) -> str:
    """One line for `metering job submit`: what RocksDB gets per slot, and where that comes from."""
    if memories is None:
        return "RocksDB memory: not bounded by Flink (state.backend.rocksdb.memory.managed: false)"
    least = smallest_slot(memories)
    if least is None:
        return "RocksDB memory: unknown (the cluster has no TaskManager yet)"
    if least.source == "fixed-per-slot":
        return f"RocksDB memory: {_mib(least.rocksdb_per_slot)} per slot (state.backend.rocksdb.memory.fixed-per-slot)"
    return (
        f"RocksDB memory: {_mib(least.rocksdb_per_slot)} per slot, of {_mib(least.managed_per_slot)} managed memory "
        f"per slot ({least.slots} slots on TaskManager {least.taskmanager})"
    )


def rocksdb_memory_warning(memories: list[SlotMemory] | None, floor: int = ROCKSDB_MEMORY_FLOOR) -> str | None:
    """A warning when some slot would give RocksDB less than ``floor``, with the settings that fix it; else None."""
    least = smallest_slot(memories)
    if least is None or least.rocksdb_per_slot >= floor:
        return None
    fix = (
        "raise state.backend.rocksdb.memory.fixed-per-slot"
        if least.source == "fixed-per-slot"
        else "raise the TaskManagers' taskmanager.memory.managed.size (or .fraction), or give them fewer "
        "taskmanager.numberOfTaskSlots"
    )
    return (
        f"RocksDB would get {_mib(least.rocksdb_per_slot)} per slot on TaskManager {least.taskmanager}, "
        f"less than {_mib(floor)}: short of memory RocksDB slows the job down instead of failing it "
        f"(measured: 179 MiB carried 13-29% fewer events/s than 358 MiB on a 1.5M-id dedup state, and the need "
        f"grows with the state). To fix it, {fix} (docs/operations.md, 'State backend')"
    )
