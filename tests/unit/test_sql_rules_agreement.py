"""One set of SQL rules: ClickHouse's functions (clickhouse/migrations/0009, 0010) agree with the Python reference.

``metering_merge_v1`` is the aggregation merge every view and check uses; ``udfs/aggregators.py``
(``merge`` + ``Partial.result``) is its reference. ``metering_valid_event_v2`` is the job's
record-level rules as the replay applies them to ``raw_events`` rows; ``schemas/validate.py``
(``job_reason``) is its reference. Both sides get the same cases: named edge cases (an empty
segment, one value, ties for min / max / latest, decimals of 38 digits, unique_count over repeated
values) and cases hypothesis generates; a rule changed on one side only fails here.

The merge is checked where it is used, not only as a function: partials are written into
``aggregate_segments`` in their wire form (``partial_json``) and read back through the views (minute,
hour, day, period), check_rollups, check_finals and check_recompute, because a view holds the
function's body as it was when the view was created (a changed function without recreated views
fails here too). chDB runs in-process, on a throwaway database of the session's chDB directory.

Two differences are part of the contract, both from what a segment row carries:
  * where the reference has no value (an empty max / min / latest partial, which ``result()``
    shows as 0) ClickHouse has NULL;
  * latest ties: segments carry the latest value's time but not its event_id, so when segments tie
    on the time with different values ClickHouse takes any of them, where the reference breaks the
    tie by event_id (the job's own finals follow the reference). Events carry both, and there the
    two agree exactly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import sql_of
from schemas.validate import job_reason
from udfs.aggregators import Partial, empty, merge_all, of_event, partial_json
from udfs.meters import Aggregation

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
CUSTOMER = "rules"
HOUR = datetime(2026, 3, 1, 10, tzinfo=UTC)
PERIOD = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
WINDOW = {"from": datetime(2026, 3, 1, tzinfo=UTC), "to": datetime(2026, 3, 2, tzinfo=UTC)}
HUGE = Decimal("99999999999999999999999999999.999999999")  # 38 digits: the largest Decimal(38, 9)


@pytest.fixture(scope="module")
def storage(chdb_path: Any) -> Iterator[Storage]:
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_rules_{uuid.uuid4().hex[:12]}")
    with open_storage(settings) as opened:
        migrate(opened)
        yield opened
        opened.drop_database()


# --- written once ------------------------------------------------------------------------------------

#: Fragments only a definition of the rules holds: the merge's unique_count branch, the quantity pattern,
#: the event_id rule, the quantity's text read from the payload.
RULE_FRAGMENTS = (
    "toDecimal128(length(groupUniqArrayArray(",
    "[1-9][0-9]{0,28}",
    "'[\\\\x00-\\\\x1f]'",
    "JSONType(payload, 'quantity')",
)


def test_the_rules_are_written_once() -> None:
    """The queries call the functions; only the migrations that define them (0009 on) hold a rule's text.

    A changed rule is a new function version in a new migration (0010's ``_v2``), beside the old
    definition (applied history): a fragment may be in several of those, never in a query.
    """
    from clickhouse.migrate import discover, function_statements
    from clickhouse.queries import QUERIES_DIR

    queries = {path.name: path.read_text() for path in QUERIES_DIR.glob("*.sql")}
    definitions = {m.path.name: "\n".join(function_statements(m)) for m in discover() if m.version >= 9}
    for fragment in RULE_FRAGMENTS:
        assert not [name for name, text in queries.items() if fragment in text], fragment
        assert [name for name, text in definitions.items() if fragment in text], fragment
    for name in ("check_finals", "check_rollups", "check_recompute", "replay_examine"):
        assert "metering_" in sql_of(name) and ("_v1(" in sql_of(name) or "_v2(" in sql_of(name)), name
    assert "metering_valid_event_v2(" in sql_of("replay_examine") and "metering_quantity_text_v2(" in sql_of("check_recompute")


# --- the merge -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One meter's usage in one hour: per minute, the segments (partials) the job wrote."""

    aggregation: Aggregation
    minutes: tuple[tuple[Partial, ...], ...]

    def all_segments(self) -> list[Partial]:
        return [segment for minute in self.minutes for segment in minute]


Expected = frozenset[Decimal | None]


def expected(aggregation: Aggregation, segments: list[Partial]) -> Expected:
    """What ClickHouse may answer for the merge of ``segments``: the reference's value (NULL for no value; any tied latest)."""
    merged = merge_all(aggregation, segments)
    if aggregation in (Aggregation.MAX, Aggregation.MIN) and merged.extreme is None:
        return frozenset({None})
    if aggregation is Aggregation.LATEST:
        if merged.latest is None:
            return frozenset({None})
        newest = merged.latest[0]
        return frozenset(s.latest[2] for s in segments if s.latest is not None and s.latest[0] == newest)
    return frozenset({merged.result()})


def segment_rows(cases: list[Case]) -> list[list[Any]]:
    """``aggregate_segments`` rows, from each partial's wire form (what the job writes and the loader stores)."""
    rows: list[list[Any]] = []
    for number, case in enumerate(cases):
        for index, segments in enumerate(case.minutes):
            minute = HOUR + timedelta(minutes=index)
            for position, segment in enumerate(segments):
                wire = partial_json(segment)
                rows.append(
                    [
                        CUSTOMER, f"m{number}", "", case.aggregation.value, minute, HOUR.replace(hour=0), *PERIOD,
                        f"s{position}", 1, Decimal(wire["value"]), wire["event_count"], Decimal(wire["sum"]),
                        None if wire["max"] is None else Decimal(wire["max"]),
                        None if wire["min"] is None else Decimal(wire["min"]),
                        wire["distinct_values"], wire["latest_ms"],
                        None if wire["latest_value"] is None else Decimal(wire["latest_value"]),
                    ]
                )  # fmt: skip
    return rows


SEGMENT_COLUMNS = [
    "customer_id", "meter", "group_key", "aggregation", "minute", "day_start", "period_start", "period_end", "segment",
    "version", "value", "event_count", "sum_value", "max_value", "min_value", "distinct_values", "latest_ms", "latest_value",
]  # fmt: skip


def run(storage: Storage, name: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    result = storage.client.query(sql_of(name), parameters=parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def rows_of(storage: Storage, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    result = storage.client.query(sql, parameters=parameters or {})
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def assert_merges_agree(storage: Storage, cases: list[Case]) -> None:
    """Every place ClickHouse merges these segments gives the reference's answer."""
    for table in ("aggregate_segments", "period_finals"):
        storage.command(f"TRUNCATE TABLE {table}")
    storage.client.insert("aggregate_segments", segment_rows(cases), column_names=SEGMENT_COLUMNS)
    minute_want = {
        (f"m{n}", (HOUR + timedelta(minutes=i)).replace(tzinfo=None)): expected(case.aggregation, list(segments))
        for n, case in enumerate(cases)
        for i, segments in enumerate(case.minutes)
        if segments
    }
    bucket_want = {
        f"m{n}": expected(case.aggregation, case.all_segments()) for n, case in enumerate(cases) if case.all_segments()
    }
    scoped = {"customer": CUSTOMER, **WINDOW}
    problems: list[str] = []

    def compare(where: str, got: dict[Any, Any], want: dict[Any, Expected]) -> None:
        if set(got) != set(want):
            problems.append(f"{where}: keys {sorted(map(str, set(got) ^ set(want)))} on one side only")
        for key in set(got) & set(want):
            if got[key] not in want[key]:
                problems.append(f"{where} {key}: ClickHouse {got[key]!r}, reference {sorted(map(str, want[key]))}")

    minutes = {(r["meter"], r["minute"]): r["value"] for r in rows_of(storage, "SELECT meter, minute, value FROM minute_usage")}
    compare("minute_usage", minutes, minute_want)
    scoped_minutes = rows_of(storage, "SELECT meter, minute, value FROM customer_minutes(customer = {customer:String}, "
                             "from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})", scoped)  # fmt: skip
    compare("customer_minutes", {(r["meter"], r["minute"]): r["value"] for r in scoped_minutes}, minute_want)
    periods = rows_of(storage, "SELECT meter, value FROM period_usage")
    compare("period_usage", {r["meter"]: r["value"] for r in periods}, bucket_want)
    for view in ("customer_series_hour", "customer_series_day", "customer_periods"):
        got = rows_of(storage, f"SELECT meter, value FROM {view}(customer = {{customer:String}}, "
                      "from = {from:DateTime64(3, 'UTC')}, to = {to:DateTime64(3, 'UTC')})", scoped)  # fmt: skip
        compare(view, {r["meter"]: r["value"] for r in got}, bucket_want)
    rollups = run(storage, "check_rollups", scoped)
    for level in ("hour", "day", "period"):
        compare(f"check_rollups {level}", {r["meter"]: r["minutes_value"] for r in rollups if r["level"] == level}, bucket_want)
    recompute = run(storage, "check_recompute", {**WINDOW, "sample": 1.0, "meter_names": [], "meter_types": [],
                    "meter_aggregations": [], "meter_values": [], "meter_dims": []})  # fmt: skip
    compare("check_recompute", {(r["meter"], r["minute"]): r["stored_value"] for r in recompute}, minute_want)
    storage.command(
        "INSERT INTO period_finals (customer_id, meter, group_key, aggregation, period_start, period_end, value, event_count, "
        "finalized_at_watermark) SELECT customer_id, meter, group_key, aggregation, period_start, period_end, 0, 0, period_end "
        "FROM aggregate_segments GROUP BY ALL"
    )
    finals = run(storage, "check_finals", {**WINDOW, "to": PERIOD[1], "sample": 1.0})
    compare("check_finals", {r["meter"]: r["segments_value"] for r in finals}, bucket_want)
    assert not problems, "\n".join(problems[:20])


def events_partial(aggregation: Aggregation, events: list[tuple[Decimal, int, str, str]]) -> Partial:
    return merge_all(aggregation, [of_event(aggregation, v, event_ms=ms, event_id=i, distinct_value=d) for v, ms, i, d in events])


def one(aggregation: Aggregation, value: Decimal, ms: int = 0, event_id: str = "e", distinct: str = "") -> Partial:
    return of_event(aggregation, value, event_ms=ms, event_id=event_id, distinct_value=distinct or str(value))


A = Aggregation
NAMED_CASES: dict[str, Case] = {
    **{f"empty segment, {a}": Case(a, ((empty(a),),)) for a in A},
    **{f"empty beside one value, {a}": Case(a, ((empty(a), one(a, Decimal("2.5"))),)) for a in A},
    **{f"one value, {a}": Case(a, ((one(a, Decimal("-7.25")),),)) for a in A},
    "max tie at different scales": Case(A.MAX, ((one(A.MAX, Decimal("1.5")), one(A.MAX, Decimal("1.50"))),)),
    "min tie across minutes": Case(A.MIN, ((one(A.MIN, Decimal("-3")),), (one(A.MIN, Decimal("-3.000")),))),
    "latest tie, same value": Case(A.LATEST, ((one(A.LATEST, Decimal(4), 9, "a"), one(A.LATEST, Decimal(4), 9, "b")),)),
    "latest tie, values differ": Case(A.LATEST, ((one(A.LATEST, Decimal(4), 9, "a"),), (one(A.LATEST, Decimal(5), 9, "b"),))),
    "latest newest wins over larger": Case(A.LATEST, ((one(A.LATEST, Decimal(9), 1), one(A.LATEST, Decimal(1), 2)),)),
    "huge sum to the largest value": Case(
        A.SUM,
        (
            (one(A.SUM, Decimal("49999999999999999999999999999.999999999")),),
            (one(A.SUM, Decimal("50000000000000000000000000000")),),
        ),
    ),
    "huge sum cancelling": Case(A.SUM, ((one(A.SUM, HUGE), one(A.SUM, -HUGE)), (one(A.SUM, Decimal("0.000000001")),))),
    "huge max": Case(A.MAX, ((one(A.MAX, HUGE), one(A.MAX, -HUGE)),)),
    "huge min": Case(A.MIN, ((one(A.MIN, HUGE),), (one(A.MIN, -HUGE),))),
    "huge latest": Case(A.LATEST, ((one(A.LATEST, -HUGE, 5),), (one(A.LATEST, HUGE, 6),))),
    "unique_count over repeated values": Case(
        A.UNIQUE_COUNT,
        (
            (events_partial(A.UNIQUE_COUNT, [(Decimal(1), 0, "a", "x"), (Decimal(1), 0, "b", "x"), (Decimal(1), 0, "c", "y")]),),
            (
                events_partial(A.UNIQUE_COUNT, [(Decimal(1), 0, "d", "y"), (Decimal(1), 0, "e", "1.5")]),
                events_partial(A.UNIQUE_COUNT, [(Decimal(1), 0, "f", "1.50"), (Decimal(1), 0, "g", "x")]),
            ),
        ),
    ),
    "count over many segments": Case(
        A.COUNT, tuple((events_partial(A.COUNT, [(Decimal(0), 0, str(i), "")] * i),) for i in range(1, 6))
    ),
}


def test_named_merge_cases_agree(storage: Storage) -> None:
    assert_merges_agree(storage, list(NAMED_CASES.values()))


def test_the_reference_and_the_views_disagree_where_documented() -> None:
    """The documented differences are real differences of the reference, not of the test's expectations."""
    assert empty(A.MAX).result() == 0 and expected(A.MAX, [empty(A.MAX)]) == {None}
    case = NAMED_CASES["latest tie, values differ"]
    assert merge_all(A.LATEST, case.all_segments()).result() == 5
    assert expected(A.LATEST, case.all_segments()) == {Decimal(4), Decimal(5)}


decimals = st.builds(
    lambda units, scale: Decimal(units).scaleb(-scale),
    st.integers(min_value=-(10**20), max_value=10**20) | st.integers(min_value=-3, max_value=3),
    st.integers(min_value=0, max_value=9),
)
event_values = st.tuples(decimals, st.integers(min_value=0, max_value=4), st.text("abc", min_size=1, max_size=2),
                         st.sampled_from(["x", "y", "z", "1.5", "1.50", ""]))  # fmt: skip


@st.composite
def cases(draw: st.DrawFn) -> Case:
    aggregation = draw(st.sampled_from(list(Aggregation)))
    minutes = draw(
        st.lists(st.lists(st.lists(event_values, min_size=0, max_size=4), min_size=1, max_size=3), min_size=1, max_size=4)
    )
    return Case(aggregation, tuple(tuple(events_partial(aggregation, events) for events in minute) for minute in minutes))


@settings(SETTINGS, max_examples=10)  # a batch of cases per example: each example is ~12 queries
@given(st.lists(cases(), min_size=1, max_size=25))
def test_generated_merge_cases_agree(storage: Storage, batch: list[Case]) -> None:
    assert_merges_agree(storage, batch)


@SETTINGS
@given(st.sampled_from(list(Aggregation)), st.lists(event_values, min_size=1, max_size=12, unique_by=lambda e: e[2]))
def test_events_merge_as_the_reference_merges_them(storage: Storage, aggregation: Aggregation, events: list[Any]) -> None:
    """check_recompute's use: each raw event a state of its own, latest ordered by (event time, event_id): exact agreement."""
    [(got,)] = storage.query_rows(
        "SELECT metering_merge_v1(a, v, 1, v, v, [d], v, (t, i)) FROM "
        "(SELECT {a:String} AS a, e.1 AS v, e.2 AS t, e.3 AS i, e.4 AS d "
        " FROM (SELECT arrayJoin(arrayZip({v:Array(Decimal(38, 9))}, {t:Array(Int64)}, {i:Array(String)},"
        " {d:Array(String)})) AS e))"
        " GROUP BY a",
        {"a": aggregation.value, "v": [e[0] for e in events], "t": [e[1] for e in events], "i": [e[2] for e in events],
         "d": [e[3] for e in events]},
    )  # fmt: skip
    assert got == events_partial(aggregation, events).result()


# --- the record-level rules ---------------------------------------------------------------------

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Record:
    """The fields the record-level rules read; the rest of the event is valid."""

    event_id: str = "e-1"
    customer_id: str = "acme"
    event_type: str = "api_call"
    quantity: str = "1.5"
    quantity_is_number: bool = False
    schema_version: int = 1
    after_received_ms: int = 0

    def line(self) -> bytes:
        time = RECEIVED + timedelta(milliseconds=self.after_received_ms)
        quantity = self.quantity if self.quantity_is_number else json.dumps(self.quantity)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time.microsecond // 1000:03d}Z"
        fields = [
            f'"schema_version":{self.schema_version}', f'"event_id":{json.dumps(self.event_id)}',
            f'"customer_id":{json.dumps(self.customer_id)}', f'"event_type":{json.dumps(self.event_type)}',
            f'"timestamp":"{stamp}"', f'"quantity":{quantity}',
        ]  # fmt: skip
        return ("{" + ",".join(fields) + "}").encode()

    def python_valid(self) -> bool:
        return job_reason(self.line(), event_types={self.event_type}, received=RECEIVED, future_skew=SKEW) is None


def clickhouse_valid(storage: Storage, records: list[Record]) -> list[bool]:
    """``metering_valid_event_v2`` on each record's raw_events columns (the payload is the record's line)."""
    [(verdicts,)] = storage.query_rows(
        "SELECT arrayMap(r -> metering_valid_event_v2(r.1, r.2, r.3, r.4, r.5, r.6, {received:DateTime64(3, 'UTC')}, "
        "{skew:UInt64}), arrayZip({v:Array(UInt16)}, {id:Array(String)}, {c:Array(String)}, {t:Array(String)}, "
        "{p:Array(String)}, {time:Array(DateTime64(3, 'UTC'))}))",
        {
            "received": RECEIVED, "skew": int(SKEW.total_seconds() * 1000), "v": [r.schema_version for r in records],
            "id": [r.event_id for r in records], "c": [r.customer_id for r in records], "t": [r.event_type for r in records],
            "p": [r.line().decode() for r in records],
            "time": [RECEIVED + timedelta(milliseconds=r.after_received_ms) for r in records],
        },
    )  # fmt: skip
    return [bool(v) for v in verdicts]


def assert_rules_agree(storage: Storage, records: list[Record]) -> None:
    got = clickhouse_valid(storage, records)
    wrong = [(r, g) for r, g in zip(records, got, strict=True) if g != r.python_valid()]
    assert not wrong, "\n".join(f"{r}: ClickHouse says valid={g}, schemas/validate.py the opposite" for r, g in wrong)


NAMED_RECORDS = [
    Record(),
    *(Record(event_id=v) for v in ("", "x" * 128, "x" * 129, "é" * 128, "é" * 129, "a\x00b", "a\x1f", "tab\t", " spaced ")),
    *(Record(customer_id=v) for v in ("", "a" * 128, "a" * 129, "-a", "a b", "a\n", "A.b_c:d@e-f", "é", "_a")),
    *(Record(event_type=v) for v in ("", "a" * 64, "a" * 65, "Api", "api call", "api.call-2_x", "-a", "a\n")),
    *(Record(quantity=v) for v in ("0", "-0", "01", "1.", ".5", "+1", "1e9", "0.000000001", "0.0000000001", " 5", "5\n")),
    *(Record(quantity=v) for v in ("9" * 29, "9" * 30, "9" * 29 + "." + "9" * 9, "-" + "9" * 29 + ".5", "", "NaN")),
    *(Record(quantity=v, quantity_is_number=True) for v in ("0", "-0", "1.50", "9" * 29, "9" * 30, "0.1234567891")),
    *(Record(schema_version=v) for v in (0, 1, 2)),
    *(Record(after_received_ms=v) for v in (-1, 0, 300_000, 300_001, 10**9)),
]


def test_named_records_agree(storage: Storage) -> None:
    assert_rules_agree(storage, NAMED_RECORDS)


def test_delete_character_in_event_id(storage: Storage) -> None:
    """Version 1 let U+007F through; the schema, and version 2, refuse it."""
    assert_rules_agree(storage, [Record(event_id="a\x7fb"), Record(event_id="\x7f")])


#: Quantities written as JSON numbers that ClickHouse's JSONExtractRaw re-writes (1e9 → 1000000000, 0.000000001 →
#: 1e-9, 38 digits → 1.2345678901234568e28): version 1 read those texts, and refused valid events the job bills.
REWRITTEN_NUMBERS = ["1e9", "1E+2", "0.000000001", "0.0000001", "99999999999999999999999999999.999999999", "-0.5e-3"]


@pytest.mark.parametrize("quantity", REWRITTEN_NUMBERS)
def test_a_quantity_number_is_judged_as_written(storage: Storage, quantity: str) -> None:
    assert_rules_agree(storage, [Record(quantity=quantity, quantity_is_number=True)])


QUANTITY_TEXTS = ["1.5", "1.50", "-0", "0.000000001", "12345678901234567890123456789.123456789", " 5", "1e9", "\u0031"]


def quantity_texts(storage: Storage, payloads: list[str]) -> list[str]:
    [(texts,)] = storage.query_rows("SELECT arrayMap(p -> metering_quantity_text_v2(p), {p:Array(String)})", {"p": payloads})
    return list(texts)


def test_a_quantity_string_is_read_as_written(storage: Storage) -> None:
    """What unique_count counts for the quantity: a string's content, as the job reads it (escapes decoded)."""
    payloads = [f'{{"quantity":"{v}"}}' for v in QUANTITY_TEXTS]
    assert quantity_texts(storage, payloads) == [json.loads(p)["quantity"] for p in payloads]


def test_a_quantity_number_is_read_as_written(storage: Storage) -> None:
    """For a JSON number the job counts its text as written (1.50 and 1.5 differ); so does unique_count's replay."""
    written = ["1.50", "-0", "12345678901234567.5", "0.000000001", "1e9", "1E+2", "99999999999999999999999999999.999999999"]
    assert quantity_texts(storage, [f'{{"quantity":{v}}}' for v in written]) == written
    around = [
        '{"quantity" :\n 0.000000001 , "properties":{"quantity":2}}',  # JSON whitespace; a property of that name
        '{"properties":{"quantity":2,"q":"\\"quantity\\":7"},"quantity":1.50}',  # the property first; the key inside a string
        '{"properties":{"quantity":1.5},"quantity":1.50}',  # two texts of one value: the first is taken
    ]
    assert quantity_texts(storage, around) == ["0.000000001", "1.50", "1.5"]


@SETTINGS
@given(st.lists(st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,12})?([eE][+-]?[0-9]{1,2})?\Z"), min_size=1, max_size=20))
def test_generated_quantity_numbers_are_read_as_written(storage: Storage, written: list[str]) -> None:
    assert quantity_texts(storage, [f'{{"properties":{{"quantity":0.25}},"quantity":{v}}}' for v in written]) == written


texts = st.text(st.characters(codec="utf-8", exclude_characters="\x7f") | st.sampled_from("aZ09._:@- \n"), max_size=140)
quantities = st.from_regex(r"\A-?[0-9]{1,31}(\.[0-9]{0,10})?\Z") | st.text("0123456789.-+eE ", max_size=12)


@SETTINGS
@given(
    st.lists(
        st.builds(
            Record,
            event_id=texts,
            customer_id=texts | st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,130}\Z"),
            event_type=texts | st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,66}\Z"),
            quantity=quantities,
            after_received_ms=st.integers(min_value=-1000, max_value=301_000),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_generated_records_agree(storage: Storage, records: list[Record]) -> None:
    assert_rules_agree(storage, records)


def test_migrate_defines_the_functions_again_where_they_are_missing(storage: Storage) -> None:
    """A database restored elsewhere arrives without the path's functions: `metering migrate` brings them back."""
    storage.command("DROP FUNCTION IF EXISTS metering_quantity_text_v2")
    with pytest.raises(Exception, match="metering_quantity_text_v2"):
        storage.query_rows("SELECT metering_quantity_text_v2('{\"quantity\":1}')")
    assert migrate(storage) == []  # nothing pending: only the functions are defined again
    assert storage.query_rows("SELECT metering_quantity_text_v2('{\"quantity\":1.50}')") == [("1.50",)]
