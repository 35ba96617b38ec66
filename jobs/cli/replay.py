"""`metering replay`: recompute whole closed billing periods from raw_events as a new revision (jobs/replay.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, add_format, load_config_arg


def _replay_progress(progress: Any) -> None:
    width = 30
    filled = width * progress.done // max(progress.total, 1)
    line = (
        f"\rreplay {progress.stage} [{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.total} customers"
        f"  {progress.events:,} event decisions  {progress.events_per_second:,.0f}/s"
    )
    print(line, end="" if sys.stderr.isatty() else "\n", file=sys.stderr, flush=True)


def render_replay(report: Any) -> str:
    """The replay's summary and diff report (text)."""
    from clickhouse.queries import plain
    from udfs.periods import from_epoch_millis

    head = "DRY RUN (nothing written)" if report.dry_run else f"revision {report.revision} committed"
    lines = [
        f"replay: {head}",
        f"  source: {report.source} (cut: "
        + ", ".join(f"partition {p} <= offset {o}" for p, o in sorted(report.cut.items()))
        + ")",
        f"  scope: {len(report.customers)} customer(s), {len(report.scope)} (customer, meter, period) key(s),"
        " whole closed periods",
        f"  events: {report.events_examined:,} examined, {report.events_counted:,} counted"
        + "".join(f", {n:,} {reason}" for reason, n in sorted(report.refusals.items())),
        f"  wrote: {report.segments:,} minute segments, {report.finals:,} finals" + (" (not written)" if report.dry_run else ""),
        f"  speed: {report.seconds:.1f} s, {report.events_per_second:,.0f} events/s, "
        f"{report.realtime_ratio:,.0f}x real time over the requested range",
    ]
    if not report.adjustments:
        lines.append("  adjustments: none (every final in scope is unchanged)")
        return "\n".join(lines)
    lines.append(f"  adjustments ({len(report.adjustments)}):")
    header = ("customer", "meter", "group", "period", "old", "new", "delta", "events", "absorbed corrections")
    rows = [header]
    for a in report.adjustments:
        rows.append(
            (
                a.customer_id,
                a.meter,
                a.group_key,
                plain(from_epoch_millis(a.period_start_ms))[:10],
                "-" if a.old_total is None else plain(a.old_total),
                "-" if a.new_total is None else plain(a.new_total),
                "" if a.delta is None else plain(a.delta),
                f"{a.old_event_count}->{a.new_event_count}",
                str(a.superseded_corrections) if a.superseded_corrections else "",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        lines.append("    " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def cmd_replay(args: argparse.Namespace) -> int:
    """Recompute whole closed periods from raw_events as a new revision, with adjustments and a diff report."""
    from clickhouse.client import open_storage
    from clickhouse.queries import QueryError, parse_time
    from jobs.replay import ReplayError, ReplayRequest, replay
    from jobs.runs import NotMigratedError, check_migrated

    config = load_config_arg(args.config)
    try:
        request = ReplayRequest(
            range_from=parse_time(args.start, "--from"),
            range_to=parse_time(args.end, "--to"),
            customers=tuple(args.customer or ()),
            meters=tuple(args.meter or ()),
            reason=args.reason or "",
            dry_run=args.dry_run,
        )
    except QueryError as exc:
        print(f"metering replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with open_storage(config.storage) as storage:
        try:
            check_migrated(storage)
        except NotMigratedError as exc:
            print(f"metering replay: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            report = replay(storage, config, request, None if args.quiet else _replay_progress)
        except ReplayError as exc:
            print(f"\nmetering replay: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.format == "json":
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render_replay(report))
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "replay",
        help="recompute whole closed billing periods from raw_events as a new revision (after a bug)",
        description="Recompute the aggregates of every billing period that overlaps [--from, --to) from the immutable "
        "raw_events with the given (possibly fixed) configuration, and write them as a new revision that readers "
        "switch to atomically; earlier revisions stay stored. Changed finals are never rewritten silently: each one "
        "gets an adjustment record (old total, new total, revision, --reason) and a line in the diff report. Only "
        "closed periods (end + grace behind the live watermark) are replayed. In embedded mode the replay needs the "
        "chDB directory: stop `metering load` while it runs (the job's output waits in Kafka). docs/replay.md.",
        epilog="Exit codes: 0 replayed (or dry run done), 1 storage failure, 2 a replay that cannot run as asked "
        "(the message says why).",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--from", dest="start", required=True, help="start of the event-time range (RFC 3339 or a date)")
    parser.add_argument("--to", dest="end", required=True, help="end of the event-time range (exclusive)")
    parser.add_argument("--customer", action="append", metavar="ID", help="only this customer (repeatable; default: all)")
    parser.add_argument("--meter", action="append", metavar="NAME", help="only this meter (repeatable; default: all)")
    parser.add_argument("--reason", help="why (recorded with the revision and every adjustment; required unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="compute and print the diff, write nothing")
    add_format(parser, help="output: text summary and diff (default), or json (the report: revision, counts, adjustments)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_replay)
