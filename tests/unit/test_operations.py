"""`metering job` helpers: submission arguments, packaging, and the status summary from REST answers."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra.errors import StackError
from infra.settings import PROJECT_ROOT
from jobs.cluster.operations import (
    UDF_JAR_NAME,
    SubmitOptions,
    _root_exception,
    await_running,
    check_savepoint,
    deployment_checkpoint_dir,
    job_arguments,
    latest_checkpoint,
    package,
    render_jobs,
    render_status,
    summarize_status,
    web_url,
)

NOW = 1_800_000_000_000
JOB = {
    "jid": "a" * 32,
    "name": "metering",
    "state": "RUNNING",
    "start-time": NOW - 3_725_000,
    "duration": 3_725_000,
    "vertices": [
        {
            "id": "v1",
            "name": "Source: events[1] -> Calc[2] -> Correlate[3]",
            "parallelism": 2,
            "status": "RUNNING",
            "metrics": {"read-records": 0, "write-records": 1200},
        },
        {
            "id": "v2",
            "name": "finalize periods -> finals sink: Writer",
            "parallelism": 2,
            "status": "RUNNING",
            "metrics": {"read-records": 300, "write-records": 12},
        },
    ],
}
CHECKPOINTS = {
    "counts": {"completed": 40, "failed": 1, "in_progress": 0},
    "latest": {
        "completed": {
            "id": 41,
            "latest_ack_timestamp": NOW - 4_000,
            "checkpointed_size": 150_000,
            "state_size": 2_200_000,
            "end_to_end_duration": 85,
            "external_path": "file:/cp/chk-41",
        },
        "failed": {"failure_message": "Checkpoint expired before completing."},
        "restored": {"external_path": "file:/sp/savepoint-1", "is_savepoint": True},
    },
}
METRICS = {
    "ProcessTableFunction[6].meteringFirstSeen": 900.0,
    "ProcessTableFunction[6].meteringDuplicates": 100.0,
    "ProcessTableFunction[6].meteringConflicts": 4.0,
    "dead_letters_sink[28]__Writer.numRecordsIn": 7.0,
    "dead_letters_sink[28]__Committer.numRecordsIn": 3.0,  # not a dead letter count
    "GlobalWindowAggregate[18].numLateRecordsDropped": 0.0,
    "finalize_periods.meteringFinalsEmitted": 12.0,
    "finalize_periods.meteringCorrectionsEmitted": 2.0,
    "finalize_periods.meteringLateEvents": 5.0,
    "finalize_periods.meteringAggregateUpdates": 300.0,
    "finalize_periods.meteringProcessingErrors": 0.0,
    "finalize_periods.meteringReplayedCorrections": 0.0,
}


def status(**changes: object) -> dict[str, Any]:
    arguments: dict[str, object] = {
        "job": JOB,
        "checkpoints": CHECKPOINTS,
        "exceptions": {},
        "restarts": "1",
        "metrics": METRICS,
        "watermarks": {"finalize periods": [NOW - 90_000, NOW - 60_000]},
        "now_ms": NOW,
    }
    arguments.update(changes)
    return summarize_status(**arguments)  # type: ignore[arg-type]


def test_summary_reads_checkpoints_watermark_and_counters() -> None:
    summary = status()
    assert summary["uptime_s"] == 3725 and summary["restarts"] == 1
    last = summary["checkpoints"]["last_completed"]
    assert last == {
        "id": 41,
        "age_s": 4.0,
        "size_bytes": 150_000,
        "full_size_bytes": 2_200_000,
        "duration_ms": 85,
        "path": "file:/cp/chk-41",
        "savepoint": False,
    }
    assert summary["checkpoints"]["restored_from"] == "file:/sp/savepoint-1"
    assert summary["watermark"] == {"ms": NOW - 90_000, "lag_s": 90.0}  # the slowest subtask
    assert summary["pipeline"] == {
        "events_deduplicated_in": 1000,
        "duplicates_dropped": 100,
        "dead_letters": 7,
        "window_late_drops": 0,
        "finals_emitted": 12,
        "corrections_emitted": 2,
        "late_events": 5,
        "aggregate_updates": 300,
        "processing_errors": 0,
        "replayed_corrections": 0,
        "first_seen": 900,
        "duplicates": 100,
        "conflicts": 4,
    }


def test_status_of_a_job_built_before_dedups_own_counters() -> None:
    """Such a job has a ROW_NUMBER dedup operator: its records in and out give the same figures."""
    old = {k: v for k, v in METRICS.items() if not k.startswith("ProcessTableFunction")}
    old |= {"Deduplicate[9].numRecordsIn": 1000.0, "Deduplicate[9].numRecordsOut": 900.0}
    pipeline = status(metrics=old)["pipeline"]
    assert (pipeline["events_deduplicated_in"], pipeline["duplicates_dropped"], pipeline["conflicts"]) == (1000, 100, None)
    assert "duplicates dropped 100 (- with a different payload)" in render_status(status(metrics=old))


def test_rendered_status_names_everything_an_operator_asks_for() -> None:
    text = render_status(status())
    for expected in (
        "RUNNING",
        "uptime 1h 2m 5s",
        "restarts 1",
        "#41 completed 4s ago, 146.5 KiB (full state 2.1 MiB), took 85 ms",
        "restored     from file:/sp/savepoint-1",
        "Checkpoint expired",
        "lag 1m 30s behind now",
        "duplicates dropped 100 (4 with a different payload), dead letters 7",
        "corrections 2, finals 12",
        "Source: events[1] -> Calc[2] -> Correlate[3]",
    ):
        assert expected in text, expected
    assert "ALERT" not in text


def test_window_drops_raise_an_alert() -> None:
    text = render_status(status(metrics={**METRICS, "GlobalWindowAggregate[18].numLateRecordsDropped": 3.0}))
    assert "ALERT        3 rows dropped by the window as late" in text


def test_processing_errors_raise_an_alert() -> None:
    text = render_status(status(metrics={**METRICS, "finalize_periods.meteringProcessingErrors": 2.0}))
    assert "ALERT        finalization failed on 2 partial(s) or timer(s)" in text


def test_a_stale_watermark_gets_a_hint_and_a_normal_one_does_not() -> None:
    assert "hint" not in render_status(status())  # 90 s behind
    stale = render_status(status(watermarks={"finalize periods": [NOW - 600_000]}))
    assert "lag 10m 0s behind now" in stale and "is `metering load` running?" in stale


def test_a_job_without_metrics_or_watermark_still_renders() -> None:
    summary = status(metrics={}, watermarks={}, restarts=None, checkpoints={"counts": {}, "latest": {}})
    assert summary["pipeline"]["duplicates_dropped"] is None and summary["watermark"]["ms"] is None
    text = render_status(summary)
    assert "none completed yet" in text and "none yet (no event time seen)" in text


def test_failure_reason_prefers_the_unmapped_state_line() -> None:
    trace = "org.apache.flink.runtime.JobException: Recovery is suppressed\nCaused by: java.lang.IllegalStateException: boom"
    assert _root_exception({"exceptionHistory": {"entries": [{"stacktrace": trace}]}}) == (
        "Caused by: java.lang.IllegalStateException: boom"
    )
    unmapped = "IllegalStateException: Failed to rollback\nCaused by: Cannot map checkpoint/savepoint state for operator x"
    assert "Cannot map checkpoint/savepoint state" in (_root_exception({"root-exception": unmapped}) or "")
    assert _root_exception({}) is None


class RestartingRestore:
    """A job whose restore fails: RESTARTING with Flink's exception, until cancelled."""

    def __init__(self, trace: str) -> None:
        self.trace = trace
        self.cancelled: list[str] = []

    def job(self, job_id: str) -> dict[str, object]:
        return {"state": "CANCELED" if self.cancelled else "RESTARTING", "vertices": []}

    def get(self, path: str) -> dict[str, object]:
        return {"exceptionHistory": {"entries": [{"stacktrace": self.trace}]}}

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


