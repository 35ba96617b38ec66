"""Every customer-scoped question returns exactly one customer's rows, with hand-computed values.

Real chDB, migrated, seeded below. Customer ``acme`` bills monthly in Asia/Kolkata (+05:30: days and
periods start at 18:30 UTC) and has one meter per aggregation, each with a segment re-emitted with
higher versions (inserted out of order: the highest version counts, not the last insert) and a
'late:<event_id>' segment of the same minute (added to the minute). The look-alike customers differ
from ``acme`` by a character, a case, a quote, a LIKE wildcard, SQL or an escape; each has one
segment of its own with a distinct value, so a leak would show in ``acme``'s numbers as well as in
``customer_id``. ``dst-ny`` has days in America/New_York across the 2026-03-08 DST change.

Expected values are written out by hand next to the data they come from.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from clickhouse import queries
from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import QueryError, Scope, StorageReader
from clickhouse.tables import COLUMNS
from tests.integration.dashboard_data import commit_revision, segment, utc

ACME = "acme"
LOOKALIKES = ["acme2", "ACME", "acme'", "a%", "a_c", "x' OR '1'='1", "acme ", "ac\\me", "acme\n"]
DST = "dst-ny"
CUSTOMERS = [ACME, *LOOKALIKES, DST]
NOT_CUSTOMERS = ["", "%", "_", "acm", "*", "a", "x' OR '1'='1' --", "' OR 1=1 --", "acme\\", "ACME2", "acme''"]

NEW_YORK = ZoneInfo("America/New_York")
L, S = '{"model":"l"}', '{"model":"s"}'
# acme's billing periods (monthly, +05:30)
MARCH = "2026-02-28T18:30:00.000Z"
APRIL = "2026-03-31T18:30:00.000Z"
MAY = "2026-04-30T18:30:00.000Z"


def acme_segments() -> list[list[list[Any]]]:
    """acme's segments in three insert batches (stale versions arrive after the current ones)."""
    a = ACME
    first = [
        # tokens/l (sum) 10:01: s v3 = 6 (n 3) is current; late:e1 adds 2 (n 1) -> minute 8 (n 4)
        segment(a, "tokens", "sum", "2026-03-01 10:01", version=3, group_key=L, total="6", n=3),
        segment(a, "tokens", "sum", "2026-03-01 10:01", name="late:e1", group_key=L, total="2", n=1),
        segment(a, "tokens", "sum", "2026-03-01 10:02", group_key=L, total="7", n=2),
        segment(a, "tokens", "sum", "2026-03-01 19:00", group_key=L, total="1", n=1),  # local 2026-03-02 00:30: next day
        segment(a, "tokens", "sum", "2026-04-02 08:00", group_key=L, total="4", n=1),  # April period
        segment(a, "tokens", "sum", "2026-03-01 10:05", group_key=S, total="10", n=1),
        # calls (count) 10:01: s v2 n 3 + late:e2 n 1 -> 4; 10:40 -> 2
        segment(a, "calls", "count", "2026-03-01 10:01", version=2, n=3),
        segment(a, "calls", "count", "2026-03-01 10:01", name="late:e2", n=1),
        segment(a, "calls", "count", "2026-03-01 10:40", n=2),
        # users (unique_count) 10:01: s v2 {u1,u2} + late:e3 {u3} -> 3; 10:30 {u2,u4} -> 2; hour: {u1..u4} = 4
        segment(a, "users", "unique_count", "2026-03-01 10:01", version=2, distinct=["u1", "u2"], n=2),
        segment(a, "users", "unique_count", "2026-03-01 10:01", name="late:e3", distinct=["u3"], n=1),
        segment(a, "users", "unique_count", "2026-03-01 10:30", distinct=["u2", "u4"], n=2),
        # peak (max) 10:01: s v2 4, late:e4 6 -> 6; 11:00 -> 5
        segment(a, "peak", "max", "2026-03-01 10:01", version=2, hi="4"),
        segment(a, "peak", "max", "2026-03-01 10:01", name="late:e4", hi="6"),
        segment(a, "peak", "max", "2026-03-01 11:00", hi="5"),
        # low (min) 10:01: s v2 3, late:e5 2 -> 2; 10:20 -> 4
        segment(a, "low", "min", "2026-03-01 10:01", version=2, lo="3"),
        segment(a, "low", "min", "2026-03-01 10:01", name="late:e5", lo="2"),
        segment(a, "low", "min", "2026-03-01 10:20", lo="4"),
        # seats (latest) 10:01: s v2 8 @10:01:40 beats late:e6 99 @10:01:20 -> 8; 10:05 5 @10:05:10;
        # 11:00: late:e7 2 @11:00:50 beats s 1 @11:00:10 -> 2
        segment(a, "seats", "latest", "2026-03-01 10:01", version=2, latest=("8", "2026-03-01 10:01:40")),
        segment(a, "seats", "latest", "2026-03-01 10:01", name="late:e6", latest=("99", "2026-03-01 10:01:20")),
        segment(a, "seats", "latest", "2026-03-01 10:05", latest=("5", "2026-03-01 10:05:10")),
        segment(a, "seats", "latest", "2026-03-01 11:00", latest=("1", "2026-03-01 11:00:10")),
        segment(a, "seats", "latest", "2026-03-01 11:00", name="late:e7", latest=("2", "2026-03-01 11:00:50")),
    ]
    stale = [  # older versions of the segments above, written later (a replay, a re-delivery)
        segment(a, "tokens", "sum", "2026-03-01 10:01", version=1, group_key=L, total="3", n=1),
        segment(a, "calls", "count", "2026-03-01 10:01", version=1, n=1),
        segment(a, "users", "unique_count", "2026-03-01 10:01", version=1, distinct=["u1", "u9"], n=2),
        segment(a, "peak", "max", "2026-03-01 10:01", version=1, hi="9"),
        segment(a, "low", "min", "2026-03-01 10:01", version=1, lo="1"),
        segment(a, "seats", "latest", "2026-03-01 10:01", version=1, latest=("7", "2026-03-01 10:01:10")),
    ]
    staler = [
        segment(a, "tokens", "sum", "2026-03-01 10:01", version=2, group_key=L, total="5", n=2),
        segment(a, "tokens", "sum", "2026-03-01 10:02", group_key=L, total="7", n=2),  # a re-delivery: identical
    ]
    return [first, stale, staler]


