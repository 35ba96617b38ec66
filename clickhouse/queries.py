"""Read queries: ``clickhouse/queries/*.sql`` with server-side parameters, rendered for people or machines."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from clickhouse.client import Storage

QUERIES_DIR = Path(__file__).resolve().parent / "queries"


def sql_of(name: str) -> str:
    path = QUERIES_DIR / f"{name}.sql"
    if not path.exists():
        raise ValueError(f"no query named {name!r} (have: {', '.join(sorted(p.stem for p in QUERIES_DIR.glob('*.sql')))})")
    return path.read_text()


def run_query(storage: Storage, name: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a named query; rows as dicts with JSON-ready values (decimals as exact strings, times RFC 3339)."""
    result = storage.client.query(sql_of(name), parameters=parameters)
    return [dict(zip(result.column_names, (plain(v) for v in row), strict=True)) for row in result.result_rows]


def plain(value: Any) -> Any:
    """Decimals as their shortest exact string, datetimes as RFC 3339 UTC with 'Z'."""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def with_group_by(row: dict[str, Any]) -> dict[str, Any]:
    """Replace ``group_key`` (canonical JSON) by a ``group_by`` object."""
    if "group_key" in row:
        row = dict(row)
        row["group_by"] = json.loads(row.pop("group_key") or "{}")
    return row


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """Render rows as jsonl, json, csv or an aligned text table."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if not rows:
        return "(no rows)\n"
    columns = list(rows[0])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows)
        return out.getvalue()
    cells = [[json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in r.values()] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines) + "\n"
