"""`metering serve`: the HTTP ingestion API (jobs/ingest/, docs/ingest.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from jobs.cli.common import CONFIG_HELP, ENV_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, load_config_arg


def binding_problem(host: str, public: bool) -> str | None:
    """Why ``host`` may not be bound (beyond loopback without ``--public``), with the fix; None when it may."""
    from jobs.dashboard.guard import is_loopback

    if is_loopback(host) or public:
        return None
    return (
        f"--host {host} listens beyond this machine: anyone who can reach it may try API keys. "
        "Fix: add --public to mean it (put TLS in front), or keep the default 127.0.0.1"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from jobs.ingest.server import json_logging, open_service, stop_on_signals
    from jobs.topics import ensure_topic

    config = load_config_arg(args.config)
    host = args.host or config.ingest.host
    port = args.port or config.ingest.port
    problem = binding_problem(host, args.public)
    if problem:
        print(f"metering serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    kafka = config.kafka
    ensure_topic(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security)
    json_logging()
    log = logging.getLogger("metering.ingest")
    try:
        service, sink = open_service(config, host, port, reuse_port=args.reuse_port)
    except OSError as exc:
        print(f"metering serve: cannot listen on {host}:{port}: {exc}; fix: pass --port", file=sys.stderr)
        return EXIT_FAILURE
    stop_on_signals(service)
    log.info(
        "listening",
        extra={"fields": {"url": f"http://{host}:{service.port}", "topic": kafka.topics.events, "keys": str(config.ingest.keys)}},
    )
    service.serve()
    left = sink.close()
    log.info("stopped", extra={"fields": {"undelivered": left}})
    return EXIT_FAILURE if left else EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "serve",
        help="the HTTP ingestion API: POST /v1/events with an API key (docs/ingest.md)",
        description="Take usage events over HTTP (one event, a JSON array, JSON lines, CloudEvents; gzip), judge each "
        "by the job's definition of a valid event and answer once Kafka has acknowledged the accepted ones. "
        "API keys: `metering keys create`. SIGTERM drains the requests in flight, then flushes the producer.",
        epilog=ENV_HELP,
    )
    parser.add_argument("--config", help=CONFIG_HELP + "; its meters decide unknown_meter")
    parser.add_argument("--host", help="interface to listen on (default: ingest.host, 127.0.0.1; others need --public)")
    parser.add_argument("--port", type=int, help="port (default: ingest.port, 8090; 0 picks a free one)")
    parser.add_argument("--public", action="store_true", help="allow a --host beyond loopback (others can then reach the API)")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other `metering serve --reuse-port` processes of this user (SO_REUSEPORT: the kernel "
        "spreads connections over them); one process is bound by one core's worth of Python (docs/ingest.md, 'Several workers')",
    )
    parser.set_defaults(func=cmd_serve)