def lookalike_segments() -> list[list[Any]]:
    """Each look-alike: tokens/l at 2026-03-01 10:01, version 2 = 100 + i (version 1 = 1)."""
    rows = []
    for i, customer in enumerate(LOOKALIKES):
        rows.append(segment(customer, "tokens", "sum", "2026-03-01 10:01", version=2, group_key=L, total=str(100 + i)))
        rows.append(segment(customer, "tokens", "sum", "2026-03-01 10:01", version=1, group_key=L, total="1"))
    return rows


def dst_segments() -> list[list[Any]]:
    """dst-ny: days in New York; 2026-03-08 is 23 hours long (05:00Z to 04:00Z)."""
    return [
        segment(DST, "tokens", "sum", "2026-03-08 04:59", total="8", zone=NEW_YORK),  # local 03-07 23:59 EST
        segment(DST, "tokens", "sum", "2026-03-08 05:00", total="4", zone=NEW_YORK),  # local 03-08 00:00 EST
        segment(DST, "tokens", "sum", "2026-03-09 03:30", total="1", zone=NEW_YORK),  # local 03-08 23:30 EDT
        segment(DST, "tokens", "sum", "2026-03-09 04:30", total="2", zone=NEW_YORK),  # local 03-09 00:30 EDT
    ]


