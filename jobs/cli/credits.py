"""`metering credits grant|void|list|show|refresh|publish`: the prepaid credit ledger and its balances (clickhouse/credits.py).

grant and void record on the ledger topic (the ledger's source of truth) without opening the storage;
the loader copies the topic into ``credit_ledger``, which the reads use.

Why one module: one command group, whose subcommands share the operator check, the two ways a
write reaches the ledger (the topic; the storage) with their exit codes, and one argument parser.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clickhouse.tables import LEDGER_COLUMNS
from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, load_config_arg
from jobs.cli.query import _reader, refusal_message

#: What `credits list` prints: a ledger row's columns, as stored.
LIST_COLUMNS = LEDGER_COLUMNS


def _now() -> datetime:
    return datetime.now(UTC)


class PublishError(RuntimeError):
    """The ledger topic did not acknowledge a ledger row."""


def publisher(config: Any, timeout_s: float = 30.0) -> Callable[[Any], None]:
    """What records a ledger row: publishes it to the ledger topic, the ledger's source of truth, acknowledged by
    every in-sync replica (``acks=all``, idempotent) before it returns. The loader copies it into ``credit_ledger``;
    the alert evaluator reads it from there too."""

    def publish(row: Any) -> None:
        from jobs.alerts.service import publish_ledger

        error = publish_ledger(config, [row.record()], timeout_s)
        if error is not None:
            raise PublishError(error)

    return publish


def recorded_ledger(config: Any) -> list[Any]:
    """The ledger as recorded: every row of the ledger topic (read to its end), oldest first; the storage is not
    opened, so this works while the loader owns an embedded chDB directory. Raises ``LedgerUnavailable``."""
    from clickhouse.credits import LedgerRow
    from jobs.alerts.service import read_ledger

    return [LedgerRow.from_record(record) for record in read_ledger(config)]


def _operator(args: argparse.Namespace, config: Any, what: str) -> str | None:
    """Who acts (``require_operator``); None, with the refusal printed, for a token that is not an operator's."""
    from clickhouse.access import AccessDenied
    from clickhouse.credits import require_operator

    try:
        return require_operator(config.access, what)
    except AccessDenied as exc:
        print(
            f"metering credits {args.credits_command}: refused ({exc.status} {exc.reason}): {exc}\n  fix: credit is "
            "granted, voided and refreshed by the operator: unset METERING__ACCESS__TOKEN or present an operator token",
            file=sys.stderr,
        )
        return None


