"""Running the metering job on a Flink session cluster: submit, list, status, savepoint, stop, cancel.

Submission goes through ``flink run -py`` (the CLI in the PyFlink wheel), not the REST API: the
REST API only runs jars whose main class builds the job *on the JobManager*, which would need the
project, its Python environment and the configuration file on that machine. ``flink run -py``
builds the job graph here, from the configuration given here, and uploads it with the packaged
Python modules (``-pyfs``) and the Kafka connector jar (``--jarfile``). Everything after
submission (list, status, savepoints, stop, cancel) uses the REST API, which any cluster exposes.

The summary functions (:func:`summarize_status`, :func:`render_status`, :func:`render_jobs`) are
pure: they turn REST answers into what `metering job status` prints.

Why one module: submit, status, savepoints, stop and their REST calls share one vocabulary of the
cluster; the rebuild plan is in upgrade.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from infra.errors import StackError
from infra.flink_memory import describe_rocksdb_memory, rocksdb_memory, rocksdb_memory_warning, smallest_slot
from infra.flink_rest import TERMINAL_STATES, FlinkRest
from jobs.flink.metering_job import Rebuild
from jobs.flink.metrics import METRICS

#: Packages shipped with a submission (the job's Python code: graph, UDF-side functions, config types).
PYTHON_PACKAGES = ("jobs", "udfs", "schemas", "clickhouse", "infra")
JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
#: Flink's message when savepoint state has no operator with the same uid in the new job.
UNMAPPED_STATE = "Cannot map checkpoint/savepoint state"
#: Flink's exception when an operator's saved state does not fit the new job's state types.
INCOMPATIBLE_STATE = "StateMigrationException"
#: A restore that cannot succeed, by Flink's words for it, and what to do instead.
RESTORE_FAILURE_HINTS = {
    UNMAPPED_STATE: "the savepoint holds state of an operator this job no longer has, so this change is not "
    "savepoint-compatible (docs/operations.md). Revert the change; after a project upgrade, submit with "
    "--rebuild instead of --from-savepoint (docs/operations.md, 'Upgrade by rebuilding state'); "
    "--allow-non-restored-state drops that state, only for state you know you can lose (a removed meter's)",
    INCOMPATIBLE_STATE: "an operator of this version keeps its state in another form than the savepoint holds it: "
    "this upgrade is not savepoint-compatible (docs/operations.md, 'Upgrade, rescale, move'). "
    "Resume with the version that took the savepoint, or submit this version with --rebuild instead of "
    "--from-savepoint (docs/operations.md, 'Upgrade by rebuilding state')",
}


@dataclass(frozen=True)
class SubmitOptions:
    """What `metering job submit` was asked for."""

    cluster_url: str
    #: None: the built-in defaults (the job on the cluster applies its METERING__* variables)
    config_path: Path | None
    job_name: str = "metering"
    parallelism: int | None = None
    state_backend: str | None = None
    checkpoint_dir: str | None = None
    savepoint_dir: str | None = None
    from_savepoint: str | None = None
    allow_non_restored_state: bool = False
    until_end: bool = False
    rebuild: Rebuild | None = None
    python_executable: str | None = None


@dataclass(frozen=True)
class Submission:
    job_id: str
    web_url: str
    package_dir: Path


def web_url(cluster_url: str, job_id: str) -> str:
    """The job's page in the Flink web UI."""
    return f"{cluster_url.rstrip('/')}/#/job/running/{job_id}/overview"


#: The copy of the job's Java functions (udfs/jvm) in a submission folder, next to metering.yaml.
UDF_JAR_NAME = "metering-udfs.jar"


#: The configuration a job submitted without --config gets: an empty document, the built-in defaults.
BUILT_IN_DEFAULTS = "# no --config: the built-in defaults (plus METERING__* variables)\n"