def final(customer: str, meter: str, aggregation: str, group_key: str, value: str, n: int, revision: int) -> list[Any]:
    return [
        customer,
        meter,
        group_key,
        aggregation,
        utc("2026-02-28 18:30"),
        utc("2026-03-31 18:30"),
        Decimal(value),
        n,
        utc("2026-04-02 18:30"),
        revision,
    ]


def seed(storage: Any) -> None:
    insert = storage.client.insert
    for batch in acme_segments():
        insert("aggregate_segments", batch, column_names=COLUMNS["aggregate_segments"])
    insert("aggregate_segments", lookalike_segments(), column_names=COLUMNS["aggregate_segments"])
    insert("aggregate_segments", dst_segments(), column_names=COLUMNS["aggregate_segments"])
    columns = [*COLUMNS["period_finals"], "revision"]
    # acme tokens/l March: revision 2 (a recomputation: 17 from 8 events) arrives before revision 1 (16 from 7)
    insert("period_finals", [final(ACME, "tokens", "sum", L, "17", 8, 2)], column_names=columns)
    insert("period_finals", [final(ACME, "tokens", "sum", L, "16", 7, 1)], column_names=columns)
    insert("period_finals", [final(ACME, "calls", "count", "{}", "6", 6, 1)], column_names=columns)
    lookalike_finals = [final(c, "tokens", "sum", L, str(100 + i), 1, 1) for i, c in enumerate(LOOKALIKES)]
    insert("period_finals", lookalike_finals, column_names=columns)
    commit_revision(storage, ACME, "tokens", utc("2026-02-28 18:30"), 2)


@pytest.fixture(scope="module")
def reader(chdb_path: Path) -> Iterator[StorageReader]:
    """One seeded database for the module (the questions only read)."""
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_scoping_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as storage:
        migrate(storage)
        seed(storage)
        try:
            yield StorageReader(storage)
        finally:
            storage.drop_database()


# --- the questions --------------------------------------------------------------------------------


class TimeRange(TypedDict):
    """A Scope's start and end, for ``Scope(..., **RANGE)``."""

    start: datetime
    end: datetime


WIDE: TimeRange = {"start": utc("2026-01-01 00:00"), "end": utc("2026-05-01 00:00")}
MINUTES: TimeRange = {"start": utc("2026-03-01 00:00"), "end": utc("2026-03-02 00:00")}  # acme's March minutes (max span 2 days)
HOURS: TimeRange = {"start": utc("2026-02-25 00:00"), "end": utc("2026-04-05 00:00")}  # everything (39 days, max 62)


def everything(reader: StorageReader, customer: str) -> dict[str, list[dict[str, Any]]]:
    """Every customer-scoped question for one customer, over ranges that hold all of acme's data."""
    return {
        "usage": queries.usage(reader, Scope(customer=customer)),
        "periods": queries.periods(reader, Scope(customer=customer, **WIDE)),
        "finals": queries.finals(reader, Scope(customer=customer)),
        "minute": queries.series(reader, Scope(customer=customer, granularity="minute", **MINUTES)),
        "hour": queries.series(reader, Scope(customer=customer, granularity="hour", **HOURS)),
        "day": queries.series(reader, Scope(customer=customer, granularity="day", **WIDE)),
    }


