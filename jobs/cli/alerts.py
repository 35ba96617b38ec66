"""`metering alerts`: evaluate threshold alerts from the job's topics (jobs/alerts/), resend failed webhooks."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from jobs.cli.common import (
    CONFIG_HELP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ProgressLine,
    Subcommands,
    add_format,
    interrupt_on_sigterm,
    load_config_arg,
)


def _progress(stats: Any) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats.kinds.items())) or "none"
    return f"read {stats.records} records in {stats.transactions} transactions; alerts: {kinds}; cost records: {stats.costs}"


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.alerts.service import AlertService
    from jobs.alerts.webhooks import Backoff

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = load_config_arg(args.config)
    if not config.alerts.rules and not config.alerts.costs:
        print("metering alerts run: no alerts.rules and alerts.costs is off: nothing to evaluate", file=sys.stderr)
        return EXIT_USAGE
    service = AlertService(config, backoff=Backoff(args.webhook_attempts, args.webhook_backoff))
    progress = ProgressLine(sys.stderr) if args.progress else None
    interrupt_on_sigterm()
    try:
        service.run(
            on_batch=None if progress is None else lambda stats: progress.show(_progress(stats)), until_idle=args.until_idle
        )
    except KeyboardInterrupt:
        pass
    finally:
        if progress is not None:
            progress.close()
    stats = service.stats
    summary = {
        "records": stats.records,
        "transactions": stats.transactions,
        "alerts": stats.kinds,
        "costs": stats.costs,
        "aborted": stats.aborted,
    }
    print(json.dumps(summary) if args.format == "json" else _progress(stats))
    return EXIT_OK


def cmd_redeliver(args: argparse.Namespace) -> int:
    from jobs.alerts.service import dead_letters, redeliver
    from jobs.alerts.webhooks import Backoff

    config = load_config_arg(args.config)
    if args.list:
        letters = dead_letters(config)
        if args.format == "json":
            print(json.dumps(letters))
        else:
            for letter in letters.values():
                alert = letter["alert"]
                print(f"{alert['id']}  {alert['kind']}  rule {alert['rule']}  {alert['customer_id']}  {letter['error']}")
        return EXIT_OK
    delivered, failed = redeliver(config, Backoff(args.attempts, args.backoff))
    print(
        json.dumps({"delivered": delivered, "still_dead": failed})
        if args.format == "json"
        else f"delivered {delivered}, still dead {failed}"
    )
    return EXIT_FAILURE if failed else EXIT_OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "alerts",
        help="threshold alerts: evaluate them from the job's topics, resend failed webhooks",
        description="Threshold alerts on usage, entitlement, spend and projected spend (docs/pricing.md, 'Alerts').",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="evaluate the alert rules until stopped (Ctrl-C, SIGTERM)",
        description="Consume the aggregates, finals and corrections topics (read_committed) and write alert events "
        "to the alerts topic, in one Kafka transaction with the consumer offsets and the evaluator's state: a kill -9 "
        "anywhere neither loses nor repeats an alert. One instance per events topic. Webhooks are sent on their own "
        "thread, signed (Standard Webhooks), retried, then dead-lettered.",
    )
    run.add_argument("--config", help=CONFIG_HELP)
    run.add_argument("--progress", action="store_true", help="print progress to stderr after each transaction")
    run.add_argument("--verbose", action="store_true", help="log restores, aborted transactions and webhook attempts")
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="stop once every input partition is read to its end (a backfill, a batch run); default: run until stopped",
    )
    run.add_argument("--webhook-attempts", type=_positive, default=5, help="tries per webhook before its dead letter (5)")
    run.add_argument("--webhook-backoff", type=float, default=0.5, help="seconds before the first retry, doubling up to 30 (0.5)")
    add_format(run)
    run.set_defaults(func=cmd_run)
    again = actions.add_parser(
        "redeliver",
        help="resend the webhooks that failed every retry (exit 1 while some still fail)",
        description="Resend each dead-lettered webhook (kept on the alerts state topic) with retries; a delivered one "
        "is removed. --list shows them without sending.",
    )
    again.add_argument("--config", help=CONFIG_HELP)
    again.add_argument("--list", action="store_true", help="list the dead letters, send nothing")
    again.add_argument("--attempts", type=_positive, default=5, help="tries per webhook (5)")
    again.add_argument("--backoff", type=float, default=0.5, help="seconds before the first retry, doubling up to 30 (0.5)")
    add_format(again)
    again.set_defaults(func=cmd_redeliver)
