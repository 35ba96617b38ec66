"""`metering dashboard`: serve the local web dashboard (jobs/dashboard/app.py)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, Subcommands, interrupt_on_sigterm, load_config_arg


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the web dashboard; in embedded mode through the chDB owner's gateway when another process owns it."""
    from waitress import serve

    from clickhouse.gateway import GatewayReader, open_reader
    from jobs.dashboard.app import create_app

    config = load_config_arg(args.config)
    interrupt_on_sigterm()
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


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "dashboard",
        help="serve the local web dashboard (usage so far, series, finals, pipeline health)",
        description="A local web app over the same queries as `metering query`; its JSON API is in docs/dashboards.md.",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument("--refresh", type=int, default=10, help="seconds between the page's automatic refreshes (default 10)")
    parser.set_defaults(func=cmd_dashboard)
