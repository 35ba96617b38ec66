"""`metering heartbeat`: move the watermark while the events topic is quiet (jobs/loader/heartbeat.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.cli.common import (
    CONFIG_HELP,
    ENV_HELP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_format,
    interrupt_on_sigterm,
    load_config_arg,
)


def _show(summary: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(summary))
    elif "rounds" in summary:
        print(
            f"heartbeats to {summary['topic']}: {summary['rounds']} rounds, "
            f"{summary['sent']} sent, {summary['failures']} failures"
        )
    else:
        print(f"heartbeat sent to {summary['partitions']} partition(s) of {summary['topic']}")


def cmd_heartbeat(args: argparse.Namespace) -> int:
    from jobs.loader.heartbeat import HeartbeatSender
    from udfs.durations import parse_duration

    config = load_config_arg(args.config)
    topic = config.kafka.topics.events
    sender = HeartbeatSender(config.kafka.bootstrap_servers, topic, security=config.kafka.security)
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
        _show({"topic": topic, "partitions": sent}, args.format)
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
    interrupt_on_sigterm()
    try:
        sender.run(interval)
    except KeyboardInterrupt:
        pass
    finally:
        sender.stop()
    stats = sender.stats
    _show({"topic": topic, "rounds": stats.rounds, "sent": stats.records, "failures": stats.failures}, args.format)
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "heartbeat",
        help="keep the watermark moving while the events topic is quiet",
        description="Send a heartbeat record to every partition of the events topic, every "
        "pipeline.heartbeat_interval until interrupted, or once. The job reads its timestamp like an "
        "event's and drops it, so periods finalize while no events arrive (docs/semantics.md). "
        "`metering load` already does this while it runs unbounded; use this command when it does not.",
        epilog=ENV_HELP,
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--once", action="store_true", help="send one round and exit (for cron)")
    parser.add_argument("--interval", help="override pipeline.heartbeat_interval (e.g. 10s)")
    add_format(
        parser,
        help="the summary on stdout when it ends: json (default; one line: topic, partitions or rounds/sent/failures), "
        "or text for people",
        choices=("json", "text"),
    )
    parser.set_defaults(func=cmd_heartbeat)
