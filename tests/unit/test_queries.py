"""The dashboard questions' pure parts: scopes, times, default ranges, query names, rendering."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickhouse import queries
from clickhouse.queries import QueryError, Scope, parse_time, plain, series_range, sql_of


class FakeReader:
    """Answers customer_extent with a fixed newest minute and records every call."""

    def __init__(self, last_minute: str | None) -> None:
        self.last_minute = last_minute
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.calls.append((name, dict(parameters)))
        if name == "customer_extent":
            return [{"first_minute": None, "last_minute": self.last_minute}]
        return []


def test_scope_refuses_an_unknown_granularity_naive_times_and_an_empty_range() -> None:
    with pytest.raises(QueryError, match="--granularity='week'"):
        Scope(customer="a", granularity="week")
    with pytest.raises(QueryError, match="--from: give a time zone"):
        Scope(customer="a", start=datetime(2026, 3, 1))
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(QueryError, match="must be before --to"):
        Scope(customer="a", start=moment, end=moment)


def test_customer_scoped_questions_require_a_customer() -> None:
    reader = FakeReader("2026-03-01T00:00:00.000Z")
    for question in (queries.series, queries.periods):
        with pytest.raises(QueryError, match="a customer is required"):
            question(reader, Scope())
    assert reader.calls == []  # refused before any query ran


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T00:00:00Z", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T05:30:00+05:30", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-02-28T23:00:00.500-01:00", datetime(2026, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_rfc3339_and_dates(text: str, expected: datetime) -> None:
    assert parse_time(text, "--from") == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-03-01T00:00:00", "2026-13-01", ""])
def test_parse_time_names_the_option_and_the_fix(text: str) -> None:
    with pytest.raises(QueryError, match="--to=") as error:
        parse_time(text, "--to")
    assert "2026-03-01T00:00:00Z" in str(error.value)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1), timezones=st.just(UTC)))
def test_parse_time_reads_back_what_plain_prints(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parse_time(plain(moment), "--from") == moment


def test_series_range_ends_at_the_newest_usage_by_default() -> None:
    reader = FakeReader("2026-03-31T22:17:00.000Z")
    start, end = series_range(reader, Scope(customer="a", granularity="minute"))
    assert end == datetime(2026, 3, 31, 22, 18, tzinfo=UTC) and end - start == timedelta(hours=6)
    start, end = series_range(reader, Scope(customer="a", granularity="hour"))
    assert end == datetime(2026, 3, 31, 23, tzinfo=UTC) and end - start == timedelta(days=7)
    start, end = series_range(reader, Scope(customer="a", granularity="day"))
    assert end - start == timedelta(days=62)


def test_series_range_fills_the_missing_end_and_refuses_too_long_ranges() -> None:
    reader = FakeReader(None)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert series_range(reader, Scope(customer="a", start=start, granularity="hour")) == (start, start + timedelta(days=7))
    end = datetime(2026, 3, 10, tzinfo=timezone(timedelta(hours=2)))
    assert series_range(reader, Scope(customer="a", end=end, granularity="minute"))[0] == end - timedelta(hours=6)
    with pytest.raises(QueryError, match="too long for --granularity=minute"):
        series_range(reader, Scope(customer="a", start=start, end=start + timedelta(days=3), granularity="minute"))
    assert reader.calls == []  # an explicit end needs no extent query


def test_series_asks_the_view_of_its_granularity_with_utc_parameters() -> None:
    reader = FakeReader(None)
    start = datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    queries.series(reader, Scope(customer="acme", meter="tokens", start=start, end=start + timedelta(days=1), granularity="day"))
    assert reader.calls == [
        (
            "series_day",
            {"customer": "acme", "meter": "tokens", "from": "2026-03-01 00:30:00.000", "to": "2026-03-02 00:30:00.000"},
        )
    ]


@pytest.mark.parametrize("name", ["../migrations/0001_raw_events", "health; DROP TABLE x", "no_such_query", "health.sql"])
def test_only_files_of_clickhouse_queries_can_be_named(name: str) -> None:
    with pytest.raises(ValueError, match="no query named"):
        sql_of(name)


def test_every_named_query_is_parameterized_not_formatted() -> None:
    for path in queries.QUERIES_DIR.glob("*.sql"):
        text = path.read_text()
        assert "%(" not in text and "{customer}" not in text, path.name
        if "customer_" in path.stem or path.stem.startswith("series_"):
            assert "{customer:String}" in text, f"{path.name} must bind the customer server-side"


def test_render_formats() -> None:
    rows = [{"customer_id": "a", "total": "1.5", "group_by": {"model": "x"}}]
    assert queries.render(rows, "jsonl") == '{"customer_id":"a","total":"1.5","group_by":{"model":"x"}}\n'
    assert queries.render(rows, "csv").splitlines() == ["customer_id,total,group_by", 'a,1.5,"{""model"": ""x""}"']
    table = queries.render(rows, "table").splitlines()
    assert table[0].split() == ["customer_id", "total", "group_by"] and table[1].startswith("a ")
    assert queries.render([], "table") == "(no rows)\n"
