"""Read queries: ``clickhouse/queries/*.sql`` with server-side parameters, rendered for people or machines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from clickhouse.client import Storage
from udfs.periods import rfc3339_millis

QUERIES_DIR = Path(__file__).resolve().parent / "queries"


def sql_of(name: str) -> str:
    """The text of a named query; only files of clickhouse/queries/ can be named."""
    path = QUERIES_DIR / f"{name}.sql"
    if not name.replace("_", "").isalnum() or not path.exists():
        raise ValueError(f"no query named {name!r} (have: {', '.join(sorted(p.stem for p in QUERIES_DIR.glob('*.sql')))})")
    return path.read_text()


def run_query(storage: Storage, name: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a named query; rows as dicts with JSON-ready values (decimals as exact strings, times RFC 3339)."""
    result = storage.client.query(sql_of(name), parameters=parameters)
    return [dict(zip(result.column_names, (plain(v) for v in row), strict=True)) for row in result.result_rows]


def plain(value: Any) -> Any:
    """Decimals as their shortest exact string, datetimes as RFC 3339 UTC with 'Z'."""
    if isinstance(value, Decimal):
        text = format(value, "f")  # exact at any precision (normalize() would round to the context's 28 digits)
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return rfc3339_millis(moment)
    return value


def with_group_by(row: dict[str, Any]) -> dict[str, Any]:
    """Replace ``group_key`` (canonical JSON) by a ``group_by`` object."""
    if "group_key" in row:
        row = dict(row)
        row["group_by"] = json.loads(row.pop("group_key") or "{}")
    return row


def columns_of(name: str) -> list[str]:
    """The columns a named query returns, from its outermost SELECT list (an alias, else the expression's last name)."""
    text = "\n".join(line.split("--")[0] for line in sql_of(name).splitlines())
    start = text.upper().index("SELECT") + len("SELECT")
    items: list[str] = []
    depth, current = 0, ""
    for i in range(start, len(text)):
        char = text[i]
        if depth == 0 and text[i : i + 6].upper() in (" FROM ", "\nFROM "):
            break
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    names: list[str] = []
    for item in (" ".join(item.split()) for item in items):
        head, _, alias = item.rpartition(" AS ")
        names.append((alias if head and ")" not in alias else item).split(".")[-1].strip('`"'))
    return names


def render(rows: list[dict[str, Any]], fmt: str, columns: list[str] | None = None) -> str:
    """Render rows as jsonl, json, csv or an aligned text table.

    With no rows: json ``[]``, jsonl nothing, csv the header line of ``columns`` (when given), table ``(no rows)``.
    """
    if fmt == "jsonl":
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if not rows and fmt == "csv":
        if not columns:
            return ""
        out = io.StringIO()
        csv.writer(out).writerow(columns)
        return out.getvalue()
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


# --- the dashboard questions ------------------------------------------------------------------
# Each question is one named query; the customer-scoped ones read parameterized views that cannot
# return another customer's rows (clickhouse/migrations/0003_dashboards.sql). A Reader runs a named
# query wherever the storage is: in this process, or through the process that owns the chDB
# directory (clickhouse/gateway.py).

GRANULARITIES = ("minute", "hour", "day")
# The longest range each granularity serves; beyond it a chart has more points than pixels.
MAX_SPAN = {"minute": timedelta(days=2), "hour": timedelta(days=62), "day": timedelta(days=3 * 366)}
# The range a series covers when only one end (or neither) is given, ending at the newest usage.
DEFAULT_SPAN = {"minute": timedelta(hours=6), "hour": timedelta(days=7), "day": timedelta(days=62)}
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# The instants a DateTime64(3) parameter holds (ClickHouse: 1900-01-01 to 2299-12-31).
SUPPORTED = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))


class QueryError(ValueError):
    """A question that cannot be asked as given (the message names the option and the fix)."""


class Reader(Protocol):
    """Runs a named query (``clickhouse/queries/<name>.sql``) with parameters; rows as JSON-ready dicts."""

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]: ...


