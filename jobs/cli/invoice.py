"""`metering invoice`: one customer's invoice for one billing period, priced from its final totals (clickhouse/billing.py)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

from jobs.cli.common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subcommands, load_config_arg

#: The columns of ``--format csv``: one row per line, then one ``meter_total`` row per meter and a ``total`` row.
CSV_COLUMNS = [
    "section",
    "meter",
    "group_by",
    "period_start",
    "description",
    "tier_after",
    "tier_up_to",
    "quantity",
    "unit_price",
    "amount",
    "rounded",
    "currency",
    "as_of",
    "is_final",
]


def render_invoice(document: dict[str, Any], fmt: str) -> str:
    """The invoice document (clickhouse.billing.invoice_document) as json, csv or a table for people."""
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    common = {"currency": document["currency"], "as_of": document["as_of"], "is_final": document["is_final"]}
    rows: list[dict[str, Any]] = [
        {**line, "group_by": json.dumps(line["group_by"], sort_keys=True), **common} for line in document["lines"]
    ]
    rows += [
        {"section": "meter_total", "meter": m["meter"], "amount": m["amount"], "rounded": m["rounded"], **common}
        for m in document["meters"]
    ]
    rows.append({"section": "total", "amount": document["amount"], "rounded": document["rounded"], **common})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    head = (
        f"invoice {document['customer_id']}, {document['period_start']} to {document['period_end']}, "
        f"{document['currency']}, {'final' if document['is_final'] else 'PROVISIONAL'} as of {document['as_of']}"
    )
    table = [("meter", "group", "line", "exact", "rounded")]
    for line in document["lines"]:
        group = json.dumps(line["group_by"], sort_keys=True) if line["group_by"] else ""
        table.append((line["meter"], group, line["description"], line["amount"], line["rounded"]))
    table += [(m["meter"], "", "meter total", m["amount"], m["rounded"]) for m in document["meters"]]
    table.append(("total", "", "", document["amount"], document["rounded"]))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = [head]
    for row in table:
        cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[i].rjust(widths[i]) for i in (3, 4)]
        lines.append(("  " + "  ".join(cells)).rstrip())
    lines += [
        f"  not priced: {u['section']} of {u['meter']} for {u['period_start']}: {u['reason']}" for u in document["unpriced"]
    ]
    return "\n".join(lines) + "\n"


def cmd_invoice(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from clickhouse import billing, queries
    from clickhouse.gateway import GatewayRefused
    from jobs.cli.query import _reader, refusal_message

    config = load_config_arg(args.config)
    try:
        if not config.rating.plans:
            raise queries.QueryError("the configuration prices nothing (no rating section): add rating plans (docs/pricing.md)")
        period = billing.period_of(args.period, config.billing.policy_for(args.customer).cycle)
        now = queries.parse_time(args.at, "--at") if args.at else datetime.now(UTC)
        with _reader(args, config) as reader:
            invoice = billing.read_invoice(reader, config.rating, args.customer, period, meter=args.meter or "", now=now)
    except queries.QueryError as exc:
        print(f"metering invoice: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except billing.NotFinal as exc:
        print(f"metering invoice: no invoice: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except GatewayRefused as refused:
        print(refusal_message("metering invoice", refused), file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(render_invoice(billing.invoice_document(invoice), args.format))
    return EXIT_OK


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "invoice",
        help="one customer's invoice for a final billing period, priced by its rate cards",
        description="Prices the period's final totals with the customer's plan (rating) and adds, as their own lines, "
        "the corrections to earlier periods that arrived while the period ran (docs/pricing.md, 'Invoices'). "
        "A period that is not final yet has no invoice: exit 1 (use `metering query cost` for the cost so far).",
    )
    parser.add_argument("--customer", required=True, help="the customer id")
    parser.add_argument(
        "--period",
        required=True,
        help="the billing period: its start as `metering query periods` prints it (2026-02-28T23:00:00.000Z), or for "
        "monthly cycles the month it starts in (2026-03)",
    )
    parser.add_argument("--meter", help="only this meter (a meter-scoped token must name one of its meters)")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="ask the query gateway at URL with the access token of METERING__ACCESS__TOKEN (as `metering query --gateway`)",
    )
    parser.add_argument("--at", metavar="TIME", help="the invoice's as-of instant (default: now)")
    parser.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table for people (default); json (one document) or csv (one row per line, then meter totals and the "
        "total) for scripts",
    )
    parser.set_defaults(func=cmd_invoice)