def package(project_root: Path, config_path: Path | None, target: Path, udf_jar: Path | None = None) -> Path:
    """Zip the job's Python packages into ``target``, with copies of its configuration and UDF jar; returns the zip.

    ``config_path`` None: the built-in defaults.
    """
    target.mkdir(parents=True, exist_ok=True)
    if config_path is None:
        (target / "metering.yaml").write_text(BUILT_IN_DEFAULTS)
    else:
        shutil.copyfile(config_path, target / "metering.yaml")
    if udf_jar is not None:
        shutil.copyfile(udf_jar, target / UDF_JAR_NAME)
    archive = target / "metering-python.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name in PYTHON_PACKAGES:
            for path in sorted((project_root / name).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix in {".py", ".sql", ".json"}:
                    zipped.write(path, path.relative_to(project_root).as_posix())
    return archive


def job_arguments(options: SubmitOptions, config_copy: Path, udf_jar_copy: Path | None = None) -> list[str]:
    """Arguments for ``jobs/flink/metering_job.py`` (after ``--``)."""
    args = ["--config", str(config_copy), "--job-name", options.job_name]
    if udf_jar_copy is not None:
        args += ["--udf-jar", str(udf_jar_copy)]
    for flag, value in (
        ("--parallelism", options.parallelism),
        ("--state-backend", options.state_backend),
        ("--checkpoint-dir", options.checkpoint_dir),
        ("--savepoint-dir", options.savepoint_dir),
        ("--from-savepoint", options.from_savepoint),
    ):
        if value is not None:
            args += [flag, str(value)]
    if options.allow_non_restored_state:
        args.append("--allow-non-restored-state")
    if options.until_end:
        args.append("--until-end")
    if options.rebuild is not None:
        args += ["--rebuild-start", Rebuild.offsets_text(options.rebuild.start_offsets)]
        args += ["--rebuild-until", Rebuild.offsets_text(options.rebuild.replayed_until)]
        if options.rebuild.finalized_through_ms is not None:
            args += ["--finalized-through", str(options.rebuild.finalized_through_ms)]
    return args


def check_savepoint(path: str) -> None:
    """A local savepoint must exist and hold ``_metadata`` (remote URIs are checked by Flink)."""
    parsed = urlparse(path)
    if parsed.scheme not in ("", "file"):
        return
    folder = Path(parsed.path)
    if not (folder / "_metadata").is_file() and not (folder.is_file() and folder.name == "_metadata"):
        raise StackError(
            f"no savepoint at {path} (expected a folder holding _metadata)",
            hint="use the path printed by `metering job stop ID --savepoint` or `metering job savepoint ID`",
        )


#: A checkpoint folder Flink writes under ``<checkpoint dir>/<job id>/``; complete once it holds ``_metadata``.
CHECKPOINT_FOLDER = re.compile(r"chk-(\d+)")


def deployment_checkpoint_dir(base: str, consumer_group: str) -> str:
    """The checkpoint folder of one deployment: ``<base>/<consumer group>`` (the group names the deployment).

    Flink keeps each job's checkpoints under ``<folder>/<job id>/chk-<n>``; a job resubmitted after a
    JobManager crash gets a new id, so the deployment's folder is where its previous runs' retained
    checkpoints are found (:func:`latest_checkpoint`). Characters a path should not hold become ``_``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", consumer_group).strip(".") or "_"
    return f"{base.rstrip('/')}/{safe}"


def latest_checkpoint(checkpoint_dir: str) -> str:
    """The newest retained checkpoint of a deployment: the ``chk-<n>`` folder under ``<checkpoint_dir>/<job id>/``
    whose ``_metadata`` was written last (checkpoint numbers restart at 1 in a fresh job, so time decides).

    Only folders with a non-empty ``_metadata`` count: Flink writes it last, when the checkpoint
    completes (atomically on file systems with a recoverable writer, the local one included), so a
    checkpoint cut short by a crash is never chosen. Local (``file:``) folders only: a remote store
    cannot be listed from here (pass its path with ``--from-savepoint``).
    """
    parsed = urlparse(checkpoint_dir)
    if parsed.scheme not in ("", "file"):
        raise StackError(
            f"cannot look for checkpoints in {checkpoint_dir}: only a local (file:) checkpoint folder can be listed here",
            hint="find the newest chk-<n> holding _metadata in that store and pass it with --from-savepoint",
        )
    folder = Path(parsed.path)
    found: list[tuple[float, int, Path]] = []
    for metadata in folder.glob("*/chk-*/_metadata"):
        matched = CHECKPOINT_FOLDER.fullmatch(metadata.parent.name)
        try:
            stat = metadata.stat()
        except OSError:  # removed by Flink while we looked (a subsumed checkpoint)
            continue
        if matched and stat.st_size > 0:
            found.append((stat.st_mtime, int(matched.group(1)), metadata.parent))
    if not found:
        raise StackError(
            f"no retained checkpoint under {folder} (expected <job id>/chk-<n>/_metadata)",
            hint="is this the checkpoint folder the job ran with (--checkpoint-dir, or the cluster's "
            "execution.checkpointing.dir plus the consumer group)? A savepoint path goes to --from-savepoint",
        )
    return max(found)[2].as_uri()


def effective_state_backend(requested: str | None, config: Mapping[str, str]) -> str:
    """The state backend the job will run on: ``--state-backend``, else the cluster's (Flink's default: hashmap)."""
    configured = config.get("state.backend.type", config.get("state.backend", "hashmap")).strip().lower()
    return requested or ("rocksdb" if "rocksdb" in configured else configured)


def rocksdb_memory_report(rest: FlinkRest, requested_backend: str | None) -> dict[str, Any] | None:
    """What RocksDB gets per slot on the cluster, and a warning when too little; None when the job runs on the heap.

    Short of memory RocksDB slows down rather than failing (docs/operations.md, "State backend"),
    so `metering job submit` says before it uploads anything.
    """
    config = rest.cluster_config()
    if effective_state_backend(requested_backend, config) != "rocksdb":
        return None
    memories = rocksdb_memory(rest.get("/taskmanagers"), config)
    least = smallest_slot(memories)
    warning = rocksdb_memory_warning(memories)
    return {
        "rocksdb_memory": describe_rocksdb_memory(memories),
        "rocksdb_memory_per_slot": least.rocksdb_per_slot if least else None,
        "warnings": [warning] if warning else [],
    }


def submit(
    options: SubmitOptions,
    *,
    project_root: Path,
    flink_env: dict[str, str],
    flink_bin: Path,
    jar: Path,
    udf_jar: Path,
    work: Path,
) -> Submission:
    """Package and submit the job (detached); returns once Flink accepted it.

    ``jar`` is the Kafka connector; ``udf_jar`` the job's Java functions, copied into the
    submission folder and handed to the job (the Python zip holds no Java sources to build it from).
    """
    rest = FlinkRest(options.cluster_url)
    rest.get("/overview")  # reachable, or a clear error before anything is packaged
    if options.from_savepoint:
        check_savepoint(options.from_savepoint)
    package_dir = work / f"{options.job_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    archive = package(project_root, options.config_path, package_dir, udf_jar)
    address = urlparse(options.cluster_url)
    command = ["bash", str(flink_bin), "run", "-d", "-m", f"{address.hostname}:{address.port or 8081}"]
    command += ["-py", str(project_root / "jobs" / "flink" / "metering_job.py"), "-pyfs", str(archive), "--jarfile", str(jar)]
    if options.python_executable:
        command += ["-pyexec", options.python_executable]
    command += ["--", *job_arguments(options, package_dir / "metering.yaml", package_dir / UDF_JAR_NAME)]
    result = subprocess.run(command, env=flink_env, capture_output=True, text=True, timeout=600, check=False)
    (package_dir / "submit.log").write_text(f"$ {' '.join(command)}\n\n{result.stdout}\n{result.stderr}")
    found = JOB_ID.search(result.stdout + result.stderr)
    if result.returncode != 0 or found is None:
        raise StackError(
            f"flink run failed (exit {result.returncode}): {_cause(result.stdout + result.stderr)}",
            log=package_dir / "submit.log",
        )
    return Submission(found.group(1), web_url(options.cluster_url, found.group(1)), package_dir)


def _cause(output: str) -> str:
    """The most specific line of a Java/Python error dump."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("Caused by:") or "Error" in line.split(":")[0]]
    return (causes[-1] if causes else lines[-1] if lines else "no output")[:500]


