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

    settings = _storage_settings()
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


# --- demo ------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Bring the stack up, migrate, send the example corpus, show the result."""
    from schemas.validate import SCHEMA_DIR

    stack = _stack()
    t0 = time.monotonic()
    print("1/4 starting the local stack (Kafka KRaft broker, Flink JobManager + TaskManager) …", flush=True)
    stack.up()
    print(f"    up in {time.monotonic() - t0:.1f}s", flush=True)
    print("2/4 applying ClickHouse migrations (embedded chDB) …", flush=True)
    cmd_migrate(argparse.Namespace(status=False, format="text"))
    print("3/4 producing the schema example corpus (valid and invalid events) …", flush=True)
    corpus = Path(args.workdir) / "demo-events.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    examples = sorted((SCHEMA_DIR / "examples" / "v1").glob("*/*.json"))
    corpus.write_bytes(b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in examples))
    code = cmd_produce(
        argparse.Namespace(
            file=str(corpus),
            topic="usage-events",
            partitions=4,
            bootstrap=None,
            no_validate=False,
            rejects=str(corpus.with_suffix(".rejects.jsonl")),
            format="text",
            connect_timeout=10.0,
        )
    )
    if code not in (EXIT_OK, EXIT_REJECTED):
        return code
    print("4/4 stack status:", flush=True)
    status = stack.status()
    print(render_status(status))
    print("\nThe metering job itself is not built yet; `metering stack down` stops everything.")
    return EXIT_OK if status["healthy"] else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
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

    demo = sub.add_parser("demo", help="bring everything up and run the end-to-end demo")
    demo.add_argument("--workdir", default=".metering/demo", help="where generated demo files go")
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
