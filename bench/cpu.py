"""CPU seconds of processes and of the whole machine, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds in user and system mode) of ``pid``, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


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


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and the live processes below it."""
    return sum(stat[1] for pid in descendants(root) | {root} if (stat := proc_stat(pid)) is not None)


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
    result: dict[int, tuple[str, float]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return result
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        result[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return result


def java_descendant(root: int) -> int | None:
    """The first ``java`` process below ``root`` (a PyFlink driver's MiniCluster JVM), if any."""
    for pid in sorted(descendants(root)):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
                return pid
        except OSError:
            continue
    return None