def points(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    """Series rows as {(meter, group_key): [(bucket, value, event_count), ...]} in the order returned."""
    lines: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for row in rows:
        lines.setdefault((row["meter"], row["group_key"]), []).append((row["bucket"], row["value"], row["event_count"]))
    return lines


def totals(rows: list[dict[str, Any]], *fields: str) -> list[tuple[Any, ...]]:
    return [(r["meter"], r["group_key"], r["period_start"], *(r[f] for f in fields)) for r in rows]


# --- scoping --------------------------------------------------------------------------------------


def test_each_customer_sees_only_its_own_rows(reader: StorageReader) -> None:
    for customer in CUSTOMERS:
        for question, rows in everything(reader, customer).items():
            assert {r["customer_id"] for r in rows} <= {customer}, (customer, question)
            if customer != DST or question in ("usage", "periods", "day"):  # dst-ny's minutes are in March 8-9, no finals
                assert rows or (customer == DST and question == "finals"), (customer, question)


@pytest.mark.parametrize("index", range(len(LOOKALIKES)), ids=[repr(c) for c in LOOKALIKES])
def test_a_lookalike_sees_exactly_its_one_segment_and_final(reader: StorageReader, index: int) -> None:
    customer, value = LOOKALIKES[index], str(100 + index)
    answers = everything(reader, customer)
    assert points(answers["minute"]) == {("tokens", L): [("2026-03-01T10:01:00.000Z", value, 1)]}
    assert points(answers["hour"]) == {("tokens", L): [("2026-03-01T10:00:00.000Z", value, 1)]}
    assert points(answers["day"]) == {("tokens", L): [("2026-02-28T18:30:00.000Z", value, 1)]}
    assert totals(answers["finals"], "total", "event_count", "revision") == [("tokens", L, MARCH, value, 1, 1)]
    for question in ("usage", "periods"):
        assert totals(answers[question], "total", "event_count", "status", "revision") == [
            ("tokens", L, MARCH, value, 1, "final", 1)
        ]
        assert answers[question][0]["period_end"] == APRIL


@pytest.mark.parametrize("customer", NOT_CUSTOMERS, ids=repr)
def test_a_customer_that_does_not_exist_sees_nothing(reader: StorageReader, customer: str) -> None:
    """Through the named queries (what the gateway and the API ask); '' is not 'everyone' there."""
    wide = {"from": "1970-01-01 00:00:00.000", "to": "2200-01-01 00:00:00.000"}
    march = {"from": "2026-03-01 00:00:00.000", "to": "2026-03-02 00:00:00.000"}
    asked = {
        "customer_usage": {"customer": customer, "meter": "", "since": "1970-01-01 00:00:00.000"},
        "customer_periods": {"customer": customer, "meter": "", **wide},
        "customer_finals": {"customer": customer, "meter": "", **wide},
        "series_minute": {"customer": customer, "meter": "", **march},
        "series_hour": {"customer": customer, "meter": "", **wide},
        "series_day": {"customer": customer, "meter": "", **wide},
        "customer_extent": {"customer": customer},
    }
    for name, parameters in asked.items():
        rows = reader.run(name, parameters)
        if name == "customer_extent":
            assert rows == [{"first_minute": None, "last_minute": None}]
        else:
            assert rows == [], (customer, name)
    if customer:
        assert all(rows == [] for rows in everything(reader, customer).values())


def test_the_empty_customer_is_refused_by_the_customer_only_questions(reader: StorageReader) -> None:
    for question in (queries.periods, queries.series):
        with pytest.raises(QueryError, match="a customer is required"):
            question(reader, Scope(customer=""))


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("SELECT * FROM customer_finals", "EMPTY_LIST_OF_COLUMNS"),
        ("SELECT customer_id FROM customer_finals", "UNKNOWN_IDENTIFIER"),
        ("SELECT count() FROM customer_finals", "EMPTY_LIST_OF_COLUMNS"),
        ("SELECT * FROM customer_usage", "EMPTY_LIST_OF_COLUMNS"),
        ("SELECT customer_id FROM customer_usage(since = '1970-01-01 00:00:00')", "UNKNOWN_QUERY_PARAMETER"),
        ("SELECT customer_id FROM customer_usage(customer = 'acme')", "UNKNOWN_QUERY_PARAMETER"),
        ("SELECT * FROM customer_periods", "EMPTY_LIST_OF_COLUMNS"),
        (
            "SELECT customer_id FROM customer_periods(from = '2026-01-01 00:00:00', to = '2027-01-01 00:00:00')",
            "UNKNOWN_QUERY_PARAMETER",
        ),
        ("SELECT * FROM customer_minutes", "EMPTY_LIST_OF_COLUMNS"),
        ("SELECT customer_id FROM customer_minutes(customer = 'acme')", "UNKNOWN_QUERY_PARAMETER"),
        ("SELECT * FROM customer_series_hour", "EMPTY_LIST_OF_COLUMNS"),
        ("SELECT customer_id FROM customer_series_hour WHERE customer_id = 'acme'", "UNKNOWN_IDENTIFIER"),
        ("SELECT * FROM customer_series_day", "EMPTY_LIST_OF_COLUMNS"),
        # an argument cannot name a column or be an expression that widens the scan
        ("SELECT customer_id FROM customer_finals(customer = customer_id)", "UNKNOWN_IDENTIFIER"),
        ("SELECT customer_id FROM customer_finals(customer = 'acme' OR 1)", "UNKNOWN_QUERY_PARAMETER"),
        (
            "SELECT customer_id FROM customer_minutes(customer = customer_id, from = '2000-01-01 00:00:00', to = '2100-01-01')",
            "UNKNOWN_IDENTIFIER",
        ),
    ],
)
def test_a_scoped_view_cannot_be_read_without_naming_one_customer(reader: StorageReader, sql: str, refusal: str) -> None:
    with pytest.raises(DatabaseError, match=re.escape(refusal)):
        reader.storage.query_rows(sql)


