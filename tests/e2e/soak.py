"""The kill -9 soak's machinery: stream a generated workload while a seeded schedule of faults hits the pipeline.

One :class:`Soak` is one deployment on the test stack: its own topics, consumer group, chDB
directory and checkpoint folder. It streams the lines of ``jobs.demo.generate`` to the events
topic from a thread, runs the job on the standalone cluster (``metering job submit``) and the
loader as its own process (``tests/e2e/loader_probe.py``: ``metering load`` that reports its
inserts), and applies :class:`Fault` s one after the other. Each fault is followed by the recovery
docs/operations.md gives an operator ("Recover"):

- TaskManager: start a new one; Flink restarts the job from its last checkpoint.
- JobManager (no HA): start it again (what ``metering stack up`` does), then
  ``metering job submit --from-latest-checkpoint``.
- Kafka broker: start it again (what ``metering stack up`` does); the job and the loader ride it out.
- Loader: start it again; what it inserted but did not commit is re-delivered and collapses.
- A job that failed for good (restart attempts exhausted): ``metering job submit --from-latest-checkpoint``.

After the last fault the rest of the workload is streamed with no fault, the job is drained
(``stop --savepoint --drain``: every period final), the loader catches up, and every final,
correction and dead letter is compared with ``jobs.demo.recompute``.

Why no fault while the tail is read: the generator puts its events for long-final periods (late
beyond grace) at the end. After a restore the job's watermarks start from nothing (partition
watermarks are not checkpointed either), so such an event read before any newer one would be
judged against no watermark at all and finalize its old period instead of correcting it
(docs/operations.md, "Known limits"). Faults therefore stop before the last part of the on-time
events; the soak checks that no failover happened from then on, and fails saying so if one did.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import Config, load_config
from jobs.demo import Expected, compare, demo_document, generate, recompute
from jobs.produce import make_producer, record_key
from jobs.topics import ensure_topics
from tests.e2e.browser import artifacts_dir
from tests.e2e.harness import metering, run, transaction_states

#: Processes the soak kills with SIGKILL.
KINDS = ("taskmanager", "jobmanager", "broker", "loader")


@dataclass(frozen=True)
class Fault:
    """One fault of the schedule.

    ``moment``: ``random`` (right after ``delay_s``), ``checkpoint`` (after ``delay_s``, as soon as a
    checkpoint is in progress: a ``chk-<n>`` folder without ``_metadata``) or ``insert`` (the loader,
    as soon as it starts the ``insert_index``-th INSERT of a batch). ``pause`` faults SIGSTOP the
    process for ``pause_s`` and SIGCONT it instead of killing it.
    """

    number: int
    kind: str
    moment: str = "random"
    delay_s: float = 3.0
    insert_index: int = 1
    pause_s: float = 0.0


def schedule(seed: int, kills: int) -> list[Fault]:
    """A seeded kill schedule: every kind at least once (from four kills), at least one kill during a checkpoint
    and one during a loader insert (from five); kinds, moments and delays otherwise random."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    kinds = (kinds + [rng.choice(KINDS) for _ in range(max(0, kills - len(KINDS)))])[:kills]
    faults = []
    for number, kind in enumerate(kinds, start=1):
        moments = ("random", "insert", "insert") if kind == "loader" else ("random", "checkpoint")
        moment = rng.choice(moments)
        faults.append(Fault(number, kind, moment, round(rng.uniform(1.0, 6.0), 1), rng.randint(1, 3)))
    if kills >= 5:
        for wanted_kinds, moment in ((("taskmanager", "jobmanager"), "checkpoint"), (("loader",), "insert")):
            if not any(f.kind in wanted_kinds and f.moment == moment for f in faults):
                first = next(i for i, f in enumerate(faults) if f.kind in wanted_kinds)
                faults[first] = Fault(**{**asdict(faults[first]), "moment": moment})
    return faults


