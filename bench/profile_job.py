"""Where a bounded metering job spends its time: sampled Java thread dumps of the MiniCluster.

Runs the job (``--until-end``) over N generated events and takes a thread dump of its JVM
every ``--interval`` seconds with ``jstack``. Each Flink task thread (one per chain of operators)
is counted busy when it is RUNNABLE outside a mailbox wait; the report lists, per task, the
share of samples it was busy, then the most frequent busy frames (the first frame of our
operators' packages, or Python when the thread is inside the thread-mode interpreter).

Two workloads: ``demo`` (the demo's 84 hours of event time: about one event per key and minute,
the historical-replay case) and ``live`` (``bench.pipeline.live_shaped_lines``: 500 customers,
event time as dense as 5,000 events/s of live traffic).

With ``--jfr FILE`` the job's JVM also runs Java Flight Recorder (``settings=profile``) and the
report adds, per task thread, the methods its execution samples were in: where the time went
inside the generated code, the functions of ``udfs/jvm`` and Flink's own operators (JIT-compiled
frames included, which thread dumps rarely catch).

Usage (the stack must be up: ``metering stack up``):
    .venv/bin/python -m bench.profile_job --events 100000 [--workload live] [--jfr /tmp/job.jfr]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import java_descendant, thread_cpu  # noqa: E402
from bench.pipeline import (  # noqa: E402
    CAPACITY_CUSTOMERS,
    CAPACITY_NOMINAL_RATE,
    bounded_job_command,
    config_for,
    fill_events_topic,
    live_shaped_lines,
    send_to_events_topic,
)
from jobs.config import load_config, load_stack  # noqa: E402

TASK_THREAD = re.compile(r'^"(?P<name>.+?\(\d+/\d+\)#\d+)".*nid=(?P<nid>0x[0-9a-f]+)')
ANY_THREAD = re.compile(r'^"(?P<name>[^"]+)".*nid=(?P<nid>0x[0-9a-f]+)', re.MULTILINE)


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) of every thread of ``pid``, by native thread id."""
    return {tid: seconds for tid, (_, seconds) in thread_cpu(pid).items()}


#: Frames the inclusive part of the JFR report counts (besides state access): the job's Java
#: functions and the planner's generated operators.
OWN_FRAMES = ("dev.metering", "StreamExec")
JFR_FRAME = re.compile(r"^\s+([\w$.<>/]+)\(")
JFR_THREAD = re.compile(r'sampledThread = "([^"]*)"')


def jfr_samples(recording: Path) -> list[tuple[str, list[str]]]:
    """(thread name, frames innermost first) of every execution sample in a JFR recording."""
    text = subprocess.run(
        ["jfr", "print", "--events", "jdk.ExecutionSample", "--stack-depth", "64", str(recording)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    samples = []
    for event in text.split("jdk.ExecutionSample {")[1:]:
        thread = JFR_THREAD.search(event)
        frames = [m.group(1) for line in event.splitlines() if (m := JFR_FRAME.match(line))]
        if thread and frames:
            samples.append((re.sub(r"\[\d+\]", "", thread.group(1)), frames))
    return samples


def print_jfr_report(recording: Path, top: int = 12) -> None:
    """Per Flink task thread: the methods its samples were in (self) and below (inclusive, ours and Flink's operators)."""
    by_thread: dict[str, list[list[str]]] = {}
    for thread, frames in jfr_samples(recording):
        if TASK_THREAD.match(f'"{thread}" nid=0x0'):
            by_thread.setdefault(thread, []).append(frames)
    print(f"JFR execution samples ({recording}):")
    for thread, stacks in sorted(by_thread.items(), key=lambda item: -len(item[1])):
        print(f"{len(stacks):6d} samples  {thread[:140]}")
        own = Counter(frames[0] for frames in stacks)
        for frame, n in own.most_common(top):
            print(f"        self {100 * n / len(stacks):5.1f}%  {frame}")
        within = Counter(f for frames in stacks for f in set(frames) if f.startswith(OWN_FRAMES) or ".state." in f)
        for frame, n in within.most_common(top):
            print(f"   inclusive {100 * n / len(stacks):5.1f}%  {frame}")


IDLE_FRAMES = ("MailboxProcessor", "TaskMailboxImpl.take", "LockSupport.park", "Object.wait", "Unsafe.park")


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
    parser.add_argument("--jfr", type=Path, help="also record the job's JVM with Java Flight Recorder into this file")
    args = parser.parse_args()
    settings = load_stack()
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

    environment = dict(os.environ)
    if args.jfr:  # the MiniCluster's JVM takes its options from JVM_ARGS (pyflink_gateway_server.py)
        recording = f"-XX:StartFlightRecording=filename={args.jfr.resolve()},settings=profile,dumponexit=true"
        environment["JVM_ARGS"] = f"{environment.get('JVM_ARGS', '')} {recording}".strip()
    started = time.monotonic()
    job = subprocess.Popen(
        bounded_job_command(path, settings),
        cwd=ROOT,
        env=environment,
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

    def wait_for_the_job() -> None:
        job.wait()
        done.set()

    threading.Thread(target=wait_for_the_job, daemon=True).start()
    while not done.wait(args.interval):
        if (jvm := java_descendant(job.pid)) is None:
            continue
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
    cpu_by_name: defaultdict[str, float] = defaultdict(float)
    for nid, name in names.items():
        cpu_by_name[name] += cpu.get(nid, 0.0)
    others: defaultdict[str, float] = defaultdict(float)
    for nid, seconds in cpu.items():
        if nid not in names:
            others[other_names.get(nid, "(unnamed)")] += seconds
    print(f"CPU seconds of the job's JVM: {sum(cpu.values()):.1f}, in task threads {sum(cpu_by_name.values()):.1f}")
    for name, seconds in sorted(others.items(), key=lambda item: item[1], reverse=True)[:8]:
        print(f"{seconds:6.1f} s CPU  (other) {name}")
    for name, count in seen.most_common():
        print(f"{cpu_by_name[name]:6.1f} s CPU {100 * busy[name] / count:5.1f}% runnable  {name}")
        for (task, frame), n in frames.most_common():
            if task == name and n >= max(2, busy[name] // 20):
                print(f"        {100 * n / max(1, busy[name]):5.1f}%  {frame}")
    if args.jfr:
        print_jfr_report(args.jfr)


if __name__ == "__main__":
    main()
