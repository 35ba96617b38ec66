"""The `metering` command line: one command, a subcommand per job.

Exit codes (stable, for schedulers and scripts):
  0  success
  1  runtime failure (a service did not start, a delivery failed, a migration failed)
  2  usage or configuration error (bad flag, bad setting; the message names it)
  3  completed, but some input was rejected (e.g. `produce` rejected invalid lines)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3

ENV_HELP = (
    "environment: METERING_HOME (state folder, default ./.metering), METERING_KAFKA_PORT (19092), "
    "METERING_KAFKA_CONTROLLER_PORT (19093), METERING_FLINK_REST_PORT (18081), METERING_FLINK_RPC_PORT (16123), "
    "METERING_CLICKHOUSE_URL (a ClickHouse server; unset = embedded chDB), METERING_CLICKHOUSE_DATABASE (metering)"
)


def _print(obj: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(obj)


def _stack() -> Any:
    from infra.settings import StackSettings
    from infra.stack import Stack

    return Stack(StackSettings.from_env())


def _storage_settings() -> Any:
    from clickhouse.client import StorageSettings
    from infra.settings import StackSettings

    return StorageSettings.from_env(default_path=StackSettings.from_env().chdb_path)


def render_status(status: dict[str, Any]) -> str:
    """Human-readable stack status."""
    k, f, c = status["kafka"], status["flink"], status["clickhouse"]

    def mark(ok: bool) -> str:
        return "OK  " if ok else "DOWN"

    lines = [f"stack home: {status['home']}"]
    kafka = f"[{mark(k.get('healthy', False))}] kafka   {k['bootstrap_servers']}"
    if k.get("running"):
        kafka += f"  pid {k['pid']}  cluster {k.get('cluster_id', '?')}  brokers {k.get('brokers', '?')}"
    if k.get("problem"):
        kafka += f"  problem: {k['problem']}"
    lines.append(kafka + f"\n         log {k['log']}")
    flink = f"[{mark(f.get('healthy', False))}] flink   {f['rest_url']}"
    if f.get("jobmanager_pid"):
        flink += (
            f"  jobmanager pid {f['jobmanager_pid']}  taskmanager pid {f.get('taskmanager_pid')}"
            f"  Flink {f.get('flink_version', '?')}  taskmanagers {f.get('taskmanagers', '?')}"
            f"  slots {f.get('slots_available', '?')}/{f.get('slots_total', '?')} free  jobs running {f.get('jobs_running', '?')}"
        )
    if f.get("problem"):
        flink += f"  problem: {f['problem']}"
    lines.append(flink + f"\n         web UI {f['web_ui']}\n         logs {f['log']}")
    lines.append(f"[OK  ] clickhouse  {c['backend']}  {c['path']}")
    return "\n".join(lines)


# --- stack -----------------------------------------------------------------
def cmd_stack(args: argparse.Namespace) -> int:
    stack = _stack()
    if args.action == "up":
        started = time.monotonic()
        print("starting Kafka broker and Flink cluster on 127.0.0.1 …", file=sys.stderr)
        stack.up()
        print(f"stack is up ({time.monotonic() - started:.1f}s)", file=sys.stderr)
        _print(stack.status() if args.format == "json" else render_status(stack.status()), args.format)
        return EXIT_OK
    if args.action == "status":
        status = stack.status()
        _print(status if args.format == "json" else render_status(status), args.format)
        return EXIT_OK if status["healthy"] else EXIT_FAILURE
    if args.action == "down":
        stopped = stack.down()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")
        return EXIT_OK
    if args.action == "reset":
        stack.reset(jars=args.jars)
        print(f"stack stopped and state wiped under {stack.settings.home}" + (" (jar cache too)" if args.jars else ""))
        return EXIT_OK
    if args.action == "lock-jars":
        from infra.jars import LOCK_FILE, write_lock

        entries = write_lock(stack.settings.jar_cache, log=stack.settings.logs / "jars.log")
        print(f"pinned {len(entries)} jars in {LOCK_FILE}")
        return EXIT_OK
    raise AssertionError(args.action)


# --- migrate ---------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace) -> int:
    from clickhouse.client import open_storage
    from clickhouse.migrate import migrate, status

    settings = _config(args).storage if args.config else _storage_settings()
    with open_storage(settings) as storage:
        if args.status:
            states = status(storage)
            if args.format == "json":
                _print([s.__dict__ for s in states], "json")
            else:
                for s in states:
                    print(f"{s.version:04d}_{s.name:<40} {s.state:<12} {s.applied_at or ''}")
            return EXIT_FAILURE if any(s.state in ("changed", "missing-file") for s in states) else EXIT_OK
        applied = migrate(storage)
    target = f"{settings.backend} database '{settings.database}'"
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        print(f"{target}: {len(applied)} migration(s) applied")
    else:
        print(f"{target}: up to date")
    return EXIT_OK


# --- produce ---------------------------------------------------------------
def cmd_produce(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from infra.settings import StackSettings
    from jobs.produce import make_producer, produce_lines
    from jobs.topics import ensure_topic

    bootstrap = args.bootstrap or StackSettings.from_env().bootstrap_servers
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    total = None if args.file == "-" else os.path.getsize(args.file)
    rejects = open(args.rejects, "w") if args.rejects else None  # noqa: SIM115
    try:
        if ensure_topic(bootstrap, args.topic, partitions=args.partitions, connect_timeout_s=args.connect_timeout):
            print(f"created topic {args.topic} ({args.partitions} partitions)", file=sys.stderr)
        producer = make_producer(bootstrap)
    except Exception:
        if source is not sys.stdin.buffer:
            source.close()
        if rejects is not None:
            rejects.close()
        raise
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="produce", disable=None, file=sys.stderr) as bar:
            summary = produce_lines(
                source,
                producer=producer,
                topic=args.topic,
                validate=not args.no_validate,
                rejects=rejects,
                on_line=bar.update,
            )
    finally:
        producer.close()
        if source is not sys.stdin.buffer:
            source.close()
        if rejects is not None:
            rejects.close()
    if args.format == "json":
        _print(summary.as_dict(), "json")
    else:
        print(f"read {summary.read} events: sent {summary.sent}, rejected {summary.rejected}, delivery failures {summary.failed}")
        for reason, count in sorted(summary.reasons.items()):
            print(f"  rejected {reason}: {count}")
        for error in summary.errors[:5]:
            print(f"  delivery error: {error}")
        if args.rejects and summary.rejected:
            print(f"  rejected lines with reasons: {args.rejects}")
    if summary.failed:
        return EXIT_FAILURE
    return EXIT_REJECTED if summary.rejected else EXIT_OK


# --- job / load / query ---------------------------------------------------------
def _config(args: argparse.Namespace) -> Any:
    from jobs.config import load_config

    return load_config(Path(args.config) if args.config else None)


def ensure_topics(config: Any, partitions: int = 4) -> list[str]:
    """Create every topic the pipeline uses (idempotent); returns those created."""
    from jobs.metering_job import all_topics
    from jobs.topics import ensure_topic

    return [t for t in all_topics(config) if ensure_topic(config.kafka.bootstrap_servers, t, partitions=partitions)]


def cmd_job(args: argparse.Namespace) -> int:
    from infra.flink import connector_jar
    from infra.settings import StackSettings
    from jobs.metering_job import RunOptions, run, with_parallelism

    config = with_parallelism(_config(args), args.parallelism)
    created = ensure_topics(config)
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    settings = StackSettings.from_env()
    mode = "bounded: up to the current end of the topic, then finalize everything" if args.until_end else "continuous"
    print(f"running the metering job on the local MiniCluster ({mode}) …", file=sys.stderr, flush=True)
    started = time.monotonic()
    run(
        config,
        RunOptions(
            bounded=args.until_end,
            connector_jar=connector_jar(settings),
            job_name=args.job_name,
            checkpoint_dir=(settings.checkpoint_dir / args.job_name).resolve().as_uri(),
        ),
    )
    print(f"job finished in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return EXIT_OK


def _cluster_url(args: argparse.Namespace) -> str:
    from infra.settings import StackSettings

    return str(args.cluster or StackSettings.from_env().flink_rest_url)


def cmd_job_submit(args: argparse.Namespace) -> int:
    """Package and submit the job to a session cluster; wait until it runs."""
    from infra.errors import StackError
    from infra.flink import FlinkCluster, connector_jar, pyflink_home
    from infra.flink_rest import FlinkRest
    from infra.settings import PROJECT_ROOT, StackSettings
    from infra.udf_jar import udf_jar
    from jobs.metering_job import with_parallelism
    from jobs.operations import (
        SubmitOptions,
        await_running,
        deployment_checkpoint_dir,
        latest_checkpoint,
        rocksdb_memory_report,
        submit,
    )

    config_path = Path(args.config) if args.config else PROJECT_ROOT / "config" / "metering.example.yaml"
    config = _config(argparse.Namespace(config=str(config_path)))  # fails here, naming the key, before any upload
    if args.parallelism is not None:
        with_parallelism(config, args.parallelism)  # the bounds pipeline.parallelism has (ConfigError: exit 2)
    if args.from_latest_checkpoint and args.from_savepoint:
        print("metering: pass --from-savepoint PATH or --from-latest-checkpoint, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.rebuild and (args.from_latest_checkpoint or args.from_savepoint):
        print("metering: --rebuild replaces a job without its state; it cannot resume from a savepoint too", file=sys.stderr)
        return EXIT_USAGE
    # The deployment's own checkpoint folder (the cluster's plus the consumer group), so that a job
    # resubmitted after a JobManager crash (new job id) finds its predecessors' retained checkpoints.
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None:
        try:
            cluster_config = FlinkRest(_cluster_url(args)).cluster_config()
        except StackError:
            if args.from_latest_checkpoint:
                raise
            cluster_config = {}  # an unreachable cluster fails the submission below with its own error
        base = cluster_config.get("execution.checkpointing.dir") or cluster_config.get("state.checkpoints.dir")
        if base:
            checkpoint_dir = deployment_checkpoint_dir(base, config.kafka.consumer_group)
        elif args.from_latest_checkpoint:
            print(
                "metering: the cluster has no execution.checkpointing.dir: pass the folder the job checkpointed to "
                "with --checkpoint-dir",
                file=sys.stderr,
            )
            return EXIT_USAGE
    from_savepoint = args.from_savepoint
    if args.from_latest_checkpoint:
        from_savepoint = latest_checkpoint(checkpoint_dir)
        print(f"resuming from the latest retained checkpoint {from_savepoint}", file=sys.stderr)
    created = ensure_topics(config)
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    rebuild, plan_described = None, None
    if args.rebuild:
        from jobs.upgrade import RebuildError, rebuild_plan

        try:
            plan = rebuild_plan(config)
        except RebuildError as exc:
            print(f"metering: {exc}", file=sys.stderr)
            return EXIT_USAGE
        rebuild, plan_described = plan.rebuild, plan.describe()
        print(f"rebuilding the replaced job's state: {json.dumps(plan_described)}", file=sys.stderr)
    settings = StackSettings.from_env()
    cluster = FlinkCluster(settings)
    cluster.prepare_client()
    options = SubmitOptions(
        cluster_url=_cluster_url(args),
        config_path=config_path,
        job_name=args.job_name,
        parallelism=args.parallelism,
        state_backend=args.state_backend,
        checkpoint_dir=checkpoint_dir,
        savepoint_dir=args.savepoint_dir,
        from_savepoint=from_savepoint,
        allow_non_restored_state=args.allow_non_restored_state,
        until_end=args.until_end,
        rebuild=rebuild,
        python_executable=args.python_executable or (settings.python_executable if args.cluster is None else None),
    )
    try:
        memory = rocksdb_memory_report(FlinkRest(options.cluster_url), options.state_backend)
    except StackError as exc:  # advisory; an unreachable cluster fails the submission below with its own error
        print(f"warning: could not read the cluster's memory for RocksDB: {exc}", file=sys.stderr)
        memory = None
    if memory is not None:
        print(memory["rocksdb_memory"], file=sys.stderr)
        for warning in memory["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    print(f"submitting {args.job_name} to {options.cluster_url} …", file=sys.stderr, flush=True)
    submission = submit(
        options,
        project_root=PROJECT_ROOT,
        flink_env=cluster.environment(),
        flink_bin=pyflink_home() / "bin" / "flink",
        jar=connector_jar(settings),
        udf_jar=udf_jar(settings),
        work=settings.home / "submissions",
    )
    result: dict[str, Any] = {"job_id": submission.job_id, "web_ui": submission.web_url, "package": str(submission.package_dir)}
    if from_savepoint:
        result["restored_from"] = from_savepoint
    if plan_described is not None:
        result["rebuild"] = plan_described
    if memory is not None:
        result |= {key: memory[key] for key in ("rocksdb_memory_per_slot", "warnings")}
    if not args.no_wait:
        job = await_running(FlinkRest(options.cluster_url), submission.job_id)
        result["state"] = str(job.get("state"))
    if args.format == "json":
        _print(result, "json")
    else:
        print(f"job id  {submission.job_id}\nweb UI  {submission.web_url}\npackage {submission.package_dir}")
        if "state" in result:
            print(f"state   {result['state']}")
    return EXIT_OK


def cmd_job_ops(args: argparse.Namespace) -> int:
    """list | status | savepoint | stop | cancel, through the cluster's REST API."""
    from infra.flink_rest import FlinkRest
    from jobs.operations import collect_status, render_jobs, render_status

    rest = FlinkRest(_cluster_url(args))
    if args.action == "list":
        jobs = rest.jobs()
        _print(jobs if args.format == "json" else render_jobs(jobs), args.format)
        return EXIT_OK
    if args.action == "status":
        status = collect_status(rest, args.job_id)
        _print(status if args.format == "json" else render_status(status), args.format)
        return EXIT_OK if status["state"] in ("RUNNING", "FINISHED", "CREATED", "INITIALIZING") else EXIT_FAILURE
    if args.action == "cancel":
        rest.cancel(args.job_id)
        job = rest.wait_for_state(args.job_id, {"CANCELED"}, timeout_s=args.timeout)
        answer = {"job_id": args.job_id, "state": job["state"]}
        _print(answer if args.format == "json" else f"job {args.job_id} {job['state']}", args.format)
        return EXIT_OK
    stop = args.action == "stop"
    if stop and not args.savepoint:
        print("metering: `job stop` takes a savepoint: pass --savepoint [DIR] (or use `job cancel`)", file=sys.stderr)
        return EXIT_USAGE
    target = args.savepoint if isinstance(args.savepoint, str) else None
    trigger = rest.trigger_savepoint(args.job_id, target, stop=stop, drain=getattr(args, "drain", False))
    print(f"savepoint of {args.job_id} triggered{' (stopping the job)' if stop else ''} …", file=sys.stderr, flush=True)
    location = rest.await_savepoint(args.job_id, trigger, timeout_s=args.timeout)
    state = rest.wait_for_state(args.job_id, {"FINISHED", "CANCELED"}, timeout_s=args.timeout)["state"] if stop else "RUNNING"
    if args.format == "json":
        _print({"job_id": args.job_id, "savepoint": location, "state": state}, "json")
    else:
        print(f"savepoint {location}\njob {args.job_id} {state}")
        if stop:
            print(f"resume with: metering job submit --config FILE --from-savepoint {location}")
    return EXIT_OK


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM (service managers, `kill`) like Ctrl-C, so long-running commands close cleanly."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_load(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from clickhouse.client import open_storage
    from clickhouse.gateway import QueryGateway
    from clickhouse.migrate import status
    from jobs.loader import Loader

    config = _config(args)
    with open_storage(config.storage) as storage:
        pending = [s for s in status(storage) if s.state != "applied"]
        if pending:
            names = ", ".join(f"{s.version:04d}_{s.name} ({s.state})" for s in pending)
            print(f"metering: the database is not migrated: {names}\n  fix: run `metering migrate`", file=sys.stderr)
            return EXIT_FAILURE
        loader = Loader(
            config,
            storage,
            group_id=args.group,
            load_raw=not args.no_raw,
            heartbeat_interval=config.pipeline.heartbeat_interval,
        )

        if args.reload_quarantine:
            reloaded, still = loader.reload_quarantine()
            print(json.dumps({"reloaded": reloaded, "still_quarantined": still, "retries": loader.stats.retries}))
            return EXIT_REJECTED if still else EXIT_OK

        def progress(stats: Any) -> None:
            if args.progress:
                total = sum(stats.rows.values())
                quarantined = sum(stats.quarantined.values())
                print(
                    f"\rloaded {total} rows in {stats.batches} batches (retries {stats.retries}, quarantined {quarantined})",
                    end="",
                    file=sys.stderr,
                )

        # In embedded mode this process owns the chDB directory: serve reads for `query` and `dashboard`.
        _interrupt_on_sigterm()
        with QueryGateway(storage) if config.storage.backend == "chdb" else nullcontext():
            try:
                stats = loader.run(until_idle=args.until_idle, on_batch=progress)
            except KeyboardInterrupt:
                stats = loader.stats
    if args.progress:
        print(file=sys.stderr)
    summary: dict[str, Any] = {"rows": dict(stats.rows), "batches": stats.batches, "retries": stats.retries}
    summary["quarantined"] = dict(stats.quarantined)
    if loader.heartbeat is not None:
        summary["heartbeats"] = {"sent": loader.heartbeat.stats.records, "failures": loader.heartbeat.stats.failures}
    print(json.dumps(summary))
    if stats.quarantined:
        print(
            f"metering load: {sum(stats.quarantined.values())} record(s) could not be stored and are in the quarantine "
            "table (docs/operations.md, 'Quarantine')",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    return EXIT_OK


def cmd_heartbeat(args: argparse.Namespace) -> int:
    from jobs.heartbeat import HeartbeatSender
    from udfs.durations import parse_duration

    config = _config(args)
    topic = config.kafka.topics.events
    sender = HeartbeatSender(config.kafka.bootstrap_servers, topic)
    if args.once:
        try:
            sent = sender.send_once()
        except Exception as exc:
            print(
                f"metering: heartbeat to {topic} at {config.kafka.bootstrap_servers} failed: {type(exc).__name__}: {exc}\n"
                "  fix: start the broker (`metering stack up` locally) and create the topics (`metering job run` does)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        finally:
            sender.stop()
        print(json.dumps({"topic": topic, "partitions": sent}))
        return EXIT_OK
    try:
        interval = parse_duration(args.interval) if args.interval else config.pipeline.heartbeat_interval
    except ValueError as exc:
        print(f"metering: --interval: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not interval:
        print(
            "metering: pipeline.heartbeat_interval is 0 (off)\n  fix: pass --interval 10s, or --once from a scheduler",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _interrupt_on_sigterm()
    try:
        sender.run(interval)
    except KeyboardInterrupt:
        pass
    finally:
        sender.stop()
    stats = sender.stats
    print(json.dumps({"topic": topic, "rounds": stats.rounds, "sent": stats.records, "failures": stats.failures}))
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from clickhouse import queries
    from clickhouse.gateway import open_reader

    config = _config(args)
    try:
        scope = queries.Scope(
            customer=args.customer or "",
            meter=args.meter or "",
            start=queries.parse_time(args.start, "--from") if args.start else None,
            end=queries.parse_time(args.end, "--to") if args.end else None,
            granularity=args.granularity,
        )
        with open_reader(config.storage) as reader:
            if args.what == "health":
                row = queries.health(reader)
                sys.stdout.write(_render_health(row, args.format))
                return EXIT_OK
            questions = {
                "usage": queries.usage,
                "series": queries.series,
                "finals": queries.finals,
                "periods": queries.periods,
            }
            if args.what in questions:
                rows = questions[args.what](reader, scope)
            elif args.what == "customers":
                rows = queries.customers(reader)
            else:  # corrections, dead-letters: everyone's or one customer's
                rows = reader.run(args.what.replace("-", "_"), {"customer": scope.customer})
                rows = [r for r in rows if not scope.meter or r.get("meter") == scope.meter]
    except queries.QueryError as exc:
        print(f"metering query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(queries.render([queries.with_group_by(r) for r in rows], args.format))
    return EXIT_OK


def _render_health(row: dict[str, Any], fmt: str) -> str:
    from clickhouse.queries import render

    if fmt in ("json", "jsonl"):
        return json.dumps(row, indent=2 if fmt == "json" else None) + "\n"
    counters = {k: v for k, v in row.items() if k != "dead_letter_reasons"}
    if fmt == "csv":
        return render([counters], "csv")
    width = max(len(k) for k in counters)
    text = "".join(f"{k.ljust(width)}  {'-' if v is None else v}\n" for k, v in counters.items())
    return text + "\ndead letters by reason:\n" + render(row["dead_letter_reasons"], "table")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the web dashboard; in embedded mode through the chDB owner's gateway when another process owns it."""
    from waitress import serve

    from clickhouse.gateway import GatewayReader, open_reader
    from jobs.dashboard.app import create_app

    config = _config(args)
    _interrupt_on_sigterm()
    with open_reader(config.storage, serve=True) as reader:
        if isinstance(reader, GatewayReader):
            label = f"chDB {config.storage.path} via its owner's gateway {reader.url}"
        elif config.storage.backend == "chdb":
            label = f"chDB {config.storage.path} (this process owns it and serves reads to others)"
        else:
            label = f"ClickHouse {config.storage.url}"
        app = create_app(reader, refresh_s=args.refresh, storage_label=label)
        print(f"metering dashboard: http://{args.host}:{args.port}/  ({label}; Ctrl-C stops)", flush=True)
        try:
            serve(app, host=args.host, port=args.port, threads=8, ident="metering-dashboard", _quiet=True)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"metering dashboard: cannot listen on {args.host}:{args.port}: {exc}; fix: pass --port", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Run the data-quality suites (clickhouse/expectations) against ClickHouse; exit 1 when an expectation fails."""
    from clickhouse import quality
    from clickhouse.gateway import open_reader
    from clickhouse.queries import QueryError, parse_time
    from infra.settings import StackSettings

    config = _config(args)
    try:
        options = quality.CheckOptions(
            suites=tuple(args.suite or ()),
            start=parse_time(args.start, "--from") if args.start else None,
            end=parse_time(args.end, "--to") if args.end else None,
            sample=args.sample,
            overrides=dict(quality.parse_override(text) for text in args.set or ()),
            docs_dir=None if args.no_docs else Path(args.docs_dir or StackSettings.from_env().home / "quality").resolve(),
        )
        with open_reader(config.storage) as reader:
            report = quality.run_checks(reader, config, options)
    except (quality.QualityError, QueryError) as exc:
        print(f"metering check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(quality.render_json(report) if args.format == "json" else quality.render_text(report))
    return EXIT_OK if report.success else EXIT_FAILURE


# --- config ----------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    """Validate a configuration file without running anything."""
    from jobs.config import load_config
    from udfs.durations import format_duration

    config = load_config(Path(args.file))
    summary = {
        "file": args.file,
        "meters": [
            f"{m.name} ({m.aggregation.value} of {m.value} on {m.event_type}"
            + (f", by {', '.join(m.group_by)})" if m.group_by else ")")
            for m in config.meters
        ],
        "customers": sorted(config.billing.customers),
        "plans": sorted(config.billing.plans),
        "default_billing": f"{config.billing.default.cycle.kind.value} anchored on {config.billing.default.cycle.anchor}, "
        f"{config.billing.default.cycle.timezone}, grace {format_duration(config.billing.default.grace)}",
        "storage": repr(config.storage),
    }
    if args.format == "json":
        _print(summary, "json")
    else:
        print(f"{args.file}: valid")
        for meter in summary["meters"]:
            print(f"  meter {meter}")
        print(f"  billing default: {summary['default_billing']}; {len(summary['customers'])} customer override(s)")
        print(f"  storage: {summary['storage']}")
    return EXIT_OK


# --- replay ----------------------------------------------------------------
def _replay_progress(progress: Any) -> None:
    width = 30
    filled = width * progress.done // max(progress.total, 1)
    line = (
        f"\rreplay {progress.stage} [{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.total} customers"
        f"  {progress.events:,} event decisions  {progress.events_per_second:,.0f}/s"
    )
    print(line, end="" if sys.stderr.isatty() else "\n", file=sys.stderr, flush=True)


def render_replay(report: Any) -> str:
    """The replay's summary and diff report (text)."""
    from clickhouse.queries import plain
    from udfs.periods import from_epoch_millis

    head = "DRY RUN (nothing written)" if report.dry_run else f"revision {report.revision} committed"
    lines = [
        f"replay: {head}",
        f"  source: {report.source} (cut: "
        + ", ".join(f"partition {p} <= offset {o}" for p, o in sorted(report.cut.items()))
        + ")",
        f"  scope: {len(report.customers)} customer(s), {len(report.scope)} (customer, meter, period) key(s),"
        " whole closed periods",
        f"  events: {report.events_examined:,} examined, {report.events_counted:,} counted"
        + "".join(f", {n:,} {reason}" for reason, n in sorted(report.refusals.items())),
        f"  wrote: {report.segments:,} minute segments, {report.finals:,} finals" + (" (not written)" if report.dry_run else ""),
        f"  speed: {report.seconds:.1f} s, {report.events_per_second:,.0f} events/s, "
        f"{report.realtime_ratio:,.0f}x real time over the requested range",
    ]
    if not report.adjustments:
        lines.append("  adjustments: none (every final in scope is unchanged)")
        return "\n".join(lines)
    lines.append(f"  adjustments ({len(report.adjustments)}):")
    header = ("customer", "meter", "group", "period", "old", "new", "delta", "events", "absorbed corrections")
    rows = [header]
    for a in report.adjustments:
        rows.append(
            (
                a.customer_id,
                a.meter,
                a.group_key,
                plain(from_epoch_millis(a.period_start_ms))[:10],
                "-" if a.old_total is None else plain(a.old_total),
                "-" if a.new_total is None else plain(a.new_total),
                "" if a.delta is None else plain(a.delta),
                f"{a.old_event_count}->{a.new_event_count}",
                str(a.superseded_corrections) if a.superseded_corrections else "",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        lines.append("    " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def cmd_replay(args: argparse.Namespace) -> int:
    """Recompute whole closed periods from raw_events as a new revision, with adjustments and a diff report."""
    from clickhouse.client import open_storage
    from clickhouse.migrate import status
    from clickhouse.queries import QueryError, parse_time
    from jobs.replay import ReplayError, ReplayRequest, replay

    config = _config(args)
    try:
        request = ReplayRequest(
            range_from=parse_time(args.start, "--from"),
            range_to=parse_time(args.end, "--to"),
            customers=tuple(args.customer or ()),
            meters=tuple(args.meter or ()),
            reason=args.reason or "",
            dry_run=args.dry_run,
        )
    except QueryError as exc:
        print(f"metering replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with open_storage(config.storage) as storage:
        pending = [s for s in status(storage) if s.state != "applied"]
        if pending:
            names = ", ".join(f"{s.version:04d}_{s.name} ({s.state})" for s in pending)
            print(f"metering replay: the database is not migrated: {names}\n  fix: run `metering migrate`", file=sys.stderr)
            return EXIT_FAILURE
        try:
            report = replay(storage, config, request, None if args.quiet else _replay_progress)
        except ReplayError as exc:
            print(f"\nmetering replay: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.format == "json":
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render_replay(report))
    return EXIT_OK


# --- demo ------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Stack up, migrate, generate a workload, produce, run job + loader, compare with a recomputation."""
    import yaml

    from clickhouse.client import open_storage
    from clickhouse.migrate import migrate
    from infra.settings import StackSettings
    from jobs.config import load_config
    from jobs.demo import collect_results, compare, demo_document, generate, recompute

    settings = StackSettings.from_env()
    stack = _stack()
    run_id = time.strftime("%Y%m%d%H%M%S")
    workdir = Path(args.workdir) / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(label: str) -> float:
        print(f"\n== {label}", flush=True)
        return time.monotonic()

    t = step("1/7 local stack: Kafka (KRaft) broker + Flink JobManager/TaskManager on 127.0.0.1")
    stack.up()
    print(render_status(stack.status()))
    timings["stack"] = time.monotonic() - t

    config_path = workdir / "metering.yaml"
    config_path.write_text(yaml.safe_dump(demo_document(run_id, settings.bootstrap_servers, settings.chdb_path), sort_keys=False))
    config = load_config(config_path, env={})
    t = step(f"2/7 ClickHouse (chDB at {settings.chdb_path}): migrate database {config.storage.database}")
    with open_storage(config.storage) as storage:
        for m in migrate(storage):
            print(f"   applied {m.version:04d}_{m.name}")
    timings["migrate"] = time.monotonic() - t

    t = step(f"3/7 generating {args.events:,} events for {config_path.parent}")
    events_file = workdir / "events.jsonl"
    workload = generate(events_file, args.events, seed=args.seed)
    print(
        f"   {workload.lines:,} lines: {workload.duplicates:,} duplicates ({workload.conflicts} conflicting), "
        f"{workload.late_within_grace:,} late within grace, {workload.late_beyond_grace} late beyond grace, "
        f"{sum(workload.malformed.values())} malformed ({', '.join(f'{k} {v}' for k, v in sorted(workload.malformed.items()))})"
    )
    timings["generate"] = time.monotonic() - t

    t = step(f"4/7 producing to {config.kafka.topics.events} (raw lines, invalid ones included)")
    ensure_topics(config)
    code = cmd_produce(
        argparse.Namespace(
            file=str(events_file),
            topic=config.kafka.topics.events,
            partitions=4,
            bootstrap=config.kafka.bootstrap_servers,
            no_validate=True,
            rejects=None,
            format="text",
            connect_timeout=10.0,
        )
    )
    if code != EXIT_OK:
        return code
    timings["produce"] = time.monotonic() - t

    t = step("5/7 metering job on the Flink MiniCluster, bounded (--until-end): dedup, aggregate, finalize")
    code = cmd_job(
        argparse.Namespace(config=str(config_path), parallelism=None, until_end=True, job_name=f"metering-demo-{run_id}")
    )
    if code != EXIT_OK:
        return code
    timings["job"] = time.monotonic() - t

    t = step("6/7 loader: job outputs -> ClickHouse (read_committed, idempotent)")
    code = cmd_load(
        argparse.Namespace(
            config=str(config_path),
            until_idle=True,
            group=f"demo-{run_id}-loader",
            no_raw=False,
            progress=True,
            reload_quarantine=False,
        )
    )
    if code != EXIT_OK:
        return code
    timings["load"] = time.monotonic() - t

    t = step("7/7 results, and an independent recomputation from the generated file")
    with open_storage(config.storage, create_database=False) as storage:
        results = collect_results(storage)
    finals, corrections, dead_letters, health = results.finals, results.corrections, results.dead_letters, results.health
    print_usage(results.usage)
    print(
        f"\n   dead letters {len(dead_letters):,}  duplicates dropped {health['duplicates_dropped']:,} "
        f"(conflicting ids {health['conflicting_ids']})  correction records {len(corrections)}  "
        f"raw events {health['raw_events']:,}"
    )
    expected = recompute(events_file, config)
    result = compare(expected, finals, corrections, dead_letters, health)
    print()
    for name, ok, detail in result.checks:
        print(f"   [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    timings["verify"] = time.monotonic() - t
    print("\n   timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    first = min((r["customer_id"] for r in results.usage), default="")
    print(f"   config {config_path}; query it with: metering query usage --config {config_path} --customer {first}")
    print("\nPASS" if result.passed else "\nFAIL")
    print(
        "\nSee it in the dashboard (usage so far, charts per minute/hour/day, finals, pipeline health):\n"
        f"   bash infra/run.sh dashboard --config {config_path}\n"
        f"   then open http://127.0.0.1:8050/?customer={first}  (Ctrl-C stops it; docs/dashboards.md)"
    )
    return EXIT_OK if result.passed else EXIT_FAILURE


def print_usage(rows: list[dict[str, Any]]) -> None:
    """Per customer: each meter/group/period total with final or provisional status."""
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_customer.setdefault(row["customer_id"], []).append(row)
    for customer, items in sorted(by_customer.items()):
        print(f"\n   {customer}")
        for r in items:
            group = ",".join(f"{k}={v}" for k, v in r["group_by"].items()) or "-"
            print(
                f"     {r['meter']:<19} {group:<16} {r['period_start'][:16]} .. {r['period_end'][:16]}  "
                f"{r['total']:>26}  {r['status']:<11} {r['event_count']:>8,} events"
            )


def build_parser() -> argparse.ArgumentParser:
    from infra.flink import STATE_BACKENDS

    parser = argparse.ArgumentParser(
        prog="metering",
        description="Usage metering on Apache Flink: Kafka usage events -> exact aggregates in ClickHouse.",
        epilog=ENV_HELP + ".  Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 done but input rejected.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser("stack", help="local Kafka + Flink stack on 127.0.0.1", epilog=ENV_HELP)
    stack_sub = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("up", "start the broker and Flink cluster (idempotent) and wait until healthy"),
        ("status", "show health, PIDs, ports, web UI and log locations (exit 1 if unhealthy)"),
        ("down", "stop every process of the stack"),
        ("reset", "stop and wipe broker data, checkpoints, savepoints, chDB data and logs"),
        ("lock-jars", "re-resolve infra/maven/pom.xml and rewrite infra/jars.lock (after a version change)"),
    ):
        p = stack_sub.add_parser(name, help=text, description=text)
        p.add_argument("--format", choices=("text", "json"), default="text")
        if name == "reset":
            p.add_argument("--jars", action="store_true", help="also delete the jar cache")
    stack.set_defaults(func=cmd_stack)

    migrate = sub.add_parser("migrate", help="apply pending ClickHouse migrations (clickhouse/migrations)", epilog=ENV_HELP)
    migrate.add_argument("--status", action="store_true", help="list applied/pending migrations instead of applying")
    migrate.add_argument(
        "--config", help="migrate the storage of this configuration file (default: METERING_CLICKHOUSE_* / chDB)"
    )
    migrate.add_argument("--format", choices=("text", "json"), default="text")
    migrate.set_defaults(func=cmd_migrate)

    produce = sub.add_parser(
        "produce",
        help="send JSON-lines usage events to Kafka",
        description="Validate each line against the v1 schema and send valid events to the topic, keyed by "
        "customer_id (idempotent producer, acks=all). Invalid lines are counted and skipped, never fatal.",
        epilog=ENV_HELP,
    )
    produce.add_argument("file", metavar="FILE|-", help="JSON lines file, or - for standard input")
    produce.add_argument("--topic", default="usage-events", help="target topic (default: usage-events)")
    produce.add_argument("--partitions", type=int, default=4, help="partitions if the topic must be created (default: 4)")
    produce.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the local stack's broker)")
    produce.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up if the broker is unreachable for this long (default: 10)",
    )
    produce.add_argument("--no-validate", action="store_true", help="send every line as-is (tests the job's dead-letter path)")
    produce.add_argument("--rejects", metavar="FILE", help="write rejected lines with their reasons (JSON lines)")
    produce.add_argument("--format", choices=("text", "json"), default="text", help="summary format")
    produce.set_defaults(func=cmd_produce)

    config_help = "configuration file (default: built-in defaults + METERING__* variables)"
    job = sub.add_parser("job", help="run the metering job")
    job_sub = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    job_run = job_sub.add_parser(
        "run",
        help="run the job on the local MiniCluster",
        description="Run the metering job in this process on a local Flink MiniCluster. Topics are created "
        "if missing. With --until-end it reads up to the topic's current end, finalizes every period "
        "(the watermark jumps to the end of time) and exits.",
    )
    job_run.add_argument("--config", help=config_help)
    job_run.add_argument("--until-end", action="store_true", help="bounded run: process what is there, finalize, stop")
    job_run.add_argument("--parallelism", type=int, help="override pipeline.parallelism")
    job_run.add_argument("--job-name", default="metering")
    job_run.set_defaults(func=cmd_job)

    cluster_help = "Flink REST URL (default: the local stack's, http://127.0.0.1:18081)"
    submit = job_sub.add_parser(
        "submit",
        help="package and submit the job to a Flink cluster",
        description="Build the job from the configuration here and submit it with `flink run -py`: the Python "
        "packages, a copy of the configuration and the Kafka connector jar are uploaded with it. Waits until "
        "every task runs (a savepoint that cannot be restored is reported here) and prints the job id and the "
        "web UI link.",
        epilog=ENV_HELP,
    )
    submit.add_argument("--cluster", metavar="URL", help=cluster_help)
    submit.add_argument("--config", help="configuration file (default: config/metering.example.yaml)")
    submit.add_argument("--job-name", default="metering")
    submit.add_argument("--parallelism", type=int, help="override pipeline.parallelism (rescale when resuming)")
    submit.add_argument(
        "--state-backend",
        choices=STATE_BACKENDS,
        help="rocksdb (incremental checkpoints) for large dedup state; hashmap for small. Default: the cluster's",
    )
    submit.add_argument(
        "--checkpoint-dir",
        metavar="URI",
        help="this deployment's checkpoint folder (default: the cluster's execution.checkpointing.dir/<consumer group>)",
    )
    submit.add_argument("--savepoint-dir", metavar="URI", help="default savepoint target (default: the cluster's)")
    submit.add_argument("--from-savepoint", metavar="PATH", help="resume from this savepoint or retained checkpoint")
    submit.add_argument(
        "--from-latest-checkpoint",
        action="store_true",
        help="resume from the newest retained checkpoint in the deployment's checkpoint folder (after a JobManager "
        "crash, or a job that failed for good; docs/operations.md, 'Recover')",
    )
    submit.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="resume even if the savepoint holds state no operator claims (that state is dropped)",
    )
    submit.add_argument(
        "--rebuild",
        action="store_true",
        help="replace the deployment's stopped job by one that cannot restore its savepoint (a project upgrade that "
        "changed how state is kept): rebuild dedup, windows and open periods from the events topic; outputs the old "
        "job wrote are not written again (docs/operations.md, 'Upgrade by rebuilding state')",
    )
    submit.add_argument("--until-end", action="store_true", help="bounded: process the topic to its current end, finalize, stop")
    submit.add_argument("--python-executable", help="Python on the TaskManagers (default: the local stack's / the cluster's)")
    submit.add_argument("--no-wait", action="store_true", help="return once submitted, without waiting for RUNNING")
    submit.add_argument("--format", choices=("text", "json"), default="text")
    submit.set_defaults(func=cmd_job_submit)

    for name, text in (
        ("list", "list the cluster's jobs"),
        ("status", "state, uptime, restarts, last checkpoint, watermark lag, pipeline counters, per-operator records"),
        ("savepoint", "take a savepoint and keep the job running"),
        ("stop", "stop the job with a savepoint (to upgrade, rescale or move it)"),
        ("cancel", "cancel the job without a savepoint (its last checkpoint is retained)"),
    ):
        p = job_sub.add_parser(name, help=text, description=text, epilog=ENV_HELP)
        if name != "list":
            p.add_argument("job_id", metavar="ID")
        p.add_argument("--cluster", metavar="URL", help=cluster_help)
        p.add_argument("--format", choices=("text", "json"), default="text")
        if name in ("savepoint", "stop", "cancel"):
            p.add_argument("--timeout", type=float, default=300, metavar="SECONDS", help="give up waiting after this long")
        if name in ("savepoint", "stop"):
            p.add_argument(
                "--savepoint",
                nargs="?",
                const=True,
                default=name == "savepoint",
                metavar="DIR",
                help="savepoint target directory (default: the cluster's execution.checkpointing.savepoint-dir)",
            )
        if name == "stop":
            p.add_argument(
                "--drain",
                action="store_true",
                help="advance the watermark to the end of time first: every open period is finalized (decommissioning only)",
            )
        p.set_defaults(func=cmd_job_ops)

    load = sub.add_parser(
        "load",
        help="load the job's outputs into ClickHouse",
        description="Consume the job's topics (read_committed) and write them to ClickHouse; offsets are "
        "committed only after ClickHouse accepted the batch. A record ClickHouse refuses for what it is (or "
        "that cannot be converted) goes to the quarantine table and loading goes on; exit 3 when any did. "
        "Owns the chDB directory while running.",
    )
    load.add_argument("--config", help=config_help)
    load.add_argument("--until-idle", action="store_true", help="stop once every partition is caught up")
    load.add_argument("--group", default="metering-loader", help="Kafka consumer group (default: metering-loader)")
    load.add_argument("--no-raw", action="store_true", help="do not load the raw topic (the job's raw_events rows)")
    load.add_argument("--progress", action="store_true", help="print progress to stderr")
    load.add_argument(
        "--reload-quarantine",
        action="store_true",
        help="after a fix: convert and store the quarantined records again with the current code, then exit "
        "(exit 3 while some are still refused)",
    )
    load.set_defaults(func=cmd_load)

    heartbeat = sub.add_parser(
        "heartbeat",
        help="keep the watermark moving while the events topic is quiet",
        description="Send a heartbeat record to every partition of the events topic, every "
        "pipeline.heartbeat_interval until interrupted, or once. The job reads its timestamp like an "
        "event's and drops it, so periods finalize while no events arrive (docs/semantics.md). "
        "`metering load` already does this while it runs unbounded; use this command when it does not.",
        epilog=ENV_HELP,
    )
    heartbeat.add_argument("--config", help=config_help)
    heartbeat.add_argument("--once", action="store_true", help="send one round and exit (for cron)")
    heartbeat.add_argument("--interval", help="override pipeline.heartbeat_interval (e.g. 10s)")
    heartbeat.set_defaults(func=cmd_heartbeat)

    query = sub.add_parser(
        "query",
        help="read usage, series, finals and pipeline health from ClickHouse",
        description="Customer-scoped questions (usage, series, periods, finals with --customer) read views that "
        "cannot return another customer's rows. Times are RFC 3339 (2026-03-01T00:00:00Z) or dates.",
    )
    query.add_argument(
        "what",
        choices=("usage", "series", "periods", "finals", "health", "customers", "corrections", "dead-letters"),
        help="usage: usage so far (newest period, final or provisional); series: one customer's usage over time; "
        "periods: every period of one customer; finals: invoice-ready totals; health: pipeline counters and loader lag",
    )
    query.add_argument("--config", help=config_help)
    query.add_argument("--customer", help="only this customer (required for series and periods)")
    query.add_argument("--meter", help="only this meter")
    query.add_argument("--from", dest="start", help="start of the range (inclusive); for usage: only meters used since then")
    query.add_argument("--to", dest="end", help="end of the range (exclusive)")
    query.add_argument("--granularity", choices=("minute", "hour", "day"), default="hour", help="series buckets (default hour)")
    query.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table")
    query.set_defaults(func=cmd_query)

    config = sub.add_parser("config", help="check a configuration file")
    config_sub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = config_sub.add_parser(
        "validate",
        help="parse and validate FILE (plus METERING__* overrides); exit 2 listing every problem",
        description="Parse and validate a configuration file with METERING__SECTION__KEY environment overrides "
        "applied. Prints a summary, or every problem with its path; exits 2 when invalid.",
    )
    validate.add_argument("file", metavar="FILE")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    config.set_defaults(func=cmd_config)

    dashboard = sub.add_parser(
        "dashboard",
        help="serve the local web dashboard (usage so far, series, finals, pipeline health)",
        description="A local web app over the same queries as `metering query`; its JSON API is in docs/dashboards.md.",
    )
    dashboard.add_argument("--config", help=config_help)
    dashboard.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    dashboard.add_argument("--refresh", type=int, default=10, help="seconds between the page's automatic refreshes (default 10)")
    dashboard.set_defaults(func=cmd_dashboard)

    check = sub.add_parser(
        "check",
        help="run the data-quality suites (great-expectations) against ClickHouse; exit 1 if one fails",
        description="Run the great-expectations suites of clickhouse/expectations (raw_events, aggregates, operations) "
        "against ClickHouse, print a summary naming each failed expectation with an example offending row, write "
        "GX Data Docs (HTML) and exit 1 when an expectation failed, so schedulers (cron, Airflow) can gate on it. "
        "docs/quality.md describes every expectation.",
        epilog="Exit codes: 0 every expectation held, 1 one failed (or the storage failed), 2 usage or configuration error.",
    )
    check.add_argument("--config", help=config_help)
    check.add_argument(
        "--suite",
        action="append",
        metavar="NAME",
        help="a suite group (raw_events, aggregates, operations) or one suite (e.g. aggregates.recompute); repeatable; "
        "default: all",
    )
    check.add_argument("--from", dest="start", help="start of the event-time range (inclusive; RFC 3339 or a date)")
    check.add_argument("--to", dest="end", help="end of the event-time range (exclusive)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument(
        "--sample",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="check only this fraction of customers (chosen by a hash of the id) in the raw-event and aggregate suites; "
        "default 1 (all)",
    )
    check.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a suite parameter, e.g. --set max_dead_letter_rate=0.05 (repeatable)",
    )
    check.add_argument("--docs-dir", help="where GX keeps results and Data Docs (default: $METERING_HOME/quality)")
    check.add_argument("--no-docs", action="store_true", help="do not write results or Data Docs")
    check.set_defaults(func=cmd_check)

    replay = sub.add_parser(
        "replay",
        help="recompute whole closed billing periods from raw_events as a new revision (after a bug)",
        description="Recompute the aggregates of every billing period that overlaps [--from, --to) from the immutable "
        "raw_events with the given (possibly fixed) configuration, and write them as a new revision that readers "
        "switch to atomically; earlier revisions stay stored. Changed finals are never rewritten silently: each one "
        "gets an adjustment record (old total, new total, revision, --reason) and a line in the diff report. Only "
        "closed periods (end + grace behind the live watermark) are replayed. In embedded mode the replay needs the "
        "chDB directory: stop `metering load` while it runs (the job's output waits in Kafka). docs/replay.md.",
        epilog="Exit codes: 0 replayed (or dry run done), 1 storage failure, 2 a replay that cannot run as asked "
        "(the message says why).",
    )
    replay.add_argument("--config", help=config_help)
    replay.add_argument("--from", dest="start", required=True, help="start of the event-time range (RFC 3339 or a date)")
    replay.add_argument("--to", dest="end", required=True, help="end of the event-time range (exclusive)")
    replay.add_argument("--customer", action="append", metavar="ID", help="only this customer (repeatable; default: all)")
    replay.add_argument("--meter", action="append", metavar="NAME", help="only this meter (repeatable; default: all)")
    replay.add_argument("--reason", help="why (recorded with the revision and every adjustment; required unless --dry-run)")
    replay.add_argument("--dry-run", action="store_true", help="compute and print the diff, write nothing")
    replay.add_argument("--format", choices=("text", "json"), default="text")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)

    demo = sub.add_parser(
        "demo",
        help="bring everything up and run the end-to-end demo",
        description="Start the stack, migrate, generate a realistic workload (several customers, time zones, "
        "anchors and meters; duplicates, late and malformed events), run the job and the loader, print "
        "the period totals and PASS/FAIL from an independent recomputation.",
    )
    demo.add_argument("--workdir", default=".metering/demo", help="where generated demo files go")
    demo.add_argument("--events", type=int, default=1_000_000, help="number of generated events (default 1,000,000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the generator")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from kafka.errors import KafkaError

    from clickhouse.client import StorageError
    from clickhouse.migrate import MigrationError
    from infra.errors import StackError
    from infra.settings import SettingsError
    from jobs.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SettingsError as exc:
        print(f"metering: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StackError, StorageError, MigrationError) as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KafkaError as exc:
        print(
            f"metering: Kafka is not reachable or refused the request: {type(exc).__name__}: {exc}\n"
            "  fix: check the broker (`metering stack status`) or --bootstrap",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except FileNotFoundError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
