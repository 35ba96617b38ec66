"""Where a bounded metering job spends its time: sampled Java thread dumps of the MiniCluster.

Runs the job (``--until-end``) over N generated events and takes a thread dump of its JVM
every ``--interval`` seconds with ``jstack``. Each Flink task thread (one per chain of operators)
is counted busy when it is RUNNABLE outside a mailbox wait; the report lists, per task, the
share of samples it was busy, then the most frequent busy frames (the first frame of our
operators' packages, or Python when the thread is inside the thread-mode interpreter).

Two workloads: ``demo`` (the demo's 84 hours of event time: about one event per key and minute,
the historical-replay case) and ``live`` (``bench.pipeline.live_shaped_lines``: 500 customers,
event time as dense as 5,000 events/s of live traffic).

Usage (the stack must be up: ``metering stack up``):
    .venv/bin/python -m bench.profile_job --events 100000 [--workload live]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import (  # noqa: E402
    CAPACITY_CUSTOMERS,
    CAPACITY_NOMINAL_RATE,
    bounded_job_command,
    config_for,
    fill_events_topic,
    live_shaped_lines,
    send_to_events_topic,
)
from infra.settings import StackSettings  # noqa: E402
from jobs.config import load_config  # noqa: E402

TASK_THREAD = re.compile(r'^"(?P<name>.+?\(\d+/\d+\)#\d+)".*nid=(?P<nid>0x[0-9a-f]+)')
ANY_THREAD = re.compile(r'^"(?P<name>[^"]+)".*nid=(?P<nid>0x[0-9a-f]+)', re.MULTILINE)
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) of every thread of ``pid``, by native thread id."""
    result = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        result[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return result


IDLE_FRAMES = ("MailboxProcessor", "TaskMailboxImpl.take", "LockSupport.park", "Object.wait", "Unsafe.park")


def java_children(pid: int) -> list[int]:
    """Java processes started under ``pid`` (the MiniCluster's gateway JVM)."""
    out = subprocess.run(["ps", "-o", "pid=,ppid=,comm=", "-e"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    found, frontier = [], {pid}
    while frontier:
        children = {int(r[0]) for r in rows if len(r) >= 3 and int(r[1]) in frontier}
        found += [int(r[0]) for r in rows if int(r[0]) in children and r[2] == "java"]
        frontier = children
    return found


def parse_dump(dump: str) -> list[tuple[str, bool, str, int]]:
    """(task name, busy, top interesting frame, native id) per Flink task thread of one dump."""
    threads = []
    for block in dump.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        match = TASK_THREAD.match(lines[0])
        if not match:
            continue
        frames = [line.strip()[3:] for line in lines if line.strip().startswith("at ")]
        runnable = "RUNNABLE" in block[:400]
        top = frames[0] if frames else ""
        busy = runnable and not any(idle in top for idle in IDLE_FRAMES)
        interesting = next(
            (
                f
                for f in frames
                if "pemja" in f or "org.apache.flink.table.runtime.operators" in f or "GeneratedClass" in f or "Json" in f
            ),
            top,
        )
        threads.append((re.sub(r"\[\d+\]", "", match["name"])[:140], busy, interesting.split("(")[0], int(match["nid"], 16)))
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--workload", choices=("demo", "live"), default="demo")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".metering" / "bench")
    args = parser.parse_args()
    settings = StackSettings.from_env()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = config_for(
        "profile", settings, args.workdir, checkpoint_interval="10s", provisional_interval="10s", parallelism=args.parallelism
    )
    config = load_config(path, env={})
    if args.workload == "demo":
        fill_events_topic(config, settings, args.workdir / "profile.jsonl", args.events)
    else:
        lines = live_shaped_lines(args.events, CAPACITY_CUSTOMERS, CAPACITY_NOMINAL_RATE, end=datetime.now(UTC))
        send_to_events_topic(config, settings, lines)

    started = time.monotonic()
    job = subprocess.Popen(
        bounded_job_command(path, settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(args.workdir / "profile-job.log").open("w"),
    )
    busy: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    frames: Counter[tuple[str, str]] = Counter()
    samples = 0
    names: dict[int, str] = {}
    other_names: dict[int, str] = {}
    cpu: dict[int, float] = {}
    done = threading.Event()
    threading.Thread(target=lambda: (job.wait(), done.set()), daemon=True).start()
    while not done.wait(args.interval):
        for jvm in java_children(job.pid):
            dump = subprocess.run(["jstack", str(jvm)], capture_output=True, text=True, check=False).stdout
            threads = parse_dump(dump)
            if threads:
                samples += 1
                cpu.update(thread_cpu_seconds(jvm))
            for match in ANY_THREAD.finditer(dump):
                other_names[int(match["nid"], 16)] = re.sub(r"\d+", "N", match["name"])[:80]
            for name, is_busy, frame, nid in threads:
                names[nid] = name
                seen[name] += 1
                if is_busy:
                    busy[name] += 1
                    frames[(name, frame)] += 1
    elapsed = time.monotonic() - started
    print(f"job: {args.events} {args.workload} events (+ duplicates), {elapsed:.1f} s, exit {job.returncode}, {samples} dumps")
    cpu_by_name: Counter[str] = Counter()
    for nid, name in names.items():
        cpu_by_name[name] += cpu.get(nid, 0.0)
    others: Counter[str] = Counter()
    for nid, seconds in cpu.items():
        if nid not in names:
            others[other_names.get(nid, "(unnamed)")] += seconds
    print(f"CPU seconds of the job's JVM: {sum(cpu.values()):.1f}, in task threads {sum(cpu_by_name.values()):.1f}")
    for name, seconds in others.most_common(8):
        print(f"{seconds:6.1f} s CPU  (other) {name}")
    for name, count in seen.most_common():
        print(f"{cpu_by_name[name]:6.1f} s CPU {100 * busy[name] / count:5.1f}% runnable  {name}")
        for (task, frame), n in frames.most_common():
            if task == name and n >= max(2, busy[name] // 20):
                print(f"        {100 * n / max(1, busy[name]):5.1f}%  {frame}")


if __name__ == "__main__":
    main()
