"""`metering load`: load the job's outputs from Kafka into ClickHouse (jobs/runs.py, jobs/loader/loader.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.cli.common import (
    CONFIG_HELP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REJECTED,
    ProgressLine,
    Subcommands,
    add_format,
    interrupt_on_sigterm,
    load_config_arg,
)


def progress_text(stats: Any) -> str:
    """One progress report of the loader."""
    total = sum(stats.rows.values())
    quarantined = sum(stats.quarantined.values())
    return f"loaded {total} rows in {stats.batches} batches (retries {stats.retries}, quarantined {quarantined})"


def render_load(summary: dict[str, Any]) -> str:
    """The load summary for people."""
    rows = summary["rows"]
    lines = [f"loaded {sum(rows.values()):,} rows in {summary['batches']} batches (retries {summary['retries']})"]
    lines += [f"  {table:<24} {count:>12,}" for table, count in sorted(rows.items())]
    if summary["quarantined"]:
        lines.append("  quarantined: " + ", ".join(f"{t} {n}" for t, n in sorted(summary["quarantined"].items())))
    if "heartbeats" in summary:
        lines.append(f"  heartbeats sent {summary['heartbeats']['sent']}, failures {summary['heartbeats']['failures']}")
    return "\n".join(lines)


def cmd_load(args: argparse.Namespace) -> int:
    from jobs.runs import NotMigratedError, load_outputs, reload_quarantine

    config = load_config_arg(args.config)
    try:
        if args.reload_quarantine:
            reloaded = reload_quarantine(config, group_id=args.group, load_raw=not args.no_raw)
            print(json.dumps(reloaded))
            return EXIT_REJECTED if reloaded["still_quarantined"] else EXIT_OK
        progress = ProgressLine(sys.stderr) if args.progress else None
        interrupt_on_sigterm()
        try:
            loaded = load_outputs(
                config,
                group_id=args.group,
                load_raw=not args.no_raw,
                until_idle=args.until_idle,
                on_batch=None if progress is None else lambda stats: progress.show(progress_text(stats)),
            )
        finally:
            if progress is not None:
                progress.close()
    except NotMigratedError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    summary = loaded.as_dict()
    print(json.dumps(summary) if args.format == "json" else render_load(summary))
    if loaded.stats.quarantined:
        print(
            f"metering load: {sum(loaded.stats.quarantined.values())} record(s) could not be stored and are in the quarantine "
            "table (docs/operations.md, 'Quarantine')",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "load",
        help="load the job's outputs into ClickHouse",
        description="Consume the job's topics (read_committed) and write them to ClickHouse; offsets are "
        "committed only after ClickHouse accepted the batch. A record ClickHouse refuses for what it is (or "
        "that cannot be converted) goes to the quarantine table and loading goes on; exit 3 when any did. "
        "Owns the chDB directory while running.",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--until-idle", action="store_true", help="stop once every partition is caught up")
    parser.add_argument("--group", default="metering-loader", help="Kafka consumer group (default: metering-loader)")
    parser.add_argument("--no-raw", action="store_true", help="do not load the raw topic (the job's raw_events rows)")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="print progress to stderr (rewriting one line on a terminal, one line per batch otherwise)",
    )
    parser.add_argument(
        "--reload-quarantine",
        action="store_true",
        help="after a fix: convert and store the quarantined records again with the current code, then exit "
        "(exit 3 while some are still refused)",
    )
    add_format(
        parser,
        help="the final summary on stdout: json (default; one line: rows per table, batches, retries, quarantined, "
        "heartbeats), or text for people",
        choices=("json", "text"),
    )
    parser.set_defaults(func=cmd_load)
