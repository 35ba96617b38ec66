"""The dashboard questions' pure parts: scopes, times, default ranges, query names, rendering, routing.

No ClickHouse here: questions are asked of an in-memory Reader that records what it was asked and
answers ``customer_extent`` (the only query whose answer the Python side interprets) from a fixed row.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickhouse import queries
from clickhouse.queries import (
    DEFAULT_SPAN,
    GRANULARITIES,
    MAX_SPAN,
    QueryError,
    Scope,
    parse_time,
    plain,
    render,
    series_range,
    sql_of,
    with_group_by,
)

CH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")  # what a DateTime64(3) parameter must look like
NAMED = sorted(p.stem for p in queries.QUERIES_DIR.glob("*.sql"))


class FakeReader:
    """A Reader in memory: answers customer_extent with a fixed newest minute, other names from `answers`."""

    def __init__(self, last_minute: str | None = None, answers: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.last_minute = last_minute
        self.answers = answers or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.calls.append((name, dict(parameters)))
        if name == "customer_extent":
            first = None if self.last_minute is None else "2026-01-01T00:00:00.000Z"
            return [{"first_minute": first, "last_minute": self.last_minute}]
        return [dict(r) for r in self.answers.get(name, [])]


# --- Scope ------------------------------------------------------------------------------------


def test_a_scope_defaults_to_hours_over_everything() -> None:
    scope = Scope()
    assert (scope.customer, scope.meter, scope.start, scope.end, scope.granularity) == ("", "", None, None, "hour")
    for granularity in GRANULARITIES:
        assert Scope(customer="acme", granularity=granularity).granularity == granularity


@pytest.mark.parametrize("granularity", ["week", "", "HOUR", "minutes", " hour"])
def test_scope_refuses_an_unknown_granularity_and_lists_the_valid_ones(granularity: str) -> None:
    with pytest.raises(QueryError, match=re.escape(f"--granularity={granularity!r}: must be one of minute, hour, day")):
        Scope(customer="a", granularity=granularity)


def test_scope_refuses_naive_times_naming_the_option() -> None:
    aware = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(QueryError, match=r"^--from: give a time zone"):
        Scope(customer="a", start=datetime(2026, 3, 1))
    with pytest.raises(QueryError, match=r"^--to: give a time zone"):
        Scope(customer="a", start=aware, end=datetime(2026, 3, 2))


def test_scope_refuses_an_empty_or_reversed_range_and_shows_both_ends_in_utc() -> None:
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(
        QueryError, match=re.escape("--from (2026-03-01T00:00:00.000Z) must be before --to (2026-03-01T00:00:00.000Z)")
    ):
        Scope(customer="a", start=moment, end=moment)
    later_in_another_zone = datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))  # 23:00 UTC the day before
    with pytest.raises(QueryError, match=re.escape("--to (2026-02-28T23:00:00.000Z)")):
        Scope(customer="a", start=moment, end=later_in_another_zone)
    assert Scope(customer="a", start=moment, end=moment + timedelta(milliseconds=1)).end == moment + timedelta(milliseconds=1)


def test_require_customer_names_the_question_and_both_ways_to_give_one() -> None:
    assert Scope(customer="acme").require_customer("usage") == "acme"
    with pytest.raises(QueryError) as error:
        Scope().require_customer("series")
    assert str(error.value).startswith("series: a customer is required") and "--customer" in str(error.value)
    assert "?customer=" in str(error.value)


def test_customer_scoped_questions_require_a_customer_before_asking_anything() -> None:
    reader = FakeReader("2026-03-01T00:00:00.000Z")
    for question in (queries.series, queries.periods):
        with pytest.raises(QueryError, match="a customer is required"):
            question(reader, Scope())
    assert reader.calls == []


# --- parse_time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T00:00:00Z", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T00:00:00z", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01t00:00:00Z", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01 00:00:00Z", datetime(2026, 3, 1, tzinfo=UTC)),
        ("  2026-03-01T00:00:00Z\n", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T00:00:00+00:00", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T05:30:00+05:30", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-02-28T19:00:00-05:00", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-02-28T23:00:00.500-01:00", datetime(2026, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2026-03-01T00:00:00.123456Z", datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        (" 2026-03-01 ", datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_rfc3339_and_dates_and_returns_utc(text: str, expected: datetime) -> None:
    moment = parse_time(text, "--from")
    assert moment == expected and moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "now",
        "",
        "   ",
        "2026-13-01",
        "2026-02-30",
        "2026-03-01T25:00:00Z",
        "1772323200",
        "03/01/2026",
        "2026-03-01T00:00:00+25:00",
    ],
)
@pytest.mark.parametrize("option", ["--from", "--to", "from"])
def test_parse_time_refuses_garbage_naming_the_option_and_the_fix(text: str, option: str) -> None:
    with pytest.raises(QueryError) as error:
        parse_time(text, option)
    message = str(error.value)
    assert message.startswith(f"{option}={text!r}: "), message
    assert "2026-03-01T00:00:00Z" in message  # an example of what works


@pytest.mark.parametrize("text", ["2026-03-01T00:00:00", "2026-03-01 10:00", "2026-03-01T10:00:00.000"])
def test_parse_time_refuses_a_time_without_a_zone(text: str) -> None:
    with pytest.raises(QueryError, match=re.escape(f"--to={text!r}: give a time zone")):
        parse_time(text, "--to")


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_parse_time_refuses_a_time_outside_the_representable_range(text: str) -> None:
    with pytest.raises(QueryError, match=re.escape(f"from={text!r}")):
        parse_time(text, "from")


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2299, 12, 31), timezones=st.just(UTC)))
def test_parse_time_reads_back_what_plain_prints(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    text = plain(moment)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", text), text
    assert parse_time(text, "--from") == moment


@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2299, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_parse_time_keeps_the_instant_of_any_offset(local: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = local.replace(tzinfo=zone)
    parsed = parse_time(moment.isoformat(), "--from")
    assert parsed == moment and parsed.tzinfo == UTC


@given(st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2299, 12, 31).date()))
def test_a_date_is_its_midnight_in_utc(day: Any) -> None:
    assert parse_time(day.isoformat(), "--from") == datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- plain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("14.000000000"), "14"),
        (Decimal("100"), "100"),
        (Decimal("1E+2"), "100"),
        (Decimal("0.000000001"), "0.000000001"),
        (Decimal("-416.530000000"), "-416.53"),
        (Decimal("0E-9"), "0"),
        (Decimal("-0.000000000"), "0"),
        (Decimal("1234567890123456789.123456789"), "1234567890123456789.123456789"),  # 28 digits
        (datetime(2026, 3, 1, 18, 30, tzinfo=UTC), "2026-03-01T18:30:00.000Z"),
        (datetime(2026, 3, 1, 18, 30), "2026-03-01T18:30:00.000Z"),  # naive = UTC (clickhouse-connect's DateTime64)
        (datetime(2026, 3, 2, 0, 0, 0, 123999, tzinfo=timezone(timedelta(hours=5, minutes=30))), "2026-03-01T18:30:00.123Z"),
        (7, 7),
        (None, None),
        ("text", "text"),
        (["a"], ["a"]),
    ],
)
def test_plain_prints_exact_decimals_and_utc_times(value: Any, expected: Any) -> None:
    assert plain(value) == expected


@given(
    st.decimals(min_value=Decimal("-1e19") + 1, max_value=Decimal("1e19") - 1, places=9, allow_nan=False, allow_infinity=False)
)
def test_plain_decimals_are_exact_and_have_no_exponent_or_trailing_zeros(value: Decimal) -> None:
    text = plain(value)
    assert Decimal(text) == value
    assert re.fullmatch(r"-?(0|[1-9]\d*)(\.\d*[1-9])?", text), text


@pytest.mark.parametrize(
    "text", ["10000000000000000000.000000001", "99999999999999999999999999999.999999999", "-12345678901234567890.123456789"]
)
def test_plain_is_exact_for_every_decimal_38_9(text: str) -> None:
    assert plain(Decimal(text)) == text


# --- series_range -----------------------------------------------------------------------------


def test_series_range_ends_at_the_newest_usage_by_default() -> None:
    reader = FakeReader("2026-03-31T22:17:00.000Z")
    start, end = series_range(reader, Scope(customer="acme", granularity="minute"))
    assert (start, end) == (datetime(2026, 3, 31, 16, 18, tzinfo=UTC), datetime(2026, 3, 31, 22, 18, tzinfo=UTC))
    start, end = series_range(reader, Scope(customer="acme", granularity="hour"))
    assert (start, end) == (datetime(2026, 3, 24, 23, tzinfo=UTC), datetime(2026, 3, 31, 23, tzinfo=UTC))
    start, end = series_range(reader, Scope(customer="acme", granularity="day"))
    assert end == datetime(2026, 3, 31, 23, tzinfo=UTC) and end - start == timedelta(days=62)
    assert reader.calls == [("customer_extent", {"customer": "acme"})] * 3


def test_series_range_on_an_hour_boundary_still_includes_the_newest_minute() -> None:
    reader = FakeReader("2026-03-31T23:00:00.000Z")
    start, end = series_range(reader, Scope(customer="acme", granularity="hour"))
    assert start <= datetime(2026, 3, 31, 23, tzinfo=UTC) < end == datetime(2026, 4, 1, 0, tzinfo=UTC)
    start, end = series_range(reader, Scope(customer="acme", granularity="minute"))
    assert end == datetime(2026, 3, 31, 23, 1, tzinfo=UTC)


def test_series_range_without_usage_ends_now() -> None:
    reader = FakeReader(None)
    before = datetime.now(UTC)
    start, end = series_range(reader, Scope(customer="nobody", granularity="minute"))
    after = datetime.now(UTC)
    assert before + timedelta(minutes=1) <= end <= after + timedelta(minutes=1)
    assert end - start == DEFAULT_SPAN["minute"]
    start, end = series_range(reader, Scope(customer="nobody", granularity="hour"))
    assert (end.minute, end.second, end.microsecond) == (0, 0, 0) and before < end <= after + timedelta(hours=1, minutes=1)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_series_range_fills_a_missing_end_with_the_default_span(granularity: str) -> None:
    reader = FakeReader("2026-03-31T22:17:00.000Z")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert series_range(reader, Scope(customer="a", start=start, granularity=granularity)) == (
        start,
        start + DEFAULT_SPAN[granularity],
    )
    end = datetime(2026, 3, 10, tzinfo=timezone(timedelta(hours=2)))
    assert series_range(reader, Scope(customer="a", end=end, granularity=granularity)) == (end - DEFAULT_SPAN[granularity], end)
    assert reader.calls == []  # one given end needs no extent query


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_series_range_serves_up_to_max_span_and_refuses_longer(granularity: str) -> None:
    reader = FakeReader(None)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    longest = MAX_SPAN[granularity]
    assert series_range(reader, Scope(customer="a", start=start, end=start + longest, granularity=granularity)) == (
        start,
        start + longest,
    )
    too_long = Scope(customer="a", start=start, end=start + longest + timedelta(milliseconds=1), granularity=granularity)
    with pytest.raises(QueryError) as error:
        series_range(reader, too_long)
    message = str(error.value)
    assert f"too long for --granularity={granularity}" in message and f"at most {longest}" in message
    assert "narrow the range or use a coarser granularity" in message
    assert reader.calls == []


def test_default_spans_fit_their_maximum() -> None:
    assert set(DEFAULT_SPAN) == set(MAX_SPAN) == set(GRANULARITIES)
    for granularity in GRANULARITIES:
        assert DEFAULT_SPAN[granularity] <= MAX_SPAN[granularity]


@pytest.mark.parametrize(
    "scope",
    [
        Scope(customer="a", start=datetime(9999, 12, 31, tzinfo=UTC), granularity="day"),
        Scope(customer="a", end=datetime(1, 1, 1, tzinfo=UTC), granularity="hour"),
    ],
    ids=["from-9999", "to-0001"],
)
def test_series_range_refuses_a_range_that_cannot_be_represented(scope: Scope) -> None:
    with pytest.raises(QueryError):
        series_range(FakeReader(None), scope)


# --- which named query each question asks, with which parameters --------------------------------


def test_series_asks_the_view_of_its_granularity_with_utc_parameters() -> None:
    start = datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    for granularity in GRANULARITIES:
        reader = FakeReader(None)
        queries.series(
            reader, Scope(customer="acme", meter="tokens", start=start, end=start + timedelta(hours=1), granularity=granularity)
        )
        assert reader.calls == [
            (
                f"series_{granularity}",
                {"customer": "acme", "meter": "tokens", "from": "2026-03-01 00:30:00.000", "to": "2026-03-01 01:30:00.000"},
            )
        ]


def test_periods_and_customer_finals_bind_customer_meter_and_range() -> None:
    reader = FakeReader()
    queries.periods(reader, Scope(customer="a'b", meter="m"))
    queries.finals(reader, Scope(customer="a'b", start=datetime(2026, 3, 1, 0, 0, 0, 999999, tzinfo=UTC)))
    assert reader.calls == [
        (
            "customer_periods",
            {"customer": "a'b", "meter": "m", "from": "1970-01-01 00:00:00.000", "to": "2200-01-01 00:00:00.000"},
        ),
        ("customer_finals", {"customer": "a'b", "meter": "", "from": "2026-03-01 00:00:00.999", "to": "2200-01-01 00:00:00.000"}),
    ]


def test_usage_of_one_customer_reads_the_scoped_view_from_since() -> None:
    reader = FakeReader()
    queries.usage(reader, Scope(customer="acme", meter="tokens"))
    queries.usage(
        reader, Scope(customer="acme", start=datetime(2026, 4, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))))
    )
    assert reader.calls == [
        ("customer_usage", {"customer": "acme", "meter": "tokens", "since": "1970-01-01 00:00:00.000"}),
        ("customer_usage", {"customer": "acme", "meter": "", "since": "2026-04-01 00:00:00.000"}),
    ]


def test_operator_usage_and_finals_without_a_customer_filter_in_python() -> None:
    rows = [
        {"customer_id": "a", "meter": "tokens", "period_start": "2026-02-28T18:30:00.000Z"},
        {"customer_id": "b", "meter": "calls", "period_start": "2026-03-31T18:30:00.000Z"},
        {"customer_id": "c", "meter": "tokens", "period_start": "2026-04-30T18:30:00.000Z"},
    ]
    reader = FakeReader(answers={"usage": rows, "finals": rows})
    assert queries.usage(reader, Scope()) == rows
    assert [r["customer_id"] for r in queries.usage(reader, Scope(meter="tokens"))] == ["a", "c"]
    april = Scope(start=datetime(2026, 3, 31, 18, 30, tzinfo=UTC), end=datetime(2026, 4, 30, 18, 30, tzinfo=UTC))
    assert [r["customer_id"] for r in queries.finals(reader, april)] == ["b"]  # [from, to): the end is excluded
    assert [r["customer_id"] for r in queries.finals(reader, Scope(meter="tokens"))] == ["a", "c"]
    assert {name for name, _ in reader.calls} == {"usage", "finals"}
    assert all(parameters == {"customer": ""} for _, parameters in reader.calls)


def test_health_adds_dead_letters_per_reason_and_customers_reads_the_directory() -> None:
    reasons = [{"reason": "malformed_json", "total": 3, "last_24h": 1, "newest": "2026-03-01T00:00:00.000Z"}]
    reader = FakeReader(
        answers={"health": [{"dead_letters": 3}], "dead_letter_reasons": reasons, "customers": [{"customer_id": "a"}]}
    )
    assert queries.health(reader) == {"dead_letters": 3, "dead_letter_reasons": reasons}
    assert queries.customers(reader) == [{"customer_id": "a"}]
    assert [name for name, _ in reader.calls] == ["health", "dead_letter_reasons", "customers"]


# --- named queries --------------------------------------------------------------------------------


def test_every_named_query_can_be_named() -> None:
    assert {
        "usage",
        "series_minute",
        "series_hour",
        "series_day",
        "customer_usage",
        "customer_periods",
        "customer_finals",
    } <= set(NAMED)
    for name in NAMED:
        assert sql_of(name) == (queries.QUERIES_DIR / f"{name}.sql").read_text()


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "../migrations/0001_raw_events",
        "..",
        "/etc/passwd",
        "health; DROP TABLE x",
        "no_such_query",
        "health.sql",
        "",
        "_",
        "HEALTH",
        " health",
    ],
)
def test_only_files_of_clickhouse_queries_can_be_named(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"no query named {name!r}")) as error:
        sql_of(name)
    assert "customer_usage" in str(error.value)  # lists what there is


@given(st.text(max_size=40).filter(lambda name: name not in NAMED))
def test_nothing_but_a_named_query_can_be_named(name: str) -> None:
    with pytest.raises(ValueError, match="no query named"):
        sql_of(name)


def test_every_named_query_binds_its_parameters_server_side() -> None:
    for name in NAMED:
        text = sql_of(name)
        assert "%(" not in text and "{customer}" not in text and "format(" not in text.lower(), name
        if name.startswith(("customer_", "series_")):
            assert "{customer:String}" in text, f"{name} must bind the customer server-side"


# --- rendering ------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"customer_id": "a", "total": "1.5", "event_count": 3, "group_by": {"model": "x"}},
    {"customer_id": 'bb,"c"', "total": "-20", "event_count": None, "group_by": {}},
]


def test_render_jsonl_and_json() -> None:
    assert render(ROWS[:1], "jsonl") == '{"customer_id":"a","total":"1.5","event_count":3,"group_by":{"model":"x"}}\n'
    assert [json.loads(line) for line in render(ROWS, "jsonl").splitlines()] == ROWS
    text = render(ROWS, "json")
    assert text.endswith("]\n") and text.startswith("[\n  {") and json.loads(text) == ROWS
    assert (render([], "jsonl"), render([], "json")) == ("", "[]\n")


def test_render_csv_quotes_and_serializes_objects() -> None:
    text = render(ROWS, "csv")
    assert text.splitlines()[0] == "customer_id,total,event_count,group_by"
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed == [
        {"customer_id": "a", "total": "1.5", "event_count": "3", "group_by": '{"model": "x"}'},
        {"customer_id": 'bb,"c"', "total": "-20", "event_count": "", "group_by": "{}"},
    ]
    assert render([], "csv") == ""  # CSV, never a "(no rows)" line a CSV reader would take for a header


def test_render_csv_without_rows_is_the_header_line() -> None:
    assert render([], "csv", ["customer_id", "total"]) == "customer_id,total\r\n"
    assert render([], "json", ["customer_id"]) == "[]\n"


@pytest.mark.parametrize(
    "name",
    [
        "usage",
        "customer_usage",
        "series_minute",
        "finals",
        "customer_periods",
        "customers",
        "corrections",
        "dead_letters",
        "amendments",
    ],
)
def test_columns_of_a_query_are_its_select_list(name: str) -> None:
    from clickhouse.queries import columns_of, sql_of

    columns = columns_of(name)
    assert columns and len(set(columns)) == len(columns)
    body = sql_of(name)
    assert all(c in body for c in columns)
    if name in ("usage", "finals"):
        assert columns[:3] == ["customer_id", "meter", "group_key"] and "total" in columns


def test_render_table_aligns_columns() -> None:
    lines = render(ROWS, "table").splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["customer_id", "total", "event_count", "group_by"]
    starts = [lines[0].index(c) for c in ("total", "event_count", "group_by")]
    assert lines[1][starts[0] : starts[0] + 3] == "1.5" and lines[2][starts[0] : starts[0] + 3] == "-20"
    assert lines[1][starts[1]] == "3" and lines[2][starts[1] : starts[1] + 4] == "None"
    assert lines[1][starts[2] :].rstrip() == '{"model": "x"}' and lines[2][starts[2] :].rstrip() == "{}"
    assert render([], "table") == "(no rows)\n"


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "meter": st.text(max_size=8),
                "total": st.decimals(places=3, allow_nan=False, allow_infinity=False).map(plain),
                "n": st.integers(),
            }
        ),
        max_size=5,
    )
)
def test_render_json_formats_round_trip(rows: list[dict[str, Any]]) -> None:
    assert json.loads(render(rows, "json")) == rows
    assert [json.loads(line) for line in render(rows, "jsonl").splitlines()] == rows


def test_with_group_by_turns_the_canonical_key_into_an_object_without_touching_the_row() -> None:
    row = {"meter": "tokens", "group_key": '{"model":"l","region":"eu"}', "total": "1"}
    assert with_group_by(row) == {"meter": "tokens", "total": "1", "group_by": {"model": "l", "region": "eu"}}
    assert row["group_key"] == '{"model":"l","region":"eu"}'  # a copy was changed
    assert with_group_by({"group_key": ""})["group_by"] == {}
    assert with_group_by({"group_key": "{}"})["group_by"] == {}
    assert with_group_by({"meter": "x"}) == {"meter": "x"}