def test_a_filter_outside_a_scoped_view_cannot_widen_it(reader: StorageReader) -> None:
    sql = (
        "SELECT DISTINCT customer_id FROM customer_minutes(customer = 'acme', from = '2000-01-01', to = '2100-01-01 00:00:00')"
        " WHERE customer_id != 'acme' OR 1 = 1"
    )
    assert reader.storage.query_rows(sql) == [("acme",)]
    union = "SELECT DISTINCT customer_id FROM customer_finals(customer = 'acme') WHERE 1 OR customer_id IN ('acme2', 'ACME')"
    assert reader.storage.query_rows(union) == [("acme",)]


# --- values ---------------------------------------------------------------------------------------


def test_minutes_take_the_latest_version_of_each_segment_plus_late_segments(reader: StorageReader) -> None:
    assert points(everything(reader, ACME)["minute"]) == {
        ("calls", "{}"): [("2026-03-01T10:01:00.000Z", "4", 4), ("2026-03-01T10:40:00.000Z", "2", 2)],
        ("low", "{}"): [("2026-03-01T10:01:00.000Z", "2", 2), ("2026-03-01T10:20:00.000Z", "4", 1)],
        ("peak", "{}"): [("2026-03-01T10:01:00.000Z", "6", 2), ("2026-03-01T11:00:00.000Z", "5", 1)],
        ("seats", "{}"): [
            ("2026-03-01T10:01:00.000Z", "8", 2),  # the newest event time wins, not the late segment
            ("2026-03-01T10:05:00.000Z", "5", 1),
            ("2026-03-01T11:00:00.000Z", "2", 2),  # here the late segment holds the newest event
        ],
        ("tokens", L): [
            ("2026-03-01T10:01:00.000Z", "8", 4),  # version 3 (6) + late (2); versions 1 and 2 ignored
            ("2026-03-01T10:02:00.000Z", "7", 2),  # re-delivered identically: counted once
            ("2026-03-01T19:00:00.000Z", "1", 1),
        ],
        ("tokens", S): [("2026-03-01T10:05:00.000Z", "10", 1)],
        ("users", "{}"): [("2026-03-01T10:01:00.000Z", "3", 3), ("2026-03-01T10:30:00.000Z", "2", 2)],
    }


