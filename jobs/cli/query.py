"""`metering query QUESTION`: read usage, series, finals and pipeline health from ClickHouse (clickhouse/queries.py)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, load_config_arg

if TYPE_CHECKING:
    from clickhouse.gateway import GatewayRefused
    from clickhouse.queries import Reader
    from jobs.config import Config

#: Every question `metering query` answers, with what it returns (its --help lists them all).
QUESTIONS = {
    "usage": "usage so far: per meter and group the newest period, final or provisional (all customers without --customer)",
    "series": "one customer's usage over time, per --granularity bucket (requires --customer)",
    "periods": "every billing period of one customer starting in the range, final or provisional (requires --customer)",
    "finals": "invoice-ready final period totals (one customer's, or everyone's)",
    "health": "pipeline counters, loader lag and dead letters per reason",
    "customers": "customers with usage: their first and newest minute, and their meters",
    "corrections": "changes that arrived after their period was final, for the next invoice (everyone's or --customer's)",
    "dead-letters": "records the job refused, with the reason code and the original payload (everyone's or --customer's)",
    "amendments": "voids and amends the job read: outcome, what the event counted before, who asked, when and why "
    "(everyone's or --customer's)",
    "alerts": "threshold alerts (triggered, resolved, corrected) as `metering alerts run` judged them (everyone's or "
    "--customer's; docs/pricing.md, 'Alerts')",
    "cost": "per meter and group the current period's cost: final, or provisional with its lag, and the cost of the "
    "quantity projected to the period's end (docs/pricing.md; everyone's or --customer's)",
    "stream-cost": "per meter and group the current period's cost as the stream rated it: the newest cost record of "
    "`metering alerts run` (alerts.costs), with its as_of; no pricing at read time (docs/pricing.md; everyone's or "
    "--customer's)",
    "credits": "prepaid credit: remaining (settled and with pending cost), the exhaustion policy and whether the "
    "customer is over it, as of the newest `metering credits refresh` (everyone's or --customer's)",
}


def query_name(what: str, customer: str, granularity: str) -> str:
    """The named query (clickhouse/queries/NAME.sql) a question reads."""
    if what == "series":
        return f"series_{granularity}"
    if what in ("usage", "finals"):
        return f"customer_{what}" if customer else what
    if what == "periods":
        return "customer_periods"
    return what.replace("-", "_")


def output_columns(name: str) -> list[str]:
    """The columns of a named query as printed: ``group_key`` becomes ``group_by``, last (queries.with_group_by)."""
    from clickhouse.queries import columns_of

    columns = columns_of(name)
    return [c for c in columns if c != "group_key"] + (["group_by"] if "group_key" in columns else [])


def gateway_url(url: str) -> str:
    """A ``--gateway`` URL a token may be sent to: https anywhere, http to this machine only (a token is a secret)."""
    import ipaddress
    from urllib.parse import urlsplit

    from clickhouse.queries import QueryError

    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port  # (a bad port raises here)
    except ValueError as exc:
        raise QueryError(f"--gateway {url!r}: not a URL ({exc})") from None
    if parts.username or parts.password:  # (not echoed: it may hold a password)
        raise QueryError("--gateway: give http(s)://HOST[:PORT][/PATH] without a user or password; the token is sent as a header")
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise QueryError(f"--gateway {url!r}: give http(s)://HOST[:PORT][/PATH], e.g. http://127.0.0.1:8750")
    if parts.scheme == "http":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise QueryError(
                f"--gateway {url!r}: plain http would send the token in clear text over the network; use https (a TLS "
                "proxy in front of the gateway) or an SSH tunnel to the gateway's loopback port (http://127.0.0.1:PORT)"
            )
    return url.strip()


def _reader(args: argparse.Namespace, config: Config) -> AbstractContextManager[Reader]:
    """The reader of the question: a remote gateway with the configured token (--gateway), else the configured storage."""
    from clickhouse.gateway import GatewayReader, open_reader
    from clickhouse.queries import QueryError

    if not args.gateway:
        return open_reader(config.storage)
    url = gateway_url(args.gateway)
    if not config.access.token:
        raise QueryError(
            "--gateway: no access token to present: set METERING__ACCESS__TOKEN (access.token) to a token from "
            "`metering token create`"
        )
    return nullcontext(GatewayReader(url, credential=config.access.token))


def refusal_message(command: str, refused: GatewayRefused) -> str:
    """What a command prints when the gateway refused its token: the reason and the fix."""
    hint = {
        "wrong_customer": "a customer token reads its own customer only: pass --customer with its id",
        "operator_only": "this question needs an operator token (`metering token create --operator`)",
        "meter_not_allowed": "this token reads only some meters: pass --meter with one of them",
    }.get(refused.reason, "check METERING__ACCESS__TOKEN: `metering token list` shows whether it expired or was revoked")
    return f"{command}: refused ({refused.status} {refused.reason}): {refused}\n  fix: {hint}"


def cmd_query(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from clickhouse import billing, queries
    from clickhouse.gateway import GatewayRefused

    # cost prices with the configuration's rating, which names meters: a file is needed even with --gateway
    config = load_config_arg(args.config, require_meters=not args.gateway or args.what == "cost")
    try:
        scope = queries.Scope(
            customer=args.customer or "",
            meter=args.meter or "",
            start=queries.parse_time(args.start, "--from") if args.start else None,
            end=queries.parse_time(args.end, "--to") if args.end else None,
            granularity=args.granularity,
        )
        with _reader(args, config) as reader:
            if args.what == "health":
                row = queries.health(reader)
                sys.stdout.write(render_health(row, args.format))
                return EXIT_OK
            questions = {
                "usage": queries.usage,
                "series": queries.series,
                "finals": queries.finals,
                "periods": queries.periods,
            }
            if args.what == "cost":
                at = queries.parse_time(args.at, "--at") if args.at else datetime.now(UTC)
                rows = billing.cost(reader, config.rating, customer=scope.customer, meter=scope.meter, at=at)
            elif args.what in questions:
                rows = questions[args.what](reader, scope)
            elif args.what == "credits":
                rows = reader.run("credits", {"customer": scope.customer})
            elif args.what == "customers":
                rows = queries.customers(reader)
            elif args.what in ("alerts", "stream-cost"):
                rows = reader.run(query_name(args.what, "", ""), {"customer": scope.customer, "meter": scope.meter})
            else:  # corrections, dead-letters, amendments: everyone's or one customer's
                rows = reader.run(args.what.replace("-", "_"), {"customer": scope.customer})
                rows = [r for r in rows if not scope.meter or r.get("meter") == scope.meter]
    except queries.QueryError as exc:
        print(f"metering query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayRefused as refused:
        print(refusal_message("metering query", refused), file=sys.stderr)
        return EXIT_FAILURE
    columns = (
        billing.COST_COLUMNS if args.what == "cost" else output_columns(query_name(args.what, scope.customer, scope.granularity))
    )
    sys.stdout.write(queries.render([queries.with_group_by(r) for r in rows], args.format, columns))
    return EXIT_OK


def render_health(row: dict[str, Any], fmt: str) -> str:
    from clickhouse.queries import render

    if fmt in ("json", "jsonl"):
        return json.dumps(row, indent=2 if fmt == "json" else None) + "\n"
    counters = {k: v for k, v in row.items() if k != "dead_letter_reasons"}
    if fmt == "csv":
        return render([counters], "csv")
    width = max(len(k) for k in counters)
    text = "".join(f"{k.ljust(width)}  {'-' if v is None else v}\n" for k, v in counters.items())
    return text + "\ndead letters by reason:\n" + render(row["dead_letter_reasons"], "table")


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "query",
        help="read usage, series, finals and pipeline health from ClickHouse",
        description="Customer-scoped questions (usage, series, periods, finals with --customer) read views that "
        "cannot return another customer's rows. Times are RFC 3339 (2026-03-01T00:00:00Z) or dates.",
    )
    parser.add_argument("what", choices=tuple(QUESTIONS), help="; ".join(f"{n}: {t}" for n, t in QUESTIONS.items()))
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="ask the query gateway at URL instead of the configured storage, presenting the access token of "
        "METERING__ACCESS__TOKEN (access.token): https, or http to this machine (e.g. an SSH tunnel to the owner's "
        "loopback gateway); a customer token reads its own --customer only",
    )
    parser.add_argument("--customer", help="only this customer (required for series and periods)")
    parser.add_argument("--meter", help="only this meter")
    parser.add_argument("--from", dest="start", help="start of the range (inclusive); for usage: only meters used since then")
    parser.add_argument("--to", dest="end", help="end of the range (exclusive)")
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="cost: the instant the lag and the projection are computed at (default: now), for reproducible reports",
    )
    parser.add_argument("--granularity", choices=("minute", "hour", "day"), default="hour", help="series buckets (default hour)")
    parser.add_argument(
        "--format",
        choices=("table", "json", "jsonl", "csv"),
        default="table",
        help="table for people (default); json (one array), jsonl (one object per line) or csv (a header line, "
        "then rows) for scripts",
    )
    parser.set_defaults(func=cmd_query)