@pytest.mark.parametrize(
    ("cause", "says"),
    [
        (
            "java.lang.IllegalStateException: Cannot map checkpoint/savepoint state for operator 1a2b",
            "submit with --rebuild instead of --from-savepoint",
        ),
        (  # seen: the duplicates aggregation's state after its distinct count moved into a Java function
            "org.apache.flink.util.StateMigrationException: For heap backends, the new state serializer (…TtlSerializer@1) "
            "must not be incompatible with the old state serializer (…TtlSerializer@2).",
            "submit this version with --rebuild",
        ),
    ],
)
def test_a_failed_restore_is_cancelled_and_explained(cause: str, says: str) -> None:
    rest = RestartingRestore(f"org.apache.flink.runtime.JobException: Recovery is suppressed\nCaused by: {cause}")
    with pytest.raises(StackError) as failed:
        await_running(rest, "f" * 32, timeout_s=5)  # type: ignore[arg-type]
    assert rest.cancelled == ["f" * 32]
    assert "cannot restore the savepoint" in str(failed.value) and says in (failed.value.hint or "")


def test_job_arguments_carry_every_option(tmp_path: Path) -> None:
    options = SubmitOptions(
        cluster_url="http://127.0.0.1:18081",
        config_path=tmp_path / "m.yaml",
        job_name="billing",
        parallelism=3,
        state_backend="rocksdb",
        checkpoint_dir="s3://b/cp",
        savepoint_dir="s3://b/sp",
        from_savepoint="s3://b/sp/savepoint-1",
        allow_non_restored_state=True,
        until_end=True,
    )
    args = job_arguments(options, tmp_path / "copy.yaml")
    assert args == [
        "--config",
        str(tmp_path / "copy.yaml"),
        "--job-name",
        "billing",
        "--parallelism",
        "3",
        "--state-backend",
        "rocksdb",
        "--checkpoint-dir",
        "s3://b/cp",
        "--savepoint-dir",
        "s3://b/sp",
        "--from-savepoint",
        "s3://b/sp/savepoint-1",
        "--allow-non-restored-state",
        "--until-end",
    ]
    minimal = job_arguments(SubmitOptions(cluster_url="http://x:1", config_path=tmp_path / "m.yaml"), tmp_path / "c.yaml")
    assert minimal == ["--config", str(tmp_path / "c.yaml"), "--job-name", "metering"]
    with_udfs = job_arguments(
        SubmitOptions(cluster_url="http://x:1", config_path=tmp_path / "m.yaml"), tmp_path / "c.yaml", tmp_path / "u.jar"
    )
    assert with_udfs[-2:] == ["--udf-jar", str(tmp_path / "u.jar")]


