"""The kill -9 soak (tests/e2e/soak.py): SIGKILL the TaskManager, the JobManager, the Kafka broker and the
loader at seeded random moments while events stream, recover each as docs/operations.md says, and
compare every final, correction and dead letter with an independent recomputation: no difference.

The normal e2e run is CI-sized (5 kills, 20,000 events, a few minutes on 2 cores). The full soak is
the same test with more of both (docs/testing.md, "Fault tests")::

    METERING_SOAK_KILLS=24 METERING_SOAK_EVENTS=200000 pytest -m e2e tests/e2e/test_soak.py -k soak

``METERING_SOAK_SEED`` replays a schedule (``random``: a fresh one); the seed is printed first and
named in every failure.

Also here: a Kafka transaction that expires while the job is paused (SIGSTOP of the TaskManager
past ``kafka.transaction_timeout``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from infra.settings import StackSettings
from tests.e2e.soak import Fault, Soak, log, schedule

DEFAULT_SEED = 2701


def soak_seed() -> int:
    raw = os.environ.get("METERING_SOAK_SEED", "")
    if raw == "random":
        return random.SystemRandom().randrange(1, 10**6)
    return int(raw) if raw else DEFAULT_SEED


def test_kill_soak(tmp_path: Path, stack: Any, stack_settings: StackSettings) -> None:
    seed = soak_seed()
    kills = int(os.environ.get("METERING_SOAK_KILLS", "5"))
    events = int(os.environ.get("METERING_SOAK_EVENTS", "20000"))
    log(f"kill soak: seed {seed} (METERING_SOAK_SEED={seed} replays this schedule), {kills} kills, {events} events")
    faults = schedule(seed, kills)
    if os.environ.get("METERING_SOAK_FAULTS"):  # e.g. "broker,loader": only these kinds, in this order (to reproduce)
        kinds = os.environ["METERING_SOAK_FAULTS"].split(",")
        faults = [Fault(n, kind, "random", 3.0) for n, kind in enumerate(kinds, start=1)]
        kills = len(faults)
    report = Soak(tmp_path, stack, stack_settings, seed=seed, events=events).run(faults)
    assert sum(report.kills.values()) == kills
    assert report.differences == 0
    if kills >= len(("taskmanager", "jobmanager", "broker", "loader")) and not os.environ.get("METERING_SOAK_FAULTS"):
        assert set(report.kills) == {"taskmanager", "jobmanager", "broker", "loader"}


@pytest.mark.skipif(
    os.environ.get("METERING_SOAK_TXN_EXPIRY") != "1",
    reason="on demand (METERING_SOAK_TXN_EXPIRY=1): on a loaded 2-core machine the pause did not always expire a "
    "transaction, and the test then refuses to pass (docs/testing.md, 'Fault tests')",
)
def test_a_kafka_transaction_that_expires_while_the_job_is_paused(
    tmp_path: Path, stack: Any, stack_settings: StackSettings
) -> None:
    """SIGSTOP the TaskManager for longer than the sinks' transaction timeout (10 s here; the broker aborts
    expired transactions within another 10 s), then SIGCONT: the JobManager has declared it lost, the job
    restarts from its last checkpoint, and the aborted transactions' records are written again; nothing is
    lost or doubled."""
    soak = Soak(
        tmp_path,
        stack,
        stack_settings,
        seed=soak_seed(),
        events=8000,
        name="txn-expiry",
        kafka={"transaction_timeout": "10s"},
    )
    report = soak.run([Fault(1, "taskmanager", "random", delay_s=4.0, pause_s=35.0)], seconds_per_fault=60.0)
    assert report.kills == {"pause-taskmanager": 1}
    assert report.differences == 0
    # The fault happened: the broker rolled back open transactions of the job's sinks for their timeout.
    broker_log = stack.kafka.process.log_file.read_text(errors="replace")
    prefix = soak.config.kafka.consumer_group
    expired = [line for line in broker_log.splitlines() if f"transactionalId {prefix}-" in line and "due to timeout" in line]
    assert expired, "no transaction of the job expired: the pause was too short to test anything"