def test_minute_ranges_are_half_open(reader: StorageReader) -> None:
    scope = Scope(customer=ACME, granularity="minute", start=utc("2026-03-01 10:02"), end=utc("2026-03-01 19:00"))
    rows = queries.series(reader, scope)
    assert [(r["meter"], r["bucket"]) for r in rows] == [
        ("calls", "2026-03-01T10:40:00.000Z"),
        ("low", "2026-03-01T10:20:00.000Z"),
        ("peak", "2026-03-01T11:00:00.000Z"),
        ("seats", "2026-03-01T10:05:00.000Z"),
        ("seats", "2026-03-01T11:00:00.000Z"),
        ("tokens", "2026-03-01T10:02:00.000Z"),
        ("tokens", "2026-03-01T10:05:00.000Z"),
        ("users", "2026-03-01T10:30:00.000Z"),
    ]


def test_hours_merge_minutes_by_aggregation(reader: StorageReader) -> None:
    assert points(everything(reader, ACME)["hour"]) == {
        ("calls", "{}"): [("2026-03-01T10:00:00.000Z", "6", 6)],  # 4 + 2
        ("low", "{}"): [("2026-03-01T10:00:00.000Z", "2", 3)],  # min(2, 4)
        ("peak", "{}"): [("2026-03-01T10:00:00.000Z", "6", 2), ("2026-03-01T11:00:00.000Z", "5", 1)],  # stale 9 ignored
        ("seats", "{}"): [("2026-03-01T10:00:00.000Z", "5", 3), ("2026-03-01T11:00:00.000Z", "2", 2)],  # newest event
        ("tokens", L): [
            ("2026-03-01T10:00:00.000Z", "15", 6),  # 8 + 7
            ("2026-03-01T19:00:00.000Z", "1", 1),
            ("2026-04-02T08:00:00.000Z", "4", 1),
        ],
        ("tokens", S): [("2026-03-01T10:00:00.000Z", "10", 1)],
        ("users", "{}"): [("2026-03-01T10:00:00.000Z", "4", 5)],  # |{u1,u2,u3} ∪ {u2,u4}| = 4, not 3 + 2; u9 was stale
    }


def test_a_bucket_cut_by_the_range_holds_only_the_minutes_in_range(reader: StorageReader) -> None:
    scope = Scope(customer=ACME, meter="tokens", granularity="hour", start=utc("2026-03-01 10:02"), end=utc("2026-03-01 11:00"))
    assert points(queries.series(reader, scope)) == {
        ("tokens", L): [("2026-03-01T10:00:00.000Z", "7", 2)],
        ("tokens", S): [("2026-03-01T10:00:00.000Z", "10", 1)],
    }


def test_days_follow_the_customers_local_midnight(reader: StorageReader) -> None:
    day = points(everything(reader, ACME)["day"])
    assert day[("tokens", L)] == [
        ("2026-02-28T18:30:00.000Z", "15", 6),
        ("2026-03-01T18:30:00.000Z", "1", 1),  # 19:00 UTC is 00:30 on March 2 in Kolkata
        ("2026-04-01T18:30:00.000Z", "4", 1),
    ]
    assert {key: line for key, line in day.items() if key != ("tokens", L)} == {
        ("calls", "{}"): [("2026-02-28T18:30:00.000Z", "6", 6)],
        ("low", "{}"): [("2026-02-28T18:30:00.000Z", "2", 3)],
        ("peak", "{}"): [("2026-02-28T18:30:00.000Z", "6", 3)],
        ("seats", "{}"): [("2026-02-28T18:30:00.000Z", "2", 5)],
        ("tokens", S): [("2026-02-28T18:30:00.000Z", "10", 1)],
        ("users", "{}"): [("2026-02-28T18:30:00.000Z", "4", 5)],
    }


