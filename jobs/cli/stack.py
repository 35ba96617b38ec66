"""`metering stack up|status|down|reset|lock-jars`: the local Kafka broker and Flink cluster (infra/stack.py)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from jobs.cli.common import ENV_HELP, EXIT_FAILURE, EXIT_OK, Subcommands, add_format, print_result, stack

#: The command that stops what `stack up` (and the demo) started.
STOP_COMMAND = "metering stack down"


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


def cmd_stack(args: argparse.Namespace) -> int:
    local = stack()
    if args.action == "up":
        started = time.monotonic()
        print("starting Kafka broker and Flink cluster on 127.0.0.1 …", file=sys.stderr)
        local.up()
        print(f"stack is up ({time.monotonic() - started:.1f}s)", file=sys.stderr)
        print_result(local.status() if args.format == "json" else render_status(local.status()), args.format)
        return EXIT_OK
    if args.action == "status":
        status = local.status()
        print_result(status if args.format == "json" else render_status(status), args.format)
        return EXIT_OK if status["healthy"] else EXIT_FAILURE
    if args.action == "down":
        stopped = local.down()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")
        return EXIT_OK
    if args.action == "reset":
        local.reset(jars=args.jars)
        print(f"stack stopped and state wiped under {local.settings.home}" + (" (jar cache too)" if args.jars else ""))
        return EXIT_OK
    if args.action == "lock-jars":
        from infra.jars import LOCK_FILE, write_lock

        entries = write_lock(local.settings.jar_cache, log=local.settings.logs / "jars.log")
        print(f"pinned {len(entries)} jars in {LOCK_FILE}")
        return EXIT_OK
    raise AssertionError(args.action)


def register(sub: Subcommands) -> None:
    parser = sub.add_parser("stack", help="local Kafka + Flink stack on 127.0.0.1", epilog=ENV_HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("up", "start the broker and Flink cluster (idempotent) and wait until healthy"),
        ("status", "show health, PIDs, ports, web UI and log locations (exit 1 if unhealthy)"),
        ("down", "stop every process of the stack"),
        ("reset", "stop and wipe broker data, checkpoints, savepoints, chDB data and logs"),
        ("lock-jars", "re-resolve infra/maven/pom.xml and rewrite infra/jars.lock (after a version change)"),
    ):
        p = actions.add_parser(name, help=text, description=text)
        add_format(p, help="output: text (default), or json (the stack's status as JSON; up and status only)")
        if name == "reset":
            p.add_argument("--jars", action="store_true", help="also delete the jar cache")
    parser.set_defaults(func=cmd_stack)