def _record(args: argparse.Namespace, what: str, action: Any, retry: str) -> int:
    """Run ``action(recorded, config, who)``, which checks a new ledger row against the ledger as recorded on the
    ledger topic and publishes it, as an operator. The storage is not opened (the loader writes ``credit_ledger``).

    ``retry``: how to run it again safely when the row may or may not have reached the topic."""
    from clickhouse.credits import CreditError
    from clickhouse.queries import QueryError
    from jobs.alerts.service import LedgerUnavailable

    config = load_config_arg(args.config)
    command = f"metering credits {args.credits_command}"
    who = _operator(args, config, what)
    if who is None:
        return EXIT_FAILURE
    try:
        recorded = recorded_ledger(config)
    except LedgerUnavailable as exc:
        print(
            f"{command}: {exc}; nothing recorded\n  fix: start Kafka (kafka.bootstrap_servers) and run it again", file=sys.stderr
        )
        return EXIT_FAILURE
    try:
        code: int = action(recorded, config, who)
        return code
    except (CreditError, QueryError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PublishError as exc:
        print(f"{command}: {exc}\n  fix: start Kafka (kafka.bootstrap_servers) and {retry}", file=sys.stderr)
        return EXIT_FAILURE


def _write(args: argparse.Namespace, what: str, action: Any) -> int:
    """Run a write ``action(storage, config, who)`` as an operator on the configured storage (as `metering replay`)."""
    from clickhouse.client import open_storage
    from clickhouse.credits import CreditError
    from clickhouse.queries import QueryError
    from jobs.alerts.service import LedgerUnavailable
    from jobs.runs import NotMigratedError, check_migrated

    config = load_config_arg(args.config)
    command = f"metering credits {args.credits_command}"
    who = _operator(args, config, what)
    if who is None:
        return EXIT_FAILURE
    with open_storage(config.storage) as storage:
        try:
            check_migrated(storage)
        except NotMigratedError as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            code: int = action(storage, config, who)
            return code
        except (CreditError, QueryError) as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (PublishError, LedgerUnavailable) as exc:
            print(f"{command}: {exc}\n  fix: start Kafka (kafka.bootstrap_servers) and run it again", file=sys.stderr)
            return EXIT_FAILURE


def _time_arg(text: str | None, option: str) -> datetime | None:
    from clickhouse.queries import parse_time

    return parse_time(text, option) if text else None


def cmd_grant(args: argparse.Namespace) -> int:
    from clickhouse import credits
    from clickhouse.queries import QueryError, plain
    from udfs.credits import Rollover

    try:
        effective = _time_arg(args.effective, "--effective")
        expires = _time_arg(args.expires, "--expires")
    except QueryError as exc:
        print(f"metering credits grant: {exc}", file=sys.stderr)
        return EXIT_USAGE
    grant_id = args.grant_id or credits.new_grant_id()

    def action(recorded: list[Any], config: Any, who: str) -> int:
        now = _now()
        row = credits.grant(
            config.rating,
            recorded,
            customer=args.customer,
            amount=args.amount,
            priority=args.priority,
            effective_at=effective or now,
            expires_at=expires,
            rollover=Rollover(args.rollover),
            reason=args.reason or "",
            recorded_by=who,
            now=now,
            grant_id=grant_id,
            publish=publisher(config),
        )
        print(
            f"granted {row.grant_id}: {row.amount:f} {row.currency} to {row.customer}, priority {row.priority}, from "
            f"{plain(row.effective_at)}"
            + (f" until {plain(row.expires_at)}" if row.expires_at else "")
            + f", rollover {row.rollover}"
        )
        return EXIT_OK

    retry = f"run it again with --grant-id {grant_id} (refused as existing if the row did reach the topic after all)"
    return _record(args, "granting credit", action, retry)


def cmd_void(args: argparse.Namespace) -> int:
    from clickhouse import credits
    from clickhouse.queries import QueryError, plain

    try:
        at = _time_arg(args.at, "--at")
    except QueryError as exc:
        print(f"metering credits void: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def action(recorded: list[Any], config: Any, who: str) -> int:
        now = _now()
        row = credits.void(
            recorded,
            grant_id=args.grant_id,
            reason=args.reason,
            at=at or now,
            recorded_by=who,
            now=now,
            publish=publisher(config),
        )
        print(f"voided {row.grant_id} of {row.customer} from {plain(row.effective_at)}")
        return EXIT_OK

    return _record(args, "voiding credit", action, "run it again (refused as already voided if the row did reach the topic)")


def cmd_publish(args: argparse.Namespace) -> int:
    from clickhouse.credits import ledger
    from clickhouse.queries import StorageReader
    from jobs.alerts.service import publish_ledger
    from jobs.topics import credit_ledger_topic

    def action(storage: Any, config: Any, who: str) -> int:
        on_topic = {(r.grant_id, r.action) for r in recorded_ledger(config)}
        stored = ledger(StorageReader(storage), args.customer or "")
        missing = [row for row in stored if (row.grant_id, row.action) not in on_topic]
        error = publish_ledger(config, [row.record() for row in missing]) if missing else None
        if error is not None:
            raise PublishError(error)
        print(
            f"published {len(missing)} ledger row(s) to {credit_ledger_topic(config)} "
            f"({len(stored) - len(missing)} already on it)"
        )
        return EXIT_OK

    return _write(args, "publishing the credit ledger", action)


def cmd_refresh(args: argparse.Namespace) -> int:
    from clickhouse import credits
    from clickhouse.queries import QueryError, plain
    from udfs.durations import parse_duration

    every = None
    if args.every:
        try:
            every = parse_duration(args.every)
        except ValueError as exc:
            print(f"metering credits refresh: --every: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        at = _time_arg(args.at, "--at")
    except QueryError as exc:
        print(f"metering credits refresh: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def action(storage: Any, config: Any, who: str) -> int:
        pause = None if args.every is None else every or config.credits.refresh_every

        def refresh_once(now: datetime) -> list[list[Any]]:
            return credits.refresh(
                storage,
                config.rating,
                lambda customer: config.billing.policy_for(customer).cycle,
                config.credits,
                at=at or now,
                customers=args.customer or (),
                now=now,
            )

        while True:
            try:
                rows = refresh_once(_now())
            except Exception as exc:  # in a loop one failed refresh must not end it: say so, try at the next tick
                if pause is None:
                    raise
                print(f"metering credits refresh: this refresh failed, the next one runs in {pause}: {exc}", file=sys.stderr)
                rows = []
            for row in rows:
                print(
                    f"{plain(row[2])} {row[0]}: remaining {plain(row[7])} {row[1]} (settled {plain(row[6])}), "
                    f"{row[12]}{' ' + plain(row[13]) + '%' if row[13] is not None else ''}, "
                    f"{'OVER' if row[14] else 'within'}",
                    flush=True,
                )
            if pause is None:
                return EXIT_OK
            time.sleep(pause.total_seconds())

    try:
        return _write(args, "refreshing credit balances", action)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from clickhouse import queries
    from clickhouse.gateway import GatewayRefused

    config = load_config_arg(args.config, require_meters=not args.gateway)
    try:
        with _reader(args, config) as reader:
            rows = reader.run("credit_ledger", {"customer": args.customer or ""})
    except queries.QueryError as exc:
        print(f"metering credits list: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayRefused as refused:
        print(refusal_message("metering credits list", refused), file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(queries.render(rows, args.format, LIST_COLUMNS))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from clickhouse import credits, queries
    from clickhouse.gateway import GatewayRefused
    from udfs.credits import explain

    config = load_config_arg(args.config)
    try:
        at = _time_arg(args.at, "--at") or _now()
        with _reader(args, config) as reader:
            cycle = config.billing.policy_for(args.customer).cycle
            currency, balance, _ = credits.balance_of(reader, config.rating, cycle, args.customer, at)
        _, minor_units = credits.currency_of(config.rating, args.customer)
    except (queries.QueryError, credits.CreditError) as exc:
        print(f"metering credits show: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayRefused as refused:
        print(refusal_message("metering credits show", refused), file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(explain(balance, currency, config.credits.policy_for(args.customer), minor_units))
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "credits",
        help="prepaid credits: grant, list, void, and refresh the balances a calling service reads",
        description="An append-only ledger of credit grants per customer and the balances burned down by each "
        "period's invoiced cost (docs/pricing.md, 'Prepaid credits'). grant and void record on the ledger topic, "
        "its source of truth, which `metering load` copies into ClickHouse: they need Kafka, not the storage. "
        "refresh and publish open the storage itself (as `metering replay`). All four are operator actions (a "
        "customer token is refused). list, show and `metering query credits` read, through --gateway with a token too.",
    )
    commands = parser.add_subparsers(dest="credits_command", required=True, metavar="ACTION")

    grant = commands.add_parser("grant", help="add credit to a customer (a new row on the ledger topic)")
    grant.add_argument("--customer", required=True, help="the customer id")
    grant.add_argument("--amount", required=True, help="the credit, in the currency of the customer's plan (e.g. 250.00)")
    grant.add_argument("--priority", type=int, default=10, help="burn order: smaller first (default 10)")
    grant.add_argument("--expires", metavar="TIME", help="when the unused credit expires (default: never)")
    grant.add_argument("--effective", metavar="TIME", help="when the credit takes effect (default: now)")
    grant.add_argument(
        "--rollover",
        choices=("carry", "period"),
        default="carry",
        help="carry (default): unused credit carries into the next periods; period: it lapses at the end of the "
        "billing period the grant takes effect in",
    )
    grant.add_argument("--grant-id", help="the grant's id (default: a new random one)")
    grant.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    grant.add_argument("--config", help=CONFIG_HELP)
    grant.set_defaults(func=cmd_grant)

    void = commands.add_parser("void", help="void a grant (a new row on the ledger topic; what it had not covered is voided)")
    void.add_argument("grant_id", metavar="GRANT_ID")
    void.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    void.add_argument("--at", metavar="TIME", help="when the void takes effect (default: now)")
    void.add_argument("--config", help=CONFIG_HELP)
    void.set_defaults(func=cmd_void)

    publish = commands.add_parser(
        "publish",
        help="move the stored ledger rows the ledger topic lacks onto it (once, when upgrading)",
        description="The ledger topic is the ledger: grant and void check against it alone. Rows recorded in "
        "credit_ledger before it was (or with the former credits.publish: false) are published, and only those; "
        "rows already on the topic are left alone. Opens the storage (stop the loader of an embedded chDB).",
    )
    publish.add_argument("--customer", help="only this customer's rows")
    publish.add_argument("--config", help=CONFIG_HELP)
    publish.set_defaults(func=cmd_publish)

    listing = commands.add_parser("list", help="the ledger's rows: grants and voids, oldest first")
    listing.add_argument("--customer", help="only this customer (a customer token must give its own)")
    listing.add_argument("--config", help=CONFIG_HELP)
    listing.add_argument(
        "--gateway",
        metavar="URL",
        help="ask the query gateway at URL with the access token of METERING__ACCESS__TOKEN (as `metering query --gateway`)",
    )
    listing.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table", help="output format")
    listing.set_defaults(func=cmd_list)

    show = commands.add_parser(
        "show",
        help="one customer's balance computed now, grant by grant (reads only; nothing is written)",
        description="Prices the customer's periods and burns the grants down as `refresh` does, and prints each grant's "
        "settled and pending consumption, remaining, expired and voided credit, in burn order.",
    )
    show.add_argument("--customer", required=True, help="the customer id (a customer token must give its own)")
    show.add_argument("--at", metavar="TIME", help="the balance's as-of instant (default: now)")
    show.add_argument("--config", help=CONFIG_HELP)
    show.add_argument(
        "--gateway",
        metavar="URL",
        help="ask the query gateway at URL with the access token of METERING__ACCESS__TOKEN (as `metering query --gateway`)",
    )
    show.set_defaults(func=cmd_show)

    refresh = commands.add_parser(
        "refresh",
        help="compute the balances and write them to credit_balances (once, or --every DURATION)",
        description="Prices every period of each customer with credit (in the ledger or in credits.customers) and "
        "burns the grants down (udfs/credits.py), then writes one credit_balances row per customer. The balance is "
        "as fresh as the last refresh and the provisional totals it read: docs/pricing.md, 'Staleness'.",
    )
    refresh.add_argument("--customer", action="append", metavar="ID", help="only this customer (repeatable)")
    refresh.add_argument("--at", metavar="TIME", help="the balance's as-of instant (default: now)")
    refresh.add_argument(
        "--every",
        metavar="DURATION",
        nargs="?",
        const="",
        help="refresh again every DURATION (e.g. 5m; alone: credits.refresh_every, default 5m) until interrupted",
    )
    refresh.add_argument("--config", help=CONFIG_HELP)
    refresh.set_defaults(func=cmd_refresh)