def test_days_across_a_dst_change_are_23_hours(reader: StorageReader) -> None:
    rows = queries.series(reader, Scope(customer=DST, granularity="day", **WIDE))
    assert points(rows) == {
        ("tokens", "{}"): [
            ("2026-03-07T05:00:00.000Z", "8", 1),
            ("2026-03-08T05:00:00.000Z", "5", 2),  # 4 at local 00:00 EST + 1 at local 23:30 EDT
            ("2026-03-09T04:00:00.000Z", "2", 1),
        ]
    }
    hours = queries.series(
        reader, Scope(customer=DST, granularity="hour", start=utc("2026-03-08 00:00"), end=utc("2026-03-10 00:00"))
    )
    assert [(r["bucket"], r["value"]) for r in hours] == [
        ("2026-03-08T04:00:00.000Z", "8"),
        ("2026-03-08T05:00:00.000Z", "4"),
        ("2026-03-09T03:00:00.000Z", "1"),
        ("2026-03-09T04:00:00.000Z", "2"),
    ]
    [period] = queries.periods(reader, Scope(customer=DST, **WIDE))
    assert (period["period_start"], period["period_end"], period["total"], period["status"]) == (
        "2026-03-01T05:00:00.000Z",
        "2026-04-01T04:00:00.000Z",
        "15",
        "provisional",
    )


def test_series_filter_by_meter(reader: StorageReader) -> None:
    rows = queries.series(reader, Scope(customer=ACME, meter="users", granularity="hour", **HOURS))
    assert [(r["meter"], r["bucket"], r["value"], r["aggregation"]) for r in rows] == [
        ("users", "2026-03-01T10:00:00.000Z", "4", "unique_count")
    ]
    assert queries.series(reader, Scope(customer=ACME, meter="no-such-meter", granularity="day", **WIDE)) == []


def test_periods_show_the_highest_final_revision_else_the_running_total(reader: StorageReader) -> None:
    rows = everything(reader, ACME)["periods"]
    assert totals(rows, "period_end", "total", "event_count", "status", "revision") == [
        ("calls", "{}", MARCH, APRIL, "6", 6, "final", 1),
        ("low", "{}", MARCH, APRIL, "2", 3, "provisional", 0),
        ("peak", "{}", MARCH, APRIL, "6", 3, "provisional", 0),
        ("seats", "{}", MARCH, APRIL, "2", 5, "provisional", 0),
        ("tokens", L, MARCH, APRIL, "17", 8, "final", 2),  # not the running 16, not revision 1
        ("tokens", L, APRIL, MAY, "4", 1, "provisional", 0),
        ("tokens", S, MARCH, APRIL, "10", 1, "provisional", 0),
        ("users", "{}", MARCH, APRIL, "4", 5, "provisional", 0),
    ]
    as_of = {(r["meter"], r["group_key"], r["period_start"]): r["as_of_minute"] for r in rows}
    assert as_of[("tokens", L, APRIL)] == "2026-04-02T08:00:00.000Z"
    assert as_of[("tokens", L, MARCH)] == "2026-03-01T19:00:00.000Z"
    assert as_of[("seats", "{}", MARCH)] == "2026-03-01T11:00:00.000Z"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["as_of_loaded"]) for r in rows)


def test_periods_are_those_starting_in_the_range(reader: StorageReader) -> None:
    april_on = queries.periods(reader, Scope(customer=ACME, start=utc("2026-03-15 00:00"), end=WIDE["end"]))
    assert totals(april_on, "total") == [("tokens", L, APRIL, "4")]
    before_april = queries.periods(reader, Scope(customer=ACME, meter="tokens", start=WIDE["start"], end=utc("2026-03-31 18:30")))
    assert totals(before_april, "total", "status") == [
        ("tokens", L, MARCH, "17", "final"),
        ("tokens", S, MARCH, "10", "provisional"),
    ]