@dataclass
class FaultRecord:
    """What happened at one fault: when, whether the wanted moment was hit, how long recovery took."""

    fault: Fault
    at_s: float = 0.0
    hit: str = ""  # e.g. "chk-12 in progress", "insert raw_events 2", "after 3.1 s"
    recovery_s: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class SoakReport:
    seed: int
    events: int
    lines: int
    kills: Counter[str] = field(default_factory=Counter)
    records: list[FaultRecord] = field(default_factory=list)
    resumed_after_failure: int = 0
    job_submissions: int = 0
    loader_starts: int = 0
    duration_s: float = 0.0
    differences: int | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "events": self.events,
            "lines": self.lines,
            "kills": dict(self.kills),
            "kills_total": sum(self.kills.values()),
            "resumed_after_failure": self.resumed_after_failure,
            "job_submissions": self.job_submissions,
            "loader_starts": self.loader_starts,
            "duration_s": round(self.duration_s, 1),
            "differences": self.differences,
            "faults": [
                {**asdict(r.fault), "at_s": round(r.at_s, 1), "hit": r.hit, "recovery_s": round(r.recovery_s, 1)}
                | {"notes": r.notes}
                for r in self.records
            ],
            "checks": self.checks,
        }


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Streamer(threading.Thread):
    """Produces ``lines`` in order, at ``rate`` lines per second, never past ``limit`` (both changed while it runs)."""

    def __init__(self, bootstrap: str, topic: str, lines: list[str], limit: int, rate: float) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.bootstrap, self.topic, self.lines = bootstrap, topic, lines
        self.limit, self.rate = limit, rate
        self.position = 0
        self.failed = 0
        self.stalls = 0  # sends refused for want of metadata (broker down), retried
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        from kafka.errors import KafkaTimeoutError

        producer = make_producer(self.bootstrap)
        try:
            while self.position < len(self.lines) and not self.stopping.is_set():
                end = min(self.limit, len(self.lines))
                if self.position >= end:
                    time.sleep(0.1)
                    continue
                chunk_end = min(end, self.position + max(10, int(self.rate / 4)))
                started = time.monotonic()
                futures = []
                while self.position < chunk_end and not self.stopping.is_set():
                    line = self.lines[self.position].encode()
                    try:  # keyed by customer, as `metering produce` does
                        futures.append(producer.send(self.topic, key=record_key(line, None), value=line))
                    except KafkaTimeoutError:  # no metadata while the broker is down: this line was not sent
                        self.stalls += 1
                        continue
                    self.position += 1
                producer.flush()
                self.failed += sum(1 for future in futures if future.failed())
                time.sleep(max(0.0, len(futures) / self.rate - (time.monotonic() - started)))
        except BaseException as exc:  # reported by the soak
            self.error = exc
        finally:
            producer.close()

    def wait_for(self, position: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.position < position:
            assert self.error is None, f"the producer failed: {self.error!r}"
            assert self.is_alive(), "the producer thread ended early"
            assert time.monotonic() < deadline, f"the producer did not reach line {position} (at {self.position})"
            time.sleep(0.2)


class Soak:
    """One soak run (see the module's docstring)."""

    def __init__(
        self,
        tmp_path: Path,
        stack: Any,
        stack_settings: StackSettings,
        *,
        seed: int,
        events: int,
        name: str = "soak",
        pipeline: dict[str, str] | None = None,
        kafka: dict[str, str] | None = None,
    ) -> None:
        self.tmp_path, self.stack, self.settings = tmp_path, stack, stack_settings
        self.seed, self.name = seed, name
        self.run_id = uuid.uuid4().hex[:8]
        self.started = time.monotonic()
        self.env = {**os.environ, "METERING__STACK__HOME": str(stack_settings.home)}
        self.cluster_args = ["--cluster", stack_settings.flink_rest_url]
        document = demo_document(self.run_id, stack_settings.bootstrap_servers, tmp_path / "chdb")
        # Heartbeats off while events stream: they carry the wall clock, months past these events
        # (every period would be final at once). One heartbeat at the end finalizes everything.
        # No source idleness and no watermark alignment: with heartbeats off, a source idle for
        # `idle_timeout` then moved by the final heartbeat emitted finals without their last on-time
        # window steps (those events came as corrections): a bug of its own, apart from the kills
        # (docs/operations.md, "Known limits"). Alignment without idleness would stall at the end of
        # the events. Neither changes which events are finals and which corrections here.
        settings = {
            "checkpoint_interval": "2s",
            "provisional_interval": "5s",
            "heartbeat_interval": "0s",
            "idle_timeout": "10m",
            "alignment_max_drift": "0s",
        }
        document["pipeline"].update({**settings, **(pipeline or {})})
        document["kafka"].update(kafka or {})
        self.config_path = tmp_path / "metering.yaml"
        self.config_path.write_text(yaml.safe_dump(document))
        self.config: Config = load_config(self.config_path, env={})
        self.job_name = f"{name}-{self.run_id}"
        self.loader_group = f"{name}-{self.run_id}-loader"  # its own: a killed member would hold up a shared group
        self.checkpoints = stack_settings.checkpoint_dir / self.config.kafka.consumer_group
        events_file = tmp_path / "events.jsonl"
        generate(events_file, events, seed=seed)
        self.events_file = events_file
        self.expected: Expected = recompute(events_file, self.config)
        assert not self.expected.undecided, self.expected.undecided[:5]
        self.lines = events_file.read_text().splitlines()
        # The tail: from the first event of a long-final period on (see the module's docstring).
        self.tail_start = next((i for i, line in enumerate(self.lines) if "-late-" in line), len(self.lines))
        self.report = SoakReport(seed=seed, events=events, lines=len(self.lines))
        self.job_id = ""
        self.loader: subprocess.Popen[bytes] | None = None
        self.loader_progress: Path | None = None
        self.streamer: Streamer | None = None
        self.paused_pid: int | None = None
        ensure_topics(self.config)
        run(self.env, "migrate", "--config", str(self.config_path), timeout=120)

    # --- the job ---------------------------------------------------------------------------------
    def submit(self, *, from_latest: bool = False) -> str:
        args = ["job", "submit", *self.cluster_args, "--config", str(self.config_path), "--job-name", self.job_name]
        answer = json.loads(run(self.env, *args, *(["--from-latest-checkpoint"] if from_latest else []), "--format", "json"))
        self.job_id = str(answer["job_id"])
        self.report.job_submissions += 1
        log(f"job {self.job_id} submitted" + (f", restored from {answer.get('restored_from')}" if from_latest else ""))
        return self.job_id

    def job_state(self) -> str:
        try:
            return str(self.stack.flink.rest(f"/jobs/{self.job_id}").get("state"))
        except OSError:
            return "UNREACHABLE"

    def completed_checkpoints(self) -> int:
        try:
            return int(self.stack.flink.rest(f"/jobs/{self.job_id}/checkpoints")["counts"]["completed"])
        except (OSError, KeyError, ValueError):
            return -1

    def restarts(self) -> int:
        rows = self.stack.flink.rest(f"/jobs/{self.job_id}/metrics?get=numRestarts")
        return int(float(rows[0]["value"])) if rows else 0

    def wait_job_healthy(self, completed_before: int, timeout_s: float = 240) -> list[str]:
        """Until the job runs and completed a checkpoint after ``completed_before``; resumes a job that failed for good."""
        notes = []
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_state()
            if state == "FAILED":
                notes.append(f"job {self.job_id} FAILED (restarts exhausted): resumed from the latest checkpoint")
                log(notes[-1])
                self.report.resumed_after_failure += 1
                self.submit(from_latest=True)
                completed_before = 0
            elif state == "RUNNING" and self.completed_checkpoints() > completed_before:
                return notes
            assert time.monotonic() < deadline, f"no recovery within {timeout_s:.0f}s (state {state}) [seed {self.seed}]"
            time.sleep(0.5)

    def offsets(self) -> tuple[dict[int, int], dict[int, int]]:
        """The events topic's end offsets and the job's committed offsets (committed at its checkpoints), per partition."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=self.config.kafka.consumer_group)
        try:
            topic = self.config.kafka.topics.events
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            ends = {tp.partition: int(end) for tp, end in consumer.end_offsets(partitions).items()}
            return ends, {tp.partition: int(consumer.committed(tp) or 0) for tp in partitions}
        finally:
            consumer.close()

    def wait_consumed(self, ends: dict[int, int], timeout_s: float = 180) -> None:
        """Until the job's committed offsets reach ``ends``: it reads again, not only checkpoints."""
        deadline = time.monotonic() + timeout_s
        while True:
            committed = self.offsets()[1]
            behind = {p: (committed.get(p, 0), end) for p, end in ends.items() if committed.get(p, 0) < end}
            if not behind:
                return
            assert time.monotonic() < deadline, f"the job stopped reading: (committed, end) {behind} [seed {self.seed}]"
            time.sleep(1)

    def checkpoint_in_progress(self) -> str | None:
        folder = self.checkpoints / self.job_id
        for chk in folder.glob("chk-*"):
            if not (chk / "_metadata").exists():
                return chk.name
        return None

    # --- the loader ------------------------------------------------------------------------------
    def start_loader(self) -> None:
        self.report.loader_starts += 1
        self.loader_progress = self.tmp_path / f"loader-{self.report.loader_starts}.progress"
        self.loader_progress.touch()
        err = (self.tmp_path / f"loader-{self.report.loader_starts}.err").open("wb")
        command = [sys.executable, "-m", "tests.e2e.loader_probe", str(self.loader_progress), "--"]
        self.loader = subprocess.Popen(
            [*command, "--config", str(self.config_path), "--group", self.loader_group],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        err.close()

    def loader_lines(self) -> list[str]:
        assert self.loader_progress is not None
        return self.loader_progress.read_text().splitlines()

    def wait_loader_commits(self, after: int = 0, timeout_s: float = 120) -> None:
        """Until the running loader has committed a batch (its progress file has a ``commit`` past line ``after``)."""
        deadline = time.monotonic() + timeout_s
        while "commit" not in [line.split()[-1] for line in self.loader_lines()[after:]]:
            assert self.streamer is None or self.streamer.error is None, f"the producer failed: {self.streamer.error!r}"
            assert self.loader is not None and self.loader.poll() is None, self.loader_failure("the loader exited")
            assert time.monotonic() < deadline, self.loader_failure("the loader committed nothing")
            time.sleep(0.2)

    def loader_failure(self, what: str) -> str:
        err = self.tmp_path / f"loader-{self.report.loader_starts}.err"
        return f"{what} [seed {self.seed}]: {err.read_text()[-3000:] if err.exists() else ''}"

    def kill_loader(self) -> None:
        assert self.loader is not None
        os.kill(self.loader.pid, signal.SIGKILL)
        self.loader.wait()

    # --- faults ----------------------------------------------------------------------------------
    def wait_for_moment(self, fault: Fault, timeout_s: float = 60) -> str:
        time.sleep(fault.delay_s)
        deadline = time.monotonic() + timeout_s
        if fault.moment == "checkpoint":
            while time.monotonic() < deadline:
                found = self.checkpoint_in_progress()
                if found:
                    return f"{found} in progress"
                time.sleep(0.005)
            return "no checkpoint in progress seen (killed anyway)"
        if fault.moment == "insert":
            seen = len(self.loader_lines())
            while time.monotonic() < deadline:
                lines = self.loader_lines()
                for line in lines[seen:]:
                    parts = line.split()
                    if parts[1] == "insert" and int(parts[4]) >= fault.insert_index:
                        return line
                seen = len(lines)
                time.sleep(0.002)
            return "no insert seen (killed anyway)"
        return f"after {fault.delay_s} s"

    def apply(self, fault: Fault) -> FaultRecord:
        record = FaultRecord(fault)
        completed = self.completed_checkpoints()
        ends = self.offsets()[0]
        if fault.kind == "loader" and self.streamer is not None:  # records to insert, for an insert to be killed in
            self.streamer.limit = max(self.streamer.limit, self.streamer.position + 200)
        record.hit = self.wait_for_moment(fault)
        record.at_s = time.monotonic() - self.started
        flink, kafka = self.stack.flink, self.stack.kafka
        position = self.streamer.position if self.streamer else 0
        log(f"fault {fault.number}: {fault.kind} ({fault.moment}: {record.hit}); {position} lines produced")
        began = time.monotonic()
        if fault.kind == "taskmanager":
            if fault.pause_s:
                self.pause(flink.taskmanager.pid(), fault.pause_s)
            else:
                flink.taskmanager.kill()
                flink.start_taskmanager()
            record.notes += self.wait_job_healthy(max(completed, self.completed_checkpoints()))
        elif fault.kind == "jobmanager":
            flink.jobmanager.kill()
            flink.start()  # what `metering stack up` does: start what is not running, wait for a TaskManager
            record.notes.append(f"JobManager up again after {time.monotonic() - began:.1f}s")
            if self.job_state() in ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"):
                record.notes.append("the new JobManager still knows the job (HA?)")
            else:
                self.submit(from_latest=True)
            record.notes += self.wait_job_healthy(0)
        elif fault.kind == "broker":
            kafka.process.kill()
            kafka.start()
            restarted = time.time() * 1000
            record.notes += self.wait_job_healthy(self.completed_checkpoints())
            while self.latest_ack_ms() < restarted:
                record.notes += self.wait_job_healthy(self.completed_checkpoints())
            if self.streamer is not None:  # records to load, for the loader to show it rode the outage out
                self.streamer.limit = max(self.streamer.limit, self.streamer.position + 200)
            self.wait_loader_commits(after=len(self.loader_lines()))
        elif fault.kind == "loader":
            self.kill_loader()
            if self.streamer is not None:  # records to load, for the new loader to commit
                self.streamer.limit = max(self.streamer.limit, self.streamer.position + 200)
            self.start_loader()
            self.wait_loader_commits()
        else:
            raise AssertionError(fault.kind)
        if fault.kind != "loader":
            self.wait_consumed(ends)
        assert fault.kind == "loader" or self.loader is None or self.loader.poll() is None, self.loader_failure(
            f"the loader exited during fault {fault.number} ({fault.kind})"
        )
        record.recovery_s = time.monotonic() - began
        self.report.kills[fault.kind if not fault.pause_s else f"pause-{fault.kind}"] += 1
        self.report.records.append(record)
        log(f"fault {fault.number}: recovered in {record.recovery_s:.1f}s {record.notes or ''}")
        return record

    def pause(self, pid: int | None, seconds: float) -> None:
        assert pid is not None, "no process to pause"
        self.paused_pid = pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
            self.paused_pid = None

    def latest_ack_ms(self) -> float:
        latest = (self.stack.flink.rest(f"/jobs/{self.job_id}/checkpoints").get("latest") or {}).get("completed") or {}
        return float(latest.get("latest_ack_timestamp") or 0)

    # --- the run ---------------------------------------------------------------------------------
    def run(self, faults: list[Fault], *, fault_part: float = 0.8, seconds_per_fault: float = 40.0) -> SoakReport:
        """Stream, apply ``faults`` while the first ``fault_part`` of the on-time events streams, finish, compare."""
        log(f"seed {self.seed}: {self.report.events} events, {len(self.lines)} lines; schedule: {[asdict(f) for f in faults]}")
        fault_end = int(self.tail_start * fault_part)
        warm_up = fault_end // (2 * len(faults))  # some events before the first fault: a job and a loader with work
        self.streamer = Streamer(self.settings.bootstrap_servers, self.config.kafka.topics.events, self.lines, warm_up, 100.0)
        try:
            self.streamer.start()
            self.submit()
            self.wait_job_healthy(0)
            self.start_loader()
            self.wait_loader_commits()
            spent: list[float] = []
            for index, fault in enumerate(faults):
                # Each fault gets its share of the events, streamed over about as long as faults take.
                limit = fault_end * (index + 1) // len(faults)
                expected_s = sum(spent) / len(spent) if spent else seconds_per_fault
                self.streamer.rate = max(20.0, (limit - self.streamer.position) / expected_s)
                self.streamer.limit = limit
                began = time.monotonic()
                self.apply(fault)
                spent.append(time.monotonic() - began)
                assert self.streamer.error is None, f"the producer failed: {self.streamer.error!r}"
            self.finish(fault_end)
        except BaseException:
            self.keep_diagnostics()
            raise
        finally:
            self.cleanup()
        self.report.duration_s = time.monotonic() - self.started
        log(f"done: {json.dumps(self.report.summary())}")
        (self.artifacts() / "summary.json").write_text(json.dumps(self.report.summary(), indent=1))
        return self.report

    def finish(self, fault_end: int) -> None:
        assert self.streamer is not None
        streamer = self.streamer
        # The last on-time events, with no fault, then the tail (events of long-final periods).
        streamer.rate = 20_000.0
        streamer.limit = self.tail_start
        streamer.wait_for(self.tail_start, timeout_s=300)
        self.wait_consumed(self.offsets()[0], timeout_s=300)
        job_id, restarts = self.job_id, self.restarts()
        streamer.limit = len(self.lines)
        streamer.wait_for(len(self.lines), timeout_s=300)
        streamer.join(timeout=60)
        assert streamer.failed == 0, f"{streamer.failed} events were not delivered to Kafka [seed {self.seed}]"
        # One heartbeat (the wall clock, months past every event) finalizes every period, as `metering
        # load` would once the topic is quiet; right behind the last events, before the source goes
        # idle (a final once came out without the last on-time step after a quiet gap, which then
        # became a correction: seed 2701, 3 broker kills; docs/testing.md). Not `stop --drain`: it
        # needs a source that is never idle (FLINK-40499), and a long idle timeout stalls watermark
        # alignment at the end of the events.
        run(self.env, "heartbeat", "--once", "--config", str(self.config_path))
        self.wait_consumed(self.offsets()[0], timeout_s=300)
        assert (self.job_id, self.restarts()) == (job_id, restarts), (
            f"the job failed over while the tail was read (restarts {restarts} -> {self.restarts()}): events of "
            f"long-final periods may be judged without a watermark [seed {self.seed}]"
        )
        # The finals topic as read_committed readers see it: every final exactly once, before the loader's part.
        from tests.e2e.test_faults import finals_topic_problems

        deadline = time.monotonic() + 180
        while problems := finals_topic_problems(self.settings.bootstrap_servers, self.config, self.expected):
            missing_only = all(problem.startswith("missing") for problem in problems)
            assert missing_only and time.monotonic() < deadline, (
                f"{len(problems)} problems in the committed finals topic [seed {self.seed}]: {problems[:10]}"
            )
            time.sleep(2)
        stopped = json.loads(run(self.env, "job", "stop", self.job_id, "--savepoint", *self.cluster_args, "--format", "json"))
        assert stopped["state"] == "FINISHED", stopped
        # The continuous loader stops cleanly; one bounded run loads what is left.
        assert self.loader is not None and self.loader.poll() is None, self.loader_failure("the loader exited")
        self.loader.send_signal(signal.SIGTERM)
        self.loader.wait(timeout=60)
        run(self.env, "load", "--config", str(self.config_path), "--group", self.loader_group, "--until-idle", timeout=300)
        got = {}
        for what in ("finals", "corrections", "dead-letters", "health"):
            output = run(self.env, "query", what, "--config", str(self.config_path), "--format", "jsonl")
            got[what] = [json.loads(line) for line in output.splitlines()]
        (health,) = got["health"]
        comparison = compare(self.expected, got["finals"], got["corrections"], got["dead-letters"], health)
        self.report.checks = comparison.checks
        self.report.differences = sum(1 for _, ok, _ in comparison.checks if not ok)
        assert comparison.passed, f"[seed {self.seed}] {comparison.checks}"
        assert not health.get("quarantined"), health

    def artifacts(self) -> Path:
        folder = artifacts_dir() / f"{self.name}-{self.run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def keep_diagnostics(self) -> None:
        folder = self.artifacts()
        with contextlib.suppress(Exception):
            (folder / "summary.json").write_text(json.dumps(self.report.summary(), indent=1, default=str))
            shutil.copytree(self.stack.flink.log_dir, folder / "flink-logs", dirs_exist_ok=True)
            shutil.copy(self.stack.kafka.process.log_file, folder / "kafka.log")
            for path in self.tmp_path.glob("loader-*"):
                shutil.copy(path, folder / path.name)
        with contextlib.suppress(Exception):
            states = transaction_states(self.settings.bootstrap_servers, self.config.kafka.consumer_group)
            (folder / "transactions.json").write_text(json.dumps(states, indent=1))
        log(f"seed {self.seed}: diagnostics in {folder}")

    def cleanup(self) -> None:
        """Leave the shared test stack as it was: nothing paused, no job of ours running, no loader."""
        if self.paused_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.paused_pid, signal.SIGCONT)
        if self.streamer is not None:
            self.streamer.stopping.set()
        if self.loader is not None and self.loader.poll() is None:
            os.kill(self.loader.pid, signal.SIGKILL)
            self.loader.wait()
        with contextlib.suppress(Exception):
            self.stack.up()  # every component running again, whatever the last fault was
        with contextlib.suppress(Exception):
            if self.job_id and self.job_state() not in ("FINISHED", "CANCELED", "FAILED"):
                metering(self.env, "job", "cancel", self.job_id, *self.cluster_args)
