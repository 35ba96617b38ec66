"""CPU seconds of processes and of the whole machine, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> tuple[str, list[str]] | None:
    """(name, the fields after it) of a ``/proc`` ``stat`` file, or None if it is gone.

    The name sits in parentheses and may hold spaces and parentheses itself, so the fields start
    after the last ``)``."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()


def _cpu_seconds(fields: list[str]) -> float:
    """User plus system CPU seconds from the fields of a ``stat`` file."""
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds in user and system mode) of ``pid``, or None if it is gone."""
    if (stat := _stat(Path(f"/proc/{pid}/stat"))) is None:
        return None
    return int(stat[1][1]), _cpu_seconds(stat[1])


def descendants(root: int) -> set[int]:
    """The pids of every process below ``root`` (not ``root`` itself)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[0]
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds used so far by the live processes among ``pids``."""
    return sum(stat[1] for pid in pids if (stat := proc_stat(pid)) is not None)


def process_cpu_seconds() -> float:
    """CPU seconds used so far by this process, all its threads."""
    times = os.times()
    return times.user + times.system


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, summed over its cores."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS, idle / TICKS


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """(kernel thread name, CPU seconds) of every live thread of ``pid``, by thread id; empty if it is gone.

    The kernel keeps the first 15 bytes of a thread's name (a JVM sets it from the Java name)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    return {int(task.name): (stat[0], _cpu_seconds(stat[1])) for task in tasks if (stat := _stat(task / "stat")) is not None}


def first_java(pids: Iterable[int]) -> int | None:
    """The lowest pid among ``pids`` that is a ``java`` process, if any."""
    for pid in sorted(pids):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
                return pid
        except OSError:
            continue
    return None


def java_descendant(root: int) -> int | None:
    """The first ``java`` process below ``root`` (a PyFlink driver's MiniCluster JVM), if any."""
    return first_java(descendants(root))
