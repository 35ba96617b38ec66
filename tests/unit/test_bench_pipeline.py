"""The live-shaped backlog of the capacity benchmark (bench/pipeline.py) is what its figures claim."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.cpu import java_descendant, thread_cpu
from bench.pipeline import (
    BENCH_JOB_NAME,
    JVM_PARTS,
    PROBE_PREFIX,
    CapacitySample,
    LiveRun,
    Pacer,
    capacity_rates,
    jvm_thread_group,
    latency_figures,
    live_shaped_lines,
    measure_live,
    newest_checkpoint_bytes,
)
from jobs.config import load_stack
from schemas.validate import validate_line

END = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_backlog_holds_the_requested_distinct_events_and_about_ten_percent_retries() -> None:
    lines = list(live_shaped_lines(20_000, customers=50, nominal_rate=1000, end=END))
    events = [json.loads(line) for line in lines]
    distinct = {(e["customer_id"], e["event_id"]) for e in events}
    assert len(distinct) == 20_000
    assert 0.08 < (len(lines) - 20_000) / 20_000 < 0.12
    assert len({e["customer_id"] for e in events}) == 50
    # A retry repeats its original byte for byte: the job counts it as a plain duplicate.
    first_seen: dict[tuple[str, str], bytes] = {}
    for line, event in zip(lines, events, strict=True):
        assert first_seen.setdefault((event["customer_id"], event["event_id"]), line) == line


def test_backlog_is_valid_and_spread_at_the_nominal_rate_ending_at_end() -> None:
    lines = list(live_shaped_lines(5_000, customers=10, nominal_rate=500, end=END))
    assert all(validate_line(line).ok for line in lines)
    stamps = [datetime.fromisoformat(json.loads(line)["timestamp"]) for line in lines]
    assert max(stamps) <= END
    assert END - min(stamps) == pytest.approx(timedelta(seconds=10), abs=timedelta(milliseconds=2))


def _step(at_s: float, visible: int) -> CapacitySample:
    # CPU grows one second per second in every part, so each part's µs per event is 1e6 / rate.
    return CapacitySample(at_s, visible, {"job": at_s, "idle": at_s})


def test_capacity_rates_are_measured_between_checkpoint_steps_before_the_final_one() -> None:
    # Visibility as the job's checkpoints commit it: flat, then a jump, every 10 s; the last jump
    # (to 1000) is the heartbeats' flush after the job has read everything, so the range ends at 800.
    samples = [_step(t, v) for t, v in [(5, 0), (10, 0), (11, 150), (20, 150), (21, 450), (31, 800), (40, 800), (41, 1000)]]
    rates = capacity_rates(samples, events=1000)
    assert rates["sustained_events_per_s"] == pytest.approx(650 / 20)
    assert rates["end_fraction"] == pytest.approx(0.8)
    # The split is the step nearest the middle of 150 → 800.
    assert rates["split_at_fraction"] == pytest.approx(0.45)
    assert rates["first_half_events_per_s"] == pytest.approx(300 / 10)
    assert rates["second_half_events_per_s"] == pytest.approx(350 / 10)
    assert rates["cpu_us_per_event_job"] == pytest.approx(20 / 650 * 1e6)


def test_jvm_threads_are_grouped_by_the_stage_their_kernel_name_starts_with() -> None:
    # Kernel names are the first 15 bytes of the Java thread names of a capacity run's JVM.
    assert jvm_thread_group("Source: events[") == "source"
    assert jvm_thread_group("Source Data Fet") == "source"
    assert jvm_thread_group("ProcessTableFun") == "dedup"
    assert jvm_thread_group("GroupWindowAggr") == "window"
    assert jvm_thread_group("finalize period") == "finalize"
    assert jvm_thread_group("AsyncOperation") == "checkpoint"
    assert jvm_thread_group("GC Thread#1") == "gc"
    assert jvm_thread_group("G1 Refine#0") == "gc"
    assert jvm_thread_group("C2 CompilerThre") == "jit"
    assert jvm_thread_group("rocksdb:low") == "rocksdb"
    assert jvm_thread_group("kafka-producer-") == "other"
    assert jvm_thread_group("OutputFlusher f") == "other"


def test_jvm_split_counts_each_threads_cpu_between_the_two_samples() -> None:
    before = CapacitySample(10, 100, {}, {1: ("ProcessTableFun", 5.0), 2: ("C2 CompilerThre", 3.0), 3: ("GC Thread#0", 1.0)})
    after = CapacitySample(
        20,
        1100,
        {},
        # Thread 2 (an idle compiler thread) ended; thread 4 started since and counts from zero;
        # thread 3's id was reused by a thread of another name, which counts from zero too.
        {1: ("ProcessTableFun", 7.0), 3: ("GC Thread#0", 1.5), 4: ("C1 CompilerThre", 0.25), 5: ("Thread-7", 0.1)},
    )
    split = before.jvm_us_per_event_to(after)
    assert set(split) == set(JVM_PARTS)
    assert split["dedup"] == pytest.approx(2.0 / 1000 * 1e6)
    assert split["gc"] == pytest.approx(0.5 / 1000 * 1e6)
    assert split["jit"] == pytest.approx(0.25 / 1000 * 1e6)
    assert split["other"] == pytest.approx(0.1 / 1000 * 1e6)
    assert split["source"] == 0.0
    renamed = CapacitySample(20, 1100, {}, {3: ("C2 CompilerThre", 0.5)})
    assert before.jvm_us_per_event_to(renamed)["jit"] == pytest.approx(0.5 / 1000 * 1e6)


def test_thread_cpu_reads_every_thread_of_a_live_process_and_nothing_of_a_gone_one() -> None:
    threads = thread_cpu(os.getpid())
    assert os.getpid() in threads  # the main thread's id is the process id
    assert all(seconds >= 0 for _, seconds in threads.values())
    assert thread_cpu(2**22 + 1) == {}  # above the kernel's pid limit: never a live process
    # A process tree without a JVM (the test run itself may have started Kafka or Flink below it).
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        assert java_descendant(child.pid) is None
    finally:
        child.kill()
        child.wait()


def test_capacity_rates_without_a_step_between_ten_percent_and_the_end_run_to_ninety_percent() -> None:
    # One checkpoint took the backlog from 15% to everything: the halves cannot be told apart.
    samples = [_step(10, 0), _step(11, 150), _step(21, 1000)]
    rates = capacity_rates(samples, events=1000)
    assert rates["sustained_events_per_s"] == pytest.approx(85)
    assert rates["end_fraction"] == 1.0
    assert math.isnan(rates["first_half_events_per_s"])
    assert math.isnan(rates["second_half_events_per_s"])


def test_newest_checkpoint_bytes_reads_the_last_checkpoint_and_the_shared_files(tmp_path: Path) -> None:
    settings = load_stack({"METERING__STACK__HOME": str(tmp_path)})
    jobs = settings.checkpoint_dir / BENCH_JOB_NAME
    old, new = jobs / "a", jobs / "b"
    for folder, sizes in (
        (old, {"chk-3/_metadata": 999}),
        (new, {"chk-9/_metadata": 10, "chk-10/_metadata": 7, "chk-10/x": 5, "shared/sst": 100}),
    ):
        for name, size in sizes.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"x" * size)
    os.utime(old, (1, 1))  # the older job's folder
    assert newest_checkpoint_bytes(settings) == {"checkpoint_own_bytes": 12.0, "checkpoint_shared_bytes": 100.0}


def test_newest_checkpoint_bytes_without_a_run_is_nan(tmp_path: Path) -> None:
    sizes = newest_checkpoint_bytes(load_stack({"METERING__STACK__HOME": str(tmp_path)}))
    assert all(math.isnan(value) for value in sizes.values())


def fake_pacer(rate: int, sent: list[tuple[str, int | None]]) -> Pacer:
    return Pacer(
        lambda customer, line, partition: sent.append((customer, partition)),
        rate,
        lambda n, customer, moment: json.dumps({"n": n, "customer_id": customer, "timestamp": moment.isoformat()}).encode(),
        lambda n: (f"c{n % 3}", n % 3),
        partitions=4,
        probe_every=10,
    )


def test_live_measurement_probes_only_after_ready_and_warm_up_and_waits_for_every_probe() -> None:
    sent: list[tuple[str, int | None]] = []
    pacer = fake_pacer(1000, sent)
    began = time.monotonic()

    def visible() -> dict[str, float]:  # each probe visible 0.2 s after it was sent
        return {c: t + 0.2 for c, t in pacer.sent_at.items() if time.time() >= t + 0.2}

    run = measure_live(
        pacer,
        ready=lambda: time.monotonic() - began > 0.3,
        visible=visible,
        failed=lambda: "",
        warmup_s=0.2,
        seconds=0.5,
        drain_s=5,
    )
    assert not run.error and 0.3 <= run.startup_s < 1
    probes = [customer for customer, _ in sent if customer.startswith(PROBE_PREFIX)]
    # Probes only in the probe phase: none among the first 0.5 s of traffic; every 10th event then.
    assert 40 <= len(probes) <= 60 and len(sent) > 900
    first = int(probes[0].removeprefix(PROBE_PREFIX))
    assert first >= 450 and all(int(p.removeprefix(PROBE_PREFIX)) % 10 == 0 for p in probes)
    # Probes are spread over the partitions; the run ended once every probe was visible.
    assert {partition for customer, partition in sent if customer.startswith(PROBE_PREFIX)} == {0, 1, 2, 3}
    assert set(run.seen) == set(run.sent_at) == set(probes)
    assert 900 <= run.sent_rate <= 1100
    figures = latency_figures(run)
    assert figures["probes_visible"] == figures["probes_sent"] == len(probes)
    assert figures["p50_s"] == figures["p99_s"] == pytest.approx(0.2)


def test_live_measurement_stops_by_itself_when_the_variant_fails_or_never_gets_ready() -> None:
    sent: list[tuple[str, int | None]] = []
    began = time.monotonic()
    run = measure_live(
        fake_pacer(100, sent),
        ready=lambda: False,
        visible=dict,
        failed=lambda: "",
        warmup_s=0,
        seconds=1,
        drain_s=1,
        startup_timeout_s=0.6,
    )
    assert run.error == "not ready after 1 s" and time.monotonic() - began < 3 and not run.sent_at
    run = measure_live(
        fake_pacer(100, sent), ready=lambda: True, visible=dict, failed=lambda: "exit [1]", warmup_s=0, seconds=1, drain_s=1
    )
    assert run.error == "start-up: exit [1]"


def test_latency_figures_count_a_probe_never_seen_as_infinitely_late() -> None:
    sent_at = {f"{PROBE_PREFIX}{n}": 600.0 + n for n in range(100)}  # sent during minute 10 (600-700 s)
    seen = {customer: at + 2.0 for customer, at in sent_at.items() if customer != f"{PROBE_PREFIX}99"}
    figures = latency_figures(LiveRun(1000, sent_at, seen, sent_rate=1000.0))
    assert figures["probes_sent"] == 100 and figures["probes_visible"] == 99
    assert figures["p50_s"] == figures["p95_s"] == 2.0
    assert figures["p99_s"] == figures["max_s"] == math.inf and figures["mean_s"] == 2.0
    # After the minute's end: sent at 600 + n (minute end 660 for n < 60, 720 after), seen 2 s later.
    all_seen = latency_figures(LiveRun(1000, sent_at, {c: t + 2.0 for c, t in sent_at.items()}))
    # The last probe before 660 s (n = 59) was visible 1 s after its minute ended; the rest before theirs did.
    assert all_seen["p99_past_minute_s"] == pytest.approx(1.0)


def test_caught_up_means_having_read_what_was_sent_a_few_seconds_ago() -> None:
    pacer = fake_pacer(100, [])
    pacer.began = time.monotonic() - 10.0
    assert 495 <= pacer.sent_by(5.0) <= 505
    assert pacer.sent_by(20.0) == 1  # before the traffic: at least one event read
