"""`metering invoice`: one customer's invoice for one billing period, priced from its final totals (clickhouse/billing.py)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
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


def _grid(rows: Sequence[tuple[str, ...]], right: frozenset[int], indent: str = "    ") -> list[str]:
    """Rows as aligned text: the first row is the header; columns in ``right`` align right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (
            indent + "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row))
        ).rstrip()
        for row in rows
    ]


def _group(group_by: dict[str, Any]) -> str:
    return json.dumps(group_by, sort_keys=True) if group_by else ""


def _stored_rows(rows: list[dict[str, Any]]) -> list[str]:
    table = [("table", "period_start", "group", "minute", "sign", "value", "events", "revision", "at", "on this invoice")]
    for row in rows:
        final = row["table"] == "period_finals"
        table.append(
            (
                row["table"],
                row["period_start"],
                _group(row["group_by"]),
                row.get("minute") or "",
                "" if final else ("+1" if row["sign"] > 0 else "-1"),
                row["value"],
                "" if row["event_count"] is None else str(row["event_count"]),
                "" if not final or row["revision"] is None else str(row["revision"]),
                (f"finalized {row['finalized_at_watermark'] or '?'}" if final else f"loaded {row['loaded_at']}"),
                "" if final else ("yes" if row["on_this_invoice"] else "no: an earlier invoice's"),
            )
        )
    return _grid(table, frozenset({4, 5, 6, 7}))


def _charge_lines(title: str, charge: dict[str, Any]) -> list[str]:
    rated = f" (rated {charge['rated_quantity']})" if charge["rated_quantity"] != charge["quantity"] else ""
    terms = [f"{charge['model']}, version from {charge['version_starts_at']}"]
    if charge["included"] != "0":
        terms.append(f"{charge['included']} included")
    if charge["minimum"] is not None:
        terms.append(f"minimum {charge['minimum']}")
    table = [("line", "quantity", "unit_price", "exact", "rounded")]
    for row in charge["tiers"]:
        if row["kind"] == "not_reached":
            label = f"{row['tier']}: not reached"
        elif row["tier"] is not None and row["kind"] == "units":
            label = row["tier"]
        else:
            label = row["description"]
        table.append((label, row["quantity"], row["unit_price"], row["amount"], row["rounded"]))
    table.append(("total", "", "", charge["amount"], charge["rounded"]))
    return [f"  {title}: quantity {charge['quantity']}{rated}; {'; '.join(terms)}", *_grid(table, frozenset({1, 2, 3, 4}))]


def render_explain(document: dict[str, Any], fmt: str) -> str:
    """``--explain``: the invoice document with ``items`` (clickhouse.billing.explain_document) as json or a table.

    Per charge: the stored rows behind it, the tier breakdown of its charge (a correction's before and
    after charges), and the invoice's lines that come of it.
    """
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    out = [
        f"invoice {document['customer_id']}, {document['period_start']} to {document['period_end']}, "
        f"{document['currency']}, {'final' if document['is_final'] else 'PROVISIONAL'} as of {document['as_of']}"
    ]
    for item in document["items"]:
        group = _group(item["group_by"])
        what = f"{item['meter']} {group}".rstrip()
        span = f"{item['period_start']} to {item['period_end']}"
        head = f"usage {what}, period {span}" if item["section"] == "usage" else f"correction {what}, of period {span}"
        out += ["", f"{head}: {item['amount']} ({item['rounded']} rounded)", "  stored rows"]
        out += _stored_rows(item["rows"])
        if item["before"] is not None:
            out += _charge_lines("before this invoice's corrections", item["before"])
            out += _charge_lines("with them", item["charge"])
            lines = [("line", "quantity", "unit_price", "exact", "rounded")]
            lines += [(x["description"], x["quantity"], x["unit_price"], x["amount"], x["rounded"]) for x in item["lines"]]
            out += ["  on the invoice (with them − before)", *_grid(lines, frozenset({1, 2, 3, 4}))]
        else:
            out += _charge_lines("priced", item["charge"])
    out += ["", f"total {document['amount']} ({document['rounded']} rounded)"]
    out += [f"not priced: {u['section']} of {u['meter']} for {u['period_start']}: {u['reason']}" for u in document["unpriced"]]
    return "\n".join(out) + "\n"


def cmd_invoice(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from clickhouse import billing, queries
    from clickhouse.gateway import GatewayRefused
    from jobs.cli.query import _reader, refusal_message

    if args.explain and args.format == "csv":
        print("metering invoice: --explain prints a table or json (--format table|json), not csv", file=sys.stderr)
        return EXIT_USAGE
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
    if args.explain:
        sys.stdout.write(render_explain(billing.explain_document(invoice), args.format))
    else:
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
    parser.add_argument(
        "--explain",
        action="store_true",
        help="per charge, the stored rows behind it (final totals, corrections with their load times) and its tier "
        "breakdown: each tier's range, quantity, unit price, exact and rounded amount (table or json)",
    )
    parser.set_defaults(func=cmd_invoice)
