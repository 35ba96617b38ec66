"""`metering migrate [--status]`: apply the ClickHouse migrations (clickhouse/migrate.py)."""

from __future__ import annotations

import argparse

from jobs.cli.common import (
    ENV_HELP,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    add_format,
    load_config_arg,
    print_result,
)


def cmd_migrate(args: argparse.Namespace) -> int:
    from clickhouse.client import open_storage
    from clickhouse.migrate import migrate, status

    settings = load_config_arg(args.config, require_meters=False).storage
    with open_storage(settings) as storage:
        if args.status:
            states = status(storage)
            if args.format == "json":
                print_result([s.__dict__ for s in states], "json")
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


def register(sub: Subcommands) -> None:
    parser = sub.add_parser("migrate", help="apply pending ClickHouse migrations (clickhouse/migrations)", epilog=ENV_HELP)
    parser.add_argument("--status", action="store_true", help="list applied/pending migrations instead of applying")
    parser.add_argument(
        "--config",
        help="migrate the storage of this configuration file (default: built-in defaults + METERING__* variables)",
    )
    add_format(parser, help="output: text (default), or json (the migrations' states, with --status)")
    parser.set_defaults(func=cmd_migrate)
