"""`metering check`: run the data-quality suites (great-expectations) against ClickHouse (clickhouse/quality.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, add_format, load_config_arg


def cmd_check(args: argparse.Namespace) -> int:
    """Run the data-quality suites (clickhouse/expectations) against ClickHouse; exit 1 when an expectation fails."""
    from clickhouse import quality
    from clickhouse.gateway import open_reader
    from clickhouse.queries import QueryError, parse_time

    config = load_config_arg(args.config)
    try:
        options = quality.CheckOptions(
            suites=tuple(args.suite or ()),
            start=parse_time(args.start, "--from") if args.start else None,
            end=parse_time(args.end, "--to") if args.end else None,
            sample=args.sample,
            overrides=dict(quality.parse_override(text) for text in args.set or ()),
            docs_dir=None if args.no_docs else Path(args.docs_dir or config.stack.home / "quality").resolve(),
        )
        with open_reader(config.storage) as reader:
            report = quality.run_checks(reader, config, options)
    except (quality.QualityError, QueryError) as exc:
        print(f"metering check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(quality.render_json(report) if args.format == "json" else quality.render_text(report))
    return EXIT_OK if report.success else EXIT_FAILURE


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "check",
        help="run the data-quality suites (great-expectations) against ClickHouse; exit 1 if one fails",
        description="Run the great-expectations suites of clickhouse/expectations (raw_events, aggregates, operations) "
        "against ClickHouse, print a summary naming each failed expectation with an example offending row, write "
        "GX Data Docs (HTML) and exit 1 when an expectation failed, so schedulers (cron, Airflow) can gate on it. "
        "docs/quality.md describes every expectation.",
        epilog="Exit codes: 0 every expectation held, 1 one failed (or the storage failed), 2 usage or configuration error.",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument(
        "--suite",
        action="append",
        metavar="NAME",
        help="a suite group (raw_events, aggregates, operations) or one suite (e.g. aggregates.recompute); repeatable; "
        "default: all",
    )
    parser.add_argument("--from", dest="start", help="start of the event-time range (inclusive; RFC 3339 or a date)")
    parser.add_argument("--to", dest="end", help="end of the event-time range (exclusive)")
    add_format(parser, help="output: text summary (default), or json (every suite and expectation, with examples)")
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="check only this fraction of customers (chosen by a hash of the id) in the raw-event and aggregate suites; "
        "default 1 (all)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a suite parameter, e.g. --set max_dead_letter_rate=0.05 (repeatable)",
    )
    parser.add_argument("--docs-dir", help="where GX keeps results and Data Docs (default: .metering/quality, under stack.home)")
    parser.add_argument("--no-docs", action="store_true", help="do not write results or Data Docs")
    parser.set_defaults(func=cmd_check)
