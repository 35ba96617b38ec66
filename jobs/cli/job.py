"""`metering job run|submit|list|status|savepoint|stop|cancel`: run the metering job locally, or on a Flink cluster.

`job submit` is long because a submission decides where the job resumes from (a savepoint, the
latest retained checkpoint, or a rebuild) before uploading anything; each decision is one block.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from jobs.cli.common import (
    CLUSTER_HELP,
    CONFIG_HELP,
    ENV_HELP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_format,
    load_config_arg,
    print_result,
)


def cmd_job_run(args: argparse.Namespace) -> int:
    from jobs.runs import run_local_job

    config = load_config_arg(args.config)
    mode = "bounded: up to the current end of the topic, then finalize everything" if args.until_end else "continuous"

    def created(topics: list[str]) -> None:
        print(f"created topics: {', '.join(topics)}", file=sys.stderr)

    # Topics are created before the job starts (the callback), then the job runs.
    print(f"running the metering job on the local MiniCluster ({mode}) …", file=sys.stderr, flush=True)
    ran = run_local_job(
        config, until_end=args.until_end, job_name=args.job_name, parallelism=args.parallelism, on_topics_created=created
    )
    if args.format == "json":
        print(json.dumps(ran.as_dict()))
    else:
        print(f"job finished in {ran.seconds:.1f}s", file=sys.stderr)
    return EXIT_OK


def cluster_url(args: argparse.Namespace) -> str:
    from jobs.config import load_stack

    return str(args.cluster or load_stack().flink_rest_url)


def cmd_job_submit(args: argparse.Namespace) -> int:
    """Package and submit the job to a session cluster; wait until it runs."""
    from infra.errors import StackError
    from infra.flink import FlinkCluster, connector_jar, pyflink_home
    from infra.flink_rest import FlinkRest
    from infra.settings import PROJECT_ROOT
    from infra.udf_jar import udf_jar
    from jobs.cluster.operations import (
        SubmitOptions,
        await_running,
        deployment_checkpoint_dir,
        latest_checkpoint,
        rocksdb_memory_report,
        submit,
    )
    from jobs.flink.metering_job import with_parallelism
    from jobs.topics import ensure_topics

    config_path = Path(args.config) if args.config else None  # None: the built-in defaults, as every command
    config = load_config_arg(args.config)  # fails here, naming the key, before any upload
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
            cluster_config = FlinkRest(cluster_url(args)).cluster_config()
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
        from jobs.cluster.upgrade import RebuildError, rebuild_plan

        try:
            plan = rebuild_plan(config)
        except RebuildError as exc:
            print(f"metering: {exc}", file=sys.stderr)
            return EXIT_USAGE
        rebuild, plan_described = plan.rebuild, plan.describe()
        print(f"rebuilding the replaced job's state: {json.dumps(plan_described)}", file=sys.stderr)
    settings = config.stack
    cluster = FlinkCluster(settings)
    cluster.prepare_client()
    options = SubmitOptions(
        cluster_url=cluster_url(args),
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
        print_result(result, "json")
    else:
        print(f"job id  {submission.job_id}\nweb UI  {submission.web_url}\npackage {submission.package_dir}")
        if "state" in result:
            print(f"state   {result['state']}")
    return EXIT_OK


def cmd_job_ops(args: argparse.Namespace) -> int:
    """list | status | savepoint | stop | cancel, through the cluster's REST API."""
    from infra.flink_rest import FlinkRest
    from jobs.cluster.operations import collect_status, render_jobs, render_status

    rest = FlinkRest(cluster_url(args))
    if args.action == "list":
        jobs = rest.jobs()
        print_result(jobs if args.format == "json" else render_jobs(jobs), args.format)
        return EXIT_OK
    if args.action == "status":
        status = collect_status(rest, args.job_id)
        print_result(status if args.format == "json" else render_status(status), args.format)
        return EXIT_OK if status["state"] in ("RUNNING", "FINISHED", "CREATED", "INITIALIZING") else EXIT_FAILURE
    if args.action == "cancel":
        rest.cancel(args.job_id)
        job = rest.wait_for_state(args.job_id, {"CANCELED"}, timeout_s=args.timeout)
        answer = {"job_id": args.job_id, "state": job["state"]}
        print_result(answer if args.format == "json" else f"job {args.job_id} {job['state']}", args.format)
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
        print_result({"job_id": args.job_id, "savepoint": location, "state": state}, "json")
    else:
        print(f"savepoint {location}\njob {args.job_id} {state}")
        if stop:
            print(f"resume with: metering job submit --config FILE --from-savepoint {location}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    from infra.flink import STATE_BACKENDS

    job = sub.add_parser("job", help="run the metering job")
    job_sub = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    job_run = job_sub.add_parser(
        "run",
        help="run the job on the local MiniCluster",
        description="Run the metering job in this process on a local Flink MiniCluster. Topics are created "
        "if missing. With --until-end it reads up to the topic's current end, finalizes every period "
        "(the watermark jumps to the end of time) and exits.",
    )
    job_run.add_argument("--config", help=CONFIG_HELP)
    job_run.add_argument("--until-end", action="store_true", help="bounded run: process what is there, finalize, stop")
    job_run.add_argument("--parallelism", type=int, help="override pipeline.parallelism")
    job_run.add_argument("--job-name", default="metering")
    add_format(job_run, help="output: text progress on stderr (default), or json (a summary on stdout when the job ends)")
    job_run.set_defaults(func=cmd_job_run)

    submit = job_sub.add_parser(
        "submit",
        help="package and submit the job to a Flink cluster",
        description="Build the job from the configuration here and submit it with `flink run -py`: the Python "
        "packages, a copy of the configuration and the Kafka connector jar are uploaded with it. Waits until "
        "every task runs (a savepoint that cannot be restored is reported here) and prints the job id and the "
        "web UI link.",
        epilog=ENV_HELP,
    )
    submit.add_argument("--cluster", metavar="URL", help=CLUSTER_HELP)
    submit.add_argument(
        "--config", help="configuration file (default: built-in defaults + METERING__* variables, as every command)"
    )
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
    add_format(submit, help="output: text (default), or json (job id, web UI, state, restored savepoint)")
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
        p.add_argument("--cluster", metavar="URL", help=CLUSTER_HELP)
        add_format(p)
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