def test_package_ships_the_python_packages_and_the_config(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("meters: []\n")
    jar = tmp_path / "built.jar"
    jar.write_bytes(b"PK jar")
    archive = package(PROJECT_ROOT, config, tmp_path / "out", jar)
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"jobs/flink/metering_job.py", "jobs/flink/sql.py", "udfs/ledger.py", "schemas/usage_event.v1.json"} <= names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    assert (tmp_path / "out" / "metering.yaml").read_text() == "meters: []\n"
    assert (tmp_path / "out" / UDF_JAR_NAME).read_bytes() == b"PK jar"  # the job gets this copy (--udf-jar)


def test_a_missing_local_savepoint_is_refused_before_submission(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no savepoint at"):
        check_savepoint(str(tmp_path / "nope"))
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "_metadata").write_bytes(b"x")
    check_savepoint(f"file:{tmp_path / 'sp'}")
    check_savepoint("s3://bucket/savepoint-1")  # remote: Flink checks it


def test_links_and_job_list() -> None:
    assert web_url("http://h:8081/", "b" * 32) == f"http://h:8081/#/job/running/{'b' * 32}/overview"
    listing = render_jobs([{"jid": "c" * 32, "state": "RUNNING", "duration": 61_000, "name": "metering"}])
    assert "c" * 32 in listing and "1m 1s" in listing and "metering" in listing
    assert render_jobs([]) == "no jobs on this cluster"


def test_the_latest_checkpoint_is_the_newest_complete_one_of_any_job_of_the_deployment(tmp_path: Path) -> None:
    def checkpoint(job: str, number: int, written_at: float, metadata: bytes = b"meta") -> Path:
        folder = tmp_path / job / f"chk-{number}"
        folder.mkdir(parents=True)
        (folder / "_metadata").write_bytes(metadata)
        os.utime(folder / "_metadata", (written_at, written_at))
        return folder

    with pytest.raises(StackError, match="no retained checkpoint"):
        latest_checkpoint(str(tmp_path))
    checkpoint("a" * 32, 41, 1000)  # the job before the JobManager crash
    resumed = checkpoint("b" * 32, 3, 2000)  # a job resumed from it: numbers are not comparable across jobs
    checkpoint("b" * 32, 4, 3000, metadata=b"")  # cut short: never chosen
    (tmp_path / ("b" * 32) / "chk-5").mkdir()  # in progress: no _metadata yet
    (tmp_path / ("b" * 32) / "shared").mkdir()
    assert latest_checkpoint(str(tmp_path)) == resumed.as_uri()
    assert latest_checkpoint(tmp_path.as_uri()) == resumed.as_uri()
    with pytest.raises(StackError, match="only a local"):
        latest_checkpoint("s3://bucket/checkpoints/group")


def test_each_deployment_checkpoints_into_its_own_folder() -> None:
    assert deployment_checkpoint_dir("file:///data/checkpoints/", "metering-job") == "file:///data/checkpoints/metering-job"
    assert deployment_checkpoint_dir("s3://b/cp", "team a/prod") == "s3://b/cp/team_a_prod"
    assert deployment_checkpoint_dir("s3://b/cp", "..") == "s3://b/cp/_"