def test_usage_so_far_is_the_newest_period_per_meter_and_group(reader: StorageReader) -> None:
    rows = everything(reader, ACME)["usage"]
    assert totals(rows, "period_end", "total", "event_count", "status", "revision", "as_of_minute") == [
        ("calls", "{}", MARCH, APRIL, "6", 6, "final", 1, "2026-03-01T10:40:00.000Z"),
        ("low", "{}", MARCH, APRIL, "2", 3, "provisional", 0, "2026-03-01T10:20:00.000Z"),
        ("peak", "{}", MARCH, APRIL, "6", 3, "provisional", 0, "2026-03-01T11:00:00.000Z"),
        ("seats", "{}", MARCH, APRIL, "2", 5, "provisional", 0, "2026-03-01T11:00:00.000Z"),
        ("tokens", L, APRIL, MAY, "4", 1, "provisional", 0, "2026-04-02T08:00:00.000Z"),  # newer than March's final
        ("tokens", S, MARCH, APRIL, "10", 1, "provisional", 0, "2026-03-01T10:05:00.000Z"),
        ("users", "{}", MARCH, APRIL, "4", 5, "provisional", 0, "2026-03-01T10:30:00.000Z"),
    ]
    assert [r["aggregation"] for r in rows] == ["count", "min", "max", "latest", "sum", "sum", "unique_count"]
    tokens = queries.usage(reader, Scope(customer=ACME, meter="tokens"))
    assert totals(tokens, "total") == [("tokens", L, APRIL, "4"), ("tokens", S, MARCH, "10")]


def test_usage_since_drops_meters_without_usage_since_then(reader: StorageReader) -> None:
    since_april = queries.usage(reader, Scope(customer=ACME, start=utc("2026-04-01 00:00")))
    assert totals(since_april, "total", "status") == [("tokens", L, APRIL, "4", "provisional")]
    assert queries.usage(reader, Scope(customer=ACME, start=utc("2026-04-02 08:01"))) == []


def test_usage_since_a_time_within_a_period_keeps_only_keys_with_usage_since_then(reader: StorageReader) -> None:
    rows = queries.usage(reader, Scope(customer=ACME, start=utc("2026-03-01 10:30")))
    assert [(r["meter"], r["group_key"]) for r in rows] == [
        ("calls", "{}"),
        ("peak", "{}"),
        ("seats", "{}"),
        ("tokens", L),
        ("users", "{}"),
    ]


def test_finals_pick_the_highest_revision(reader: StorageReader) -> None:
    rows = everything(reader, ACME)["finals"]
    assert totals(rows, "period_end", "total", "event_count", "revision", "finalized_at_watermark") == [
        ("calls", "{}", MARCH, APRIL, "6", 6, 1, "2026-04-02T18:30:00.000Z"),
        ("tokens", L, MARCH, APRIL, "17", 8, 2, "2026-04-02T18:30:00.000Z"),
    ]
    assert totals(queries.finals(reader, Scope(customer=ACME, meter="tokens")), "total") == [("tokens", L, MARCH, "17")]
    assert queries.finals(reader, Scope(customer=ACME, start=utc("2026-03-01 00:00"))) == []  # periods starting in [from, to)
    everyone = queries.finals(reader, Scope())
    assert {r["customer_id"] for r in everyone} == {ACME, *LOOKALIKES}
    assert len(everyone) == 2 + len(LOOKALIKES)  # one row per key: revisions collapse


def test_the_operator_customer_list_holds_every_customer_once(reader: StorageReader) -> None:
    listed = {c["customer_id"]: c for c in queries.customers(reader)}
    assert set(listed) == set(CUSTOMERS)
    assert listed[ACME] == {
        "customer_id": ACME,
        "first_minute": "2026-03-01T10:01:00.000Z",
        "last_minute": "2026-04-02T08:00:00.000Z",
        "meters": ["calls", "low", "peak", "seats", "tokens", "users"],
    }
    assert listed["acme'"]["meters"] == ["tokens"] and listed[DST]["last_minute"] == "2026-03-09T04:30:00.000Z"
    assert queries.health(reader)["customers"] == len(CUSTOMERS)