class StorageReader:
    """A Reader over an open storage in this process."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        return run_query(self.storage, name, dict(parameters))


@dataclass(frozen=True)
class Scope:
    """What a question is about: one customer (or, for operator questions, all), a meter, a time range."""

    customer: str = ""
    meter: str = ""
    start: datetime | None = None
    end: datetime | None = None
    granularity: str = "hour"

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise QueryError(f"--granularity={self.granularity!r}: must be one of {', '.join(GRANULARITIES)}")
        for name, moment in (("--from", self.start), ("--to", self.end)):
            if moment is not None and moment.tzinfo is None:
                raise QueryError(f"{name}: give a time zone (e.g. 2026-03-01T00:00:00Z)")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise QueryError(f"--from ({plain(self.start)}) must be before --to ({plain(self.end)})")

    def require_customer(self, question: str) -> str:
        if not self.customer:
            raise QueryError(
                f"{question}: a customer is required (--customer, or ?customer= in the API); "
                "customer-scoped views return one customer's rows"
            )
        return self.customer


def parse_time(text: str, option: str) -> datetime:
    """RFC 3339 / ISO 8601 with a zone ('Z' accepted), or a date (midnight UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{option}={text!r}: not a time; use RFC 3339, e.g. 2026-03-01T00:00:00Z") from None
    if moment.tzinfo is None:
        if len(text.strip()) != 10:  # not a plain date
            raise QueryError(f"{option}={text!r}: give a time zone, e.g. 2026-03-01T00:00:00Z")
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        moment = SUPPORTED[0] - timedelta(days=1)  # out of range either way: refused below
    if not SUPPORTED[0] <= moment <= SUPPORTED[1]:
        raise QueryError(f"{option}={text!r}: must be between 1900-01-01 and 2299-12-31, e.g. 2026-03-01T00:00:00Z")
    return moment


def _ch_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="milliseconds")[:23]  # a 4-digit year, unlike %Y


def _range_parameters(scope: Scope) -> dict[str, str]:
    return {"meter": scope.meter, "from": _ch_time(scope.start or EARLIEST), "to": _ch_time(scope.end or LATEST)}


def usage(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """Usage so far: per (meter, group) the newest period, final or provisional (all customers without --customer)."""
    if not scope.customer:
        rows = reader.run("usage", {"customer": ""})
        return [r for r in rows if not scope.meter or r["meter"] == scope.meter]
    since = scope.start or EARLIEST
    return reader.run("customer_usage", {"customer": scope.customer, "meter": scope.meter, "since": _ch_time(since)})


def periods(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """Every period of one customer starting in the range, final or provisional."""
    customer = scope.require_customer("periods")
    return reader.run("customer_periods", {"customer": customer, **_range_parameters(scope)})


def series_range(reader: Reader, scope: Scope) -> tuple[datetime, datetime]:
    """The range a series covers: as given, else DEFAULT_SPAN ending at the customer's newest minute."""
    span = DEFAULT_SPAN[scope.granularity]
    start, end = scope.start, scope.end
    if start is None and end is None:
        extent = reader.run("customer_extent", {"customer": scope.customer})[0]
        newest = extent["last_minute"]
        end = (datetime.fromisoformat(newest.replace("Z", "+00:00")) if newest else datetime.now(UTC)) + timedelta(minutes=1)
        if scope.granularity != "minute":
            end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    try:
        if start is None:
            assert end is not None
            start = end - span
        if end is None:
            end = start + span
    except OverflowError:
        raise QueryError(f"--from/--to: a {span} range from there is out of range; give both ends") from None
    if end - start > MAX_SPAN[scope.granularity]:
        raise QueryError(
            f"--from/--to span {end - start} is too long for --granularity={scope.granularity} "
            f"(at most {MAX_SPAN[scope.granularity]}); narrow the range or use a coarser granularity"
        )
    return start, end


def series(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """One customer's usage per minute, hour (UTC) or day (customer's zone) in the range."""
    customer = scope.require_customer("series")
    start, end = series_range(reader, scope)
    return reader.run(
        f"series_{scope.granularity}", {"customer": customer, "meter": scope.meter, "from": _ch_time(start), "to": _ch_time(end)}
    )


def finals(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """Final period totals: one customer's (customer-scoped view) or, without --customer, everyone's."""
    if not scope.customer:
        rows = reader.run("finals", {"customer": ""})
        start, end = scope.start or EARLIEST, scope.end or LATEST
        return [
            r for r in rows if (not scope.meter or r["meter"] == scope.meter) and plain(start) <= r["period_start"] < plain(end)
        ]
    return reader.run("customer_finals", {"customer": scope.customer, **_range_parameters(scope)})


def health(reader: Reader) -> dict[str, Any]:
    """Pipeline health counters plus dead letters per reason."""
    row = reader.run("health", {})[0]
    row["dead_letter_reasons"] = reader.run("dead_letter_reasons", {})
    return row


def customers(reader: Reader) -> list[dict[str, Any]]:
    """Customers with usage (operator question)."""
    return reader.run("customers", {})
