"""`metering dashboard`: serve the local web dashboard (jobs/dashboard/app.py), tokens required for its data."""

from __future__ import annotations

import argparse
import sys

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, interrupt_on_sigterm, load_config_arg


def _refuse(message: str) -> int:
    print(f"metering dashboard: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the web dashboard; in embedded mode through the chDB owner's gateway when another process owns it."""
    from clickhouse.access import AccessError
    from jobs.dashboard.guard import Guard, HostAllowlist, binding_problem, frame_ancestors, is_loopback

    problem = binding_problem(args.host, args.public)
    if problem:
        return _refuse(problem)
    config = load_config_arg(args.config, require_meters=False)
    try:
        key = config.access.key()  # without a key no token can be checked: no data is served at all
        hosts = HostAllowlist.of(args.host, args.port, args.allow_host or ())
        ancestors = frame_ancestors(args.frame_ancestors or ())
    except (AccessError, ValueError) as exc:
        return _refuse(str(exc))
    guard = Guard(key=key, revocations=config.access.tokens().revocations, hosts=hosts, ancestors=ancestors)

    from waitress import serve

    from clickhouse.gateway import GatewayReader, open_reader
    from jobs.dashboard.app import create_app

    interrupt_on_sigterm()
    with open_reader(config.storage, serve=True, access=config.access) as reader:
        if isinstance(reader, GatewayReader):
            label = f"chDB {config.storage.path} via its owner's gateway {reader.url}"
        elif config.storage.backend == "chdb":
            label = f"chDB {config.storage.path} (this process owns it and serves reads to others)"
        else:
            label = f"ClickHouse {config.storage.url}"
        app = create_app(
            reader, guard=guard, refresh_s=args.refresh, storage_label=label, rating=config.rating, rules=config.alerts.rules
        )
        shown = f"[{args.host}]" if ":" in args.host else args.host
        if not is_loopback(args.host):
            print(
                f"metering dashboard: PUBLIC on {shown}:{args.port} (--public): every data request needs a token; "
                f"accepted Host names: {hosts.describe()}; no TLS here: put a TLS proxy in front",
                flush=True,
            )
        print(
            f"metering dashboard: http://{shown}:{args.port}/#token=<token>  ({label}; "
            "tokens: `metering token create`; Ctrl-C stops)",
            flush=True,
        )
        try:
            serve(app, host=args.host, port=args.port, threads=8, ident="metering-dashboard", _quiet=True)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"metering dashboard: cannot listen on {args.host}:{args.port}: {exc}; fix: pass --port", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "dashboard",
        help="serve the web dashboard (usage so far, series, finals, pipeline health); tokens required",
        description="A web app over the same queries as `metering query`; its JSON API is in docs/dashboards.md. Every "
        "data request needs `Authorization: Bearer <token>` (`metering token create`); open the page as "
        "http://HOST:PORT/#token=<token>. Needs METERING__ACCESS__SIGNING_KEY.",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; others need --public)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument("--refresh", type=int, default=10, help="seconds between the page's automatic refreshes (default 10)")
    parser.add_argument(
        "--public",
        action="store_true",
        help="allow a --host beyond loopback (0.0.0.0, a LAN address): the dashboard is then reachable by others",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME[:PORT]",
        help="also answer requests whose Host header is NAME (any port) or NAME:PORT (repeatable); "
        "default: 127.0.0.1, localhost, [::1] and --host, with --port",
    )
    parser.add_argument(
        "--frame-ancestors",
        action="append",
        metavar="ORIGIN",
        help="let pages of ORIGIN (e.g. https://app.example.com) embed the dashboard in an iframe (repeatable); "
        "default: no framing",
    )
    parser.set_defaults(func=cmd_dashboard)
