"""A small, hand-computable data set for the dashboard views (see the expectations in the tests).

Customer ``acme`` bills monthly in +05:30 (periods and days start at 18:30 UTC). Its segments
exercise every rule: a segment re-emitted with a higher version (the latest counts), a late
segment of its own (added), unique counts whose minutes share a value (union, not sum), a max, a
final with two revisions (the highest counts) and a newer provisional period. The other customers
have ids that differ from ``acme`` by a character, a case, a quote or a LIKE wildcard, one row each.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse.client import Storage
from jobs.loader import COLUMNS

LOOKALIKES = ["acme2", "ACME", "acme'", "a%", "a_c", "x' OR '1'='1", "acme "]
MARCH = (datetime(2026, 2, 28, 18, 30, tzinfo=UTC), datetime(2026, 3, 31, 18, 30, tzinfo=UTC))
APRIL = (datetime(2026, 3, 31, 18, 30, tzinfo=UTC), datetime(2026, 4, 30, 18, 30, tzinfo=UTC))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def segment(
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
    moment = at(minute)
    day = moment.replace(hour=18, minute=30)  # local midnight in +05:30
    if day > moment:
        day -= timedelta(days=1)
    period = MARCH if moment < APRIL[0] else APRIL
    number = Decimal(value)
    return [
        customer,
        meter,
        group_key,
        aggregation,
        moment,
        day,
        period[0],
        period[1],
        name,
        version,
        number,
        count,
        number if aggregation == "sum" else Decimal(0),
        number if aggregation == "max" else None,
        None,
        distinct or [],
        None,
        None,
    ]


def seed(storage: Storage) -> None:
    """Insert the data set (the database must be migrated)."""
    tokens = ("tokens", "sum")
    rows = [
        segment("acme", *tokens, "2026-03-01 10:01", "3", group_key='{"model":"l"}'),
        segment("acme", *tokens, "2026-03-01 10:01", "5", version=2, group_key='{"model":"l"}'),
        segment("acme", *tokens, "2026-03-01 10:01", "2", name="late:e1", group_key='{"model":"l"}'),
        segment("acme", *tokens, "2026-03-01 10:02", "7", group_key='{"model":"l"}', count=2),
        segment("acme", *tokens, "2026-03-01 19:00", "1", group_key='{"model":"l"}'),
        segment("acme", *tokens, "2026-04-02 08:00", "4", group_key='{"model":"l"}'),
        segment("acme", "users", "unique_count", "2026-03-01 10:01", "2", distinct=["u1", "u2"], count=2),
        segment("acme", "users", "unique_count", "2026-03-01 10:30", "2", distinct=["u2", "u3"], count=2),
        segment("acme", "peak", "max", "2026-03-01 10:01", "4"),
        segment("acme", "peak", "max", "2026-03-01 11:00", "9"),
    ]
    rows += [segment(c, *tokens, "2026-03-01 10:01", str(100 + i), group_key='{"model":"l"}') for i, c in enumerate(LOOKALIKES)]
    storage.client.insert("aggregate_segments", rows, column_names=COLUMNS["aggregate_segments"])
    finals = [
        ["acme", "tokens", '{"model":"l"}', "sum", *MARCH, Decimal(14), 4, at("2026-04-02 18:30")],
        ["acme2", "tokens", '{"model":"l"}', "sum", *MARCH, Decimal(100), 1, at("2026-04-02 18:30")],
    ]
    storage.client.insert("period_finals", finals, column_names=COLUMNS["period_finals"])
    revised = [["acme", "tokens", '{"model":"l"}', "sum", *MARCH, Decimal(15), 4, at("2026-04-02 18:30"), 2]]
    storage.client.insert("period_finals", revised, column_names=[*COLUMNS["period_finals"], "revision"])
    dead = [["malformed_json", "", "", "", "{", 0, i, datetime.now(UTC)] for i in range(3)]
    storage.client.insert("dead_letters", dead, column_names=COLUMNS["dead_letters"])
