"""`metering produce FILE|-`: send JSON-lines usage events to Kafka (jobs/produce.py)."""

from __future__ import annotations

import argparse
import sys

from infra.kafka_security import KafkaSecurity
from jobs.cli.common import ENV_HELP, EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, Subcommands, add_format, load_config_arg, print_result
from jobs.config import Topics

DEFAULT_TOPIC = Topics().events


def produce_target(config_path: str | None, topic: str | None, bootstrap: str | None) -> tuple[str, str, KafkaSecurity]:
    """(bootstrap servers, topic, security): the flags first, then the configuration's (default: the local
    stack's broker, usage-events, PLAINTEXT). ``kafka.security`` always comes from the configuration."""
    config = load_config_arg(config_path, require_meters=False)
    return bootstrap or config.kafka.bootstrap_servers, topic or config.kafka.topics.events, config.kafka.security


def cmd_produce(args: argparse.Namespace) -> int:
    from jobs.produce import produce_file

    bootstrap, topic, security = produce_target(args.config, args.topic, args.bootstrap)
    produced = produce_file(
        args.file,
        bootstrap=bootstrap,
        topic=topic,
        partitions=args.partitions,
        validate=not args.no_validate,
        rejects=args.rejects,
        connect_timeout_s=args.connect_timeout,
        security=security,
    )
    if produced.created_topic:
        print(f"created topic {topic} ({args.partitions} partitions)", file=sys.stderr)
    summary = produced.summary
    if args.format == "json":
        print_result(summary.as_dict(), "json")
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


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "produce",
        help="send JSON-lines usage events to Kafka",
        description="Validate each line against the v1 schema and send valid events to the topic, keyed by "
        "customer_id (idempotent producer, acks=all). Invalid lines are counted and skipped, never fatal.",
        epilog=ENV_HELP,
    )
    parser.add_argument("file", metavar="FILE|-", help="JSON lines file, or - for standard input")
    parser.add_argument(
        "--config",
        help="configuration file: send to its kafka.topics.events through its kafka.bootstrap_servers "
        "(--topic and --bootstrap still override)",
    )
    parser.add_argument("--topic", help=f"target topic (default: the configuration's events topic, or {DEFAULT_TOPIC})")
    parser.add_argument("--partitions", type=int, default=4, help="partitions if the topic must be created (default: 4)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the configuration's, or the local stack's broker)")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up if the broker is unreachable for this long (default: 10)",
    )
    parser.add_argument("--no-validate", action="store_true", help="send every line as-is (tests the job's dead-letter path)")
    parser.add_argument("--rejects", metavar="FILE", help="write rejected lines with their reasons (JSON lines)")
    add_format(parser, help="summary: text (default), or json (counts per outcome and rejection reason)")
    parser.set_defaults(func=cmd_produce)