def await_running(rest: FlinkRest, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    """Wait until every task of the job runs (or it finished); explain a failed restore.

    A savepoint restore happens when the tasks deploy, so an incompatible savepoint shows here:
    the job fails or restarts with Flink's "Cannot map checkpoint/savepoint state" error.
    """
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = rest.job(job_id)
        state = job.get("state")
        tasks = [v.get("status") for v in job.get("vertices", [])]
        if state == "FINISHED" or (state == "RUNNING" and tasks and all(t in ("RUNNING", "FINISHED") for t in tasks)):
            return job
        failure = _root_exception(rest.get(f"/jobs/{job_id}/exceptions?maxExceptions=1"))
        restore_hint = next((hint for words, hint in RESTORE_FAILURE_HINTS.items() if failure and words in failure), None)
        if failure and (state in TERMINAL_STATES or state == "RESTARTING" or restore_hint):
            if state not in TERMINAL_STATES:
                rest.cancel(job_id)
            if restore_hint:
                raise StackError(f"job {job_id} cannot restore the savepoint: {failure}", hint=restore_hint)
            raise StackError(f"job {job_id} failed while starting ({state}): {failure}", hint="see `metering job status`")
        time.sleep(1)
    raise StackError(f"job {job_id} was not running after {timeout_s:.0f}s (state {job.get('state')})")


def _root_exception(exceptions: dict[str, Any]) -> str | None:
    entries = exceptions.get("exceptionHistory", {}).get("entries", [])
    text = entries[0].get("stacktrace") if entries else exceptions.get("root-exception")
    if not text:
        return None
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in lines:
        if UNMAPPED_STATE in line:
            return line
    causes = [line for line in lines if line.startswith("Caused by:")]
    return (causes[-1] if causes else lines[0])[:500]


# --- status --------------------------------------------------------------------------------------

#: Operator metrics read for `status`: (operator name fragment, metric id suffix, label). Metric
#: ids look like ``Deduplicate[9].numRecordsIn`` and ``dead_letters_sink[28]__Writer.numRecordsIn``.
OPERATOR_METRICS = (
    # Jobs built before dedup counted its own events (DEDUP_METRICS): a ROW_NUMBER dedup operator.
    ("Deduplicate[", ".numRecordsIn", "dedup_in"),
    ("Deduplicate[", ".numRecordsOut", "dedup_out"),
    ("dead_letters_sink[", "__Writer.numRecordsIn", "dead_letters"),
    # The minute pre-aggregation (a group window); never expected above 0, an ALERT if it is.
    ("GroupWindowAggregate[", ".numLateRecordsDropped", "window_late_drops"),
    # Jobs built before the group window (a window TVF, which could drop rows after a restore).
    ("GlobalWindowAggregate[", ".numLateRecordsDropped", "window_late_drops"),
)


def collect_status(rest: FlinkRest, job_id: str, now_ms: int | None = None) -> dict[str, Any]:
    """Everything `metering job status` shows, gathered from the REST API."""
    job = rest.job(job_id)
    running = job.get("state") == "RUNNING"
    checkpoints = rest.get(f"/jobs/{job_id}/checkpoints")
    exceptions = rest.get(f"/jobs/{job_id}/exceptions?maxExceptions=1")
    restarts = rest.job_metrics(job_id, ["numRestarts"]).get("numRestarts") if running else None
    metrics: dict[str, float] = {}
    watermarks: dict[str, list[int]] = {}
    if running:
        for vertex in job.get("vertices", []):
            available = rest.subtask_metrics(job_id, vertex["id"])
            wanted = [m for m in available if _metric_label(m) is not None]
            metrics.update(rest.subtask_metrics(job_id, vertex["id"], wanted))
            if "finalize" in vertex["name"]:
                watermarks[vertex["name"]] = rest.watermarks(job_id, vertex["id"])
    return summarize_status(job, checkpoints, exceptions, restarts, metrics, watermarks, now_ms or int(time.time() * 1000))


def _metric_label(metric_id: str) -> str | None:
    """What a metric id counts for `status`: a label of OPERATOR_METRICS, a name of METRICS, or None."""
    name = metric_id.rsplit(".", 1)[-1]
    if name in METRICS:
        return name
    return next(
        (label for fragment, suffix, label in OPERATOR_METRICS if fragment in metric_id and metric_id.endswith(suffix)), None
    )


def summarize_status(
    job: dict[str, Any],
    checkpoints: dict[str, Any],
    exceptions: dict[str, Any],
    restarts: str | None,
    metrics: dict[str, float],
    watermarks: dict[str, list[int]],
    now_ms: int,
) -> dict[str, Any]:
    """Condense the REST answers into the status document (pure; see :func:`render_status`)."""
    latest = (checkpoints.get("latest") or {}).get("completed") or None
    failed = (checkpoints.get("latest") or {}).get("failed") or None
    restored = (checkpoints.get("latest") or {}).get("restored") or None
    counts = checkpoints.get("counts", {})
    last_checkpoint = None
    if latest:
        last_checkpoint = {
            "id": latest.get("id"),
            "age_s": round((now_ms - int(latest.get("latest_ack_timestamp", now_ms))) / 1000, 1),
            "size_bytes": latest.get("checkpointed_size", latest.get("state_size")),
            "full_size_bytes": latest.get("state_size"),
            "duration_ms": latest.get("end_to_end_duration"),
            "path": latest.get("external_path"),
            "savepoint": bool(latest.get("is_savepoint")),
        }

    by_label: dict[str, float] = {}
    for metric_id, value in metrics.items():
        label = _metric_label(metric_id)
        if label is not None:
            by_label[label] = by_label.get(label, 0.0) + value

    def metric(label: str) -> float | None:
        return by_label.get(label)

    counters: dict[str, Any] = {}
    for name in METRICS:
        counters[name] = int(by_label[name]) if name in by_label else None
    dedup_in, dedup_out, dead = metric("dedup_in"), metric("dedup_out"), metric("dead_letters")
    first_seen, duplicates = metric("meteringFirstSeen"), metric("meteringDuplicates")
    if first_seen is not None and duplicates is not None:  # dedup's own counters (older jobs: its operator's)
        dedup_in, dedup_out = first_seen + duplicates, first_seen
    window_drops = metric("window_late_drops")
    marks = [w for values in watermarks.values() for w in values]
    watermark = min(marks) if marks else None
    has_watermark = watermark is not None and watermark > 0
    operators = [
        {
            "name": _short(v.get("name", "")),
            "parallelism": v.get("parallelism"),
            "status": v.get("status"),
            "records_in": v.get("metrics", {}).get("read-records"),
            "records_out": v.get("metrics", {}).get("write-records"),
            "backpressured_ms_per_s": v.get("metrics", {}).get("accumulated-backpressured-time"),
        }
        for v in job.get("vertices", [])
    ]
    start = job.get("start-time", 0)
    return {
        "job_id": job.get("jid"),
        "name": job.get("name"),
        "state": job.get("state"),
        "uptime_s": round(job.get("duration", max(0, now_ms - start)) / 1000),
        "restarts": int(float(restarts)) if restarts is not None else None,
        "checkpoints": {
            "completed": counts.get("completed"),
            "failed": counts.get("failed"),
            "in_progress": counts.get("in_progress"),
            "last_completed": last_checkpoint,
            "last_failure": (failed or {}).get("failure_message"),
            "restored_from": (restored or {}).get("external_path"),
        },
        "watermark": {
            "ms": watermark if has_watermark else None,
            "lag_s": round((now_ms - watermark) / 1000, 1) if has_watermark and watermark is not None else None,
        },
        "pipeline": {
            "events_deduplicated_in": int(dedup_in) if dedup_in is not None else None,
            "duplicates_dropped": int(dedup_in - dedup_out) if dedup_in is not None and dedup_out is not None else None,
            "dead_letters": int(dead) if dead is not None else None,
            # Rows the pre-aggregation window dropped as late: must stay 0 (docs/operations.md).
            "window_late_drops": int(window_drops) if window_drops is not None else None,
            **{_snake(k): v for k, v in counters.items()},
        },
        "operators": operators,
        "failure": _root_exception(exceptions),
    }


def _snake(name: str) -> str:
    name = name.removeprefix("metering")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _short(name: str) -> str:
    """An operator chain's name without Flink's generated detail (field lists, plans)."""
    parts = [re.sub(r"\(.*", "", p).strip() for p in name.split(" -> ")]
    text = " -> ".join(p for p in parts if p)
    return text if len(text) <= 100 else text[:97] + "..."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _size(value: Any) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


#: A live job's watermark trails the newest event by ``max_out_of_orderness`` plus, on a quiet topic,
#: one heartbeat interval (30 s and 10 s by default); beyond this `job status` says what it means.
STALE_WATERMARK_S = 300


def render_status(status: dict[str, Any]) -> str:
    """Human-readable `metering job status`."""
    cp = status["checkpoints"]
    last = cp["last_completed"]
    lines = [
        f"job {status['job_id']}  {status['name']}",
        f"  state        {status['state']}   uptime {_duration(status['uptime_s'])}   restarts {_count(status['restarts'])}",
    ]
    if last:
        lines.append(
            f"  checkpoint   #{last['id']} completed {_duration(last['age_s'])} ago, {_size(last['size_bytes'])} "
            f"(full state {_size(last['full_size_bytes'])}), took {last['duration_ms']} ms; "
            f"{cp['completed']} completed, {cp['failed']} failed"
        )
    else:
        lines.append(f"  checkpoint   none completed yet; {cp['failed'] or 0} failed")
    if cp["restored_from"]:
        lines.append(f"  restored     from {cp['restored_from']}")
    if cp["last_failure"]:
        lines.append(f"  last failed checkpoint: {cp['last_failure']}")
    wm = status["watermark"]
    lag = "none yet (no event time seen)" if wm["ms"] is None else f"lag {_duration(wm['lag_s'])} behind now"
    lines.append(f"  watermark    {lag}")
    if wm["lag_s"] is not None and wm["lag_s"] > STALE_WATERMARK_S:
        lines.append(
            "  hint         a watermark this far behind means a backlog is being read, or nothing arrives:"
            " with no events, finals wait for heartbeats (is `metering load` running? docs/semantics.md)"
        )
    p = status["pipeline"]
    lines.append(
        f"  pipeline     events past dedup {_count(p['events_deduplicated_in'])}, "
        f"duplicates dropped {_count(p['duplicates_dropped'])} ({_count(p['conflicts'])} with a different payload), "
        f"dead letters {_count(p['dead_letters'])}"
    )
    if p["window_late_drops"]:
        drops = p["window_late_drops"]
        lines.append(f"  ALERT        {drops:,} rows dropped by the window as late: totals are short (docs/operations.md)")
    lines.append(
        f"               late events {_count(p['late_events'])}, corrections {_count(p['corrections_emitted'])}, "
        f"finals {_count(p['finals_emitted'])}, aggregate updates {_count(p['aggregate_updates'])}"
    )
    if p.get("processing_errors"):
        lines.append(
            f"  ALERT        finalization failed on {p['processing_errors']:,} partial(s) or timer(s): dead letters with "
            "reason processing_error hold them (docs/operations.md)"
        )
    lines.append("  operators    (records in / out, parallelism, status)")
    for op in status["operators"]:
        counts = f"{_count(op['records_in']):>12} / {_count(op['records_out']):<12}"
        lines.append(f"    {counts} p{op['parallelism']} {op['status']:<9} {op['name']}")
    if status["failure"]:
        lines.append(f"  last failure {status['failure']}")
    return "\n".join(lines)


def render_jobs(jobs: list[dict[str, Any]], now_ms: int | None = None) -> str:
    """Human-readable `metering job list`."""
    if not jobs:
        return "no jobs on this cluster"
    now_ms = now_ms or int(time.time() * 1000)
    lines = [f"{'JOB ID':<32}  {'STATE':<10}  {'UPTIME':>10}  NAME"]
    for job in jobs:
        uptime = _duration((job.get("duration") or 0) / 1000)
        lines.append(f"{job['jid']:<32}  {job['state']:<10}  {uptime:>10}  {job['name']}")
    return "\n".join(lines)
