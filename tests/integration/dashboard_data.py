"""A small, hand-computable data set for the dashboard views (see the expectations in the tests).

Customer ``acme`` bills monthly in +05:30 (periods and days start at 18:30 UTC). Its segments
exercise every rule: a segment re-emitted with a higher version (the latest counts), a late
segment of its own (added), unique counts whose minutes share a value (union, not sum), a max, a
final with two revisions (the highest counts) and a newer provisional period. The other customers
have ids that differ from ``acme`` by a character, a case, a quote or a LIKE wildcard, one row each.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from clickhouse.client import Storage
from clickhouse.tables import COLUMNS

KOLKATA = ZoneInfo("Asia/Kolkata")
LOOKALIKES = ["acme2", "ACME", "acme'", "a%", "a_c", "x' OR '1'='1", "acme "]
MARCH = (datetime(2026, 2, 28, 18, 30, tzinfo=UTC), datetime(2026, 3, 31, 18, 30, tzinfo=UTC))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _local_midnight(moment: datetime, zone: ZoneInfo, *, month: bool = False) -> datetime:
    local = moment.astimezone(zone)
    day = date(local.year, local.month, 1 if month else local.day)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def segment(
    customer: str,
    meter: str,
    aggregation: str,
    minute: str,
    *,
    version: int = 1,
    name: str = "s",
    group_key: str = "{}",
    n: int = 1,
    total: str | None = None,
    hi: str | None = None,
    lo: str | None = None,
    distinct: list[str] | None = None,
    latest: tuple[str, str] | None = None,  # (value, event time)
    zone: ZoneInfo = KOLKATA,
) -> list[Any]:
    """One aggregate_segments row as the loader writes it (columns of jobs.loader.loader.COLUMNS)."""
    moment = utc(minute)
    day_start = _local_midnight(moment, zone)
    period_start = _local_midnight(moment, zone, month=True)
    period_end = _local_midnight(period_start + timedelta(days=32), zone, month=True)
    latest_ms = None if latest is None else int(utc(latest[1]).timestamp() * 1000)
    latest_value = None if latest is None else Decimal(latest[0])
    value = {
        "sum": Decimal(total or 0),
        "count": Decimal(n),
        "max": Decimal(hi or 0),
        "min": Decimal(lo or 0),
        "unique_count": Decimal(len(distinct or [])),
        "latest": latest_value or Decimal(0),
    }[aggregation]
    return [
        customer,
        meter,
        group_key,
        aggregation,
        moment,
        day_start,
        period_start,
        period_end,
        name,
        version,
        value,
        n,
        Decimal(total or 0),
        None if hi is None else Decimal(hi),
        None if lo is None else Decimal(lo),
        distinct or [],
        latest_ms,
        latest_value,
    ]


def simple_segment(
    customer: str,
    meter: str,
    aggregation: str,
    minute: str,
    value: str,
    *,
    version: int = 1,
    name: str = "s",
    group_key: str = "{}",
    distinct: list[str] | None = None,
    count: int = 1,
) -> list[Any]:
    """A sum, max or unique-count segment of ``acme``'s zone, its value given once."""
    return segment(
        customer,
        meter,
        aggregation,
        minute,
        version=version,
        name=name,
        group_key=group_key,
        n=count,
        total=value if aggregation == "sum" else None,
        hi=value if aggregation == "max" else None,
        distinct=distinct,
    )


def seed(storage: Storage) -> None:
    """Insert the data set (the database must be migrated)."""
    tokens = ("tokens", "sum")
    rows = [
        simple_segment("acme", *tokens, "2026-03-01 10:01", "3", group_key='{"model":"l"}'),
        simple_segment("acme", *tokens, "2026-03-01 10:01", "5", version=2, group_key='{"model":"l"}'),
        simple_segment("acme", *tokens, "2026-03-01 10:01", "2", name="late:e1", group_key='{"model":"l"}'),
        simple_segment("acme", *tokens, "2026-03-01 10:02", "7", group_key='{"model":"l"}', count=2),
        simple_segment("acme", *tokens, "2026-03-01 19:00", "1", group_key='{"model":"l"}'),
        simple_segment("acme", *tokens, "2026-04-02 08:00", "4", group_key='{"model":"l"}'),
        simple_segment("acme", "users", "unique_count", "2026-03-01 10:01", "2", distinct=["u1", "u2"], count=2),
        simple_segment("acme", "users", "unique_count", "2026-03-01 10:30", "2", distinct=["u2", "u3"], count=2),
        simple_segment("acme", "peak", "max", "2026-03-01 10:01", "4"),
        simple_segment("acme", "peak", "max", "2026-03-01 11:00", "9"),
    ]
    rows += [
        simple_segment(c, *tokens, "2026-03-01 10:01", str(100 + i), group_key='{"model":"l"}') for i, c in enumerate(LOOKALIKES)
    ]
    storage.client.insert("aggregate_segments", rows, column_names=COLUMNS["aggregate_segments"])
    finals = [
        ["acme", "tokens", '{"model":"l"}', "sum", *MARCH, Decimal(14), 4, utc("2026-04-02 18:30")],
        ["acme2", "tokens", '{"model":"l"}', "sum", *MARCH, Decimal(100), 1, utc("2026-04-02 18:30")],
    ]
    storage.client.insert("period_finals", finals, column_names=COLUMNS["period_finals"])
    revised = [["acme", "tokens", '{"model":"l"}', "sum", *MARCH, Decimal(15), 4, utc("2026-04-02 18:30"), 2]]
    storage.client.insert("period_finals", revised, column_names=[*COLUMNS["period_finals"], "revision"])
    commit_revision(storage, "acme", "tokens", MARCH[0], 2)
    dead = [["malformed_json", "", "", "", "{", 1, 0, i, datetime.now(UTC)] for i in range(3)]
    storage.client.insert("dead_letters", dead, column_names=COLUMNS["dead_letters"])


def commit_revision(storage: Any, customer: str, meter: str, period_start: datetime, revision: int) -> None:
    """Make ``revision`` the visible one for (customer, meter, period) as a replay would: the period's live
    segments are copied under the revision (same values), then the scope row commits it. (The filter sits in a
    subquery: ClickHouse aliases are query-wide, so ``REPLACE ... AS revision`` would rewrite its WHERE.)"""
    storage.command(
        "INSERT INTO aggregate_segments SELECT * REPLACE (concat('replay:', toString({r:UInt32}), ':', segment) AS segment,"
        " {r:UInt32} AS version, {r:UInt32} AS revision) FROM (SELECT * FROM aggregate_segments FINAL"
        " WHERE customer_id = {c:String} AND meter = {m:String} AND period_start = {p:DateTime64(3, 'UTC')} AND revision = 1)",
        {"r": revision, "c": customer, "m": meter, "p": period_start},
    )
    storage.command(
        "INSERT INTO replay_scope (revision, customer_id, meter, period_start, period_end)"
        " SELECT {r:UInt32}, {c:String}, {m:String}, {p:DateTime64(3, 'UTC')}, toDateTime64(period_end, 3, 'UTC')"
        " FROM aggregate_segments WHERE customer_id = {c:String} AND meter = {m:String}"
        " AND period_start = {p:DateTime64(3, 'UTC')} LIMIT 1",
        {"r": revision, "c": customer, "m": meter, "p": period_start},
    )
