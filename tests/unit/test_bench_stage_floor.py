"""The stage ladder's CPU accounting (bench/stage_floor.py): whose CPU lands in which column."""

from __future__ import annotations

import subprocess
import sys

from bench.stage_floor import CpuMeter, measured

BUSY = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def busy(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=seconds)])


def test_a_child_counts_as_flink_and_the_broker_only_as_broker() -> None:
    broker = busy(1.0)  # stands in for the broker: also a child here, and still kept apart
    meter = CpuMeter(broker.pid)
    try:
        with measured(meter) as result:
            job = busy(0.5)  # a job's process that starts and exits inside the measurement
            job.wait()
            broker.wait()
    finally:
        meter.close()
    measurement = result[0]
    # The job's 0.5 s (up to one 0.2 s sample lost at its exit) plus this process's little; the
    # broker's second would push it past 1.2.
    assert 0.3 <= measurement.flink_cpu_s < 1.0
    assert 0.7 <= measurement.broker_cpu_s <= 1.1
    assert measurement.wall_s >= 0.5
