"""The loader's insert rules: partition chunks, the error classifier (texts captured from chDB 26.9), quarantine rows."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError
from hypothesis import given
from hypothesis import strategies as st

from clickhouse.tables import QUARANTINE_COLUMNS
from jobs.config import Config
from jobs.loader.inserts import InsertErrorKind, chunk_by_partition, classify_insert_error, month_key
from jobs.loader.loader import MAX_PARTITIONS_PER_INSERT, Loader, _Batch, partition_keys

# --- partitions ---------------------------------------------------------------------------------


def test_month_key_is_clickhouse_toyyyymm_in_utc() -> None:
    assert month_key(datetime(2024, 3, 31, 23, 59, tzinfo=UTC)) == 202403
    # 00:30 on April 1st in Berlin is still March in UTC, as ClickHouse sees a DateTime64(3, 'UTC').
    assert month_key(datetime(2024, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == 202403
    assert month_key(datetime(2024, 4, 1, 0, 30)) == 202404  # naive: UTC
    assert month_key("2024-04-01") is None and month_key(None) is None


def test_rows_within_the_limit_stay_one_insert_in_their_order() -> None:
    keys = [202403, 202401, 202403, None, 202402]
    assert chunk_by_partition(keys, 4) == [[0, 1, 2, 3, 4]]
    assert chunk_by_partition([], 4) == []


def test_rows_beyond_the_limit_are_cut_by_month_in_order() -> None:
    keys = [202403, 202401, 202403, None, 202402, 202401]
    assert chunk_by_partition(keys, 2) == [[3, 1, 5], [4, 0, 2]]  # None (no partition) first, then months ascending
    assert chunk_by_partition(keys, 1) == [[3], [1, 5], [4], [0, 2]]


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        chunk_by_partition([1], 0)


@given(st.lists(st.one_of(st.none(), st.integers(200001, 200012)), max_size=200), st.integers(1, 15))
def test_chunks_cover_every_row_once_and_never_exceed_the_limit(keys: list[int | None], limit: int) -> None:
    chunks = chunk_by_partition(keys, limit)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(keys)))
    assert all(1 <= len({keys[i] for i in chunk}) <= limit for chunk in chunks)
    owner = {keys[i]: n for n, chunk in enumerate(chunks) for i in chunk}
    assert all(owner[keys[i]] == n for n, chunk in enumerate(chunks) for i in chunk)  # a month is never split
    assert all(chunk == sorted(chunk) for chunk in chunks if len({keys[i] for i in chunk}) == 1)  # order within a month
    assert len(chunks) == (0 if not keys else -(-len(set(keys)) // limit))


def test_three_years_of_raw_rows_fit_one_insert_ten_years_take_three() -> None:
    def rows(days: int) -> list[list[Any]]:  # raw_events' rows: [event time, the JSON line]
        start = datetime(2016, 1, 1, tzinfo=UTC)
        return [[start + timedelta(days=d), b"{}"] for d in range(days)]

    assert MAX_PARTITIONS_PER_INSERT <= 50  # well under ClickHouse's default of 100 per INSERT block
    assert len(chunk_by_partition(partition_keys("raw_events", rows(1100)), MAX_PARTITIONS_PER_INSERT)) == 1
    ten_years = partition_keys("raw_events", rows(3653))
    assert len(set(ten_years)) == 120
    assert [len({ten_years[i] for i in c}) for c in chunk_by_partition(ten_years, MAX_PARTITIONS_PER_INSERT)] == [50, 50, 20]
    assert set(partition_keys("duplicates", rows(3653))) == {None}


# --- the error classifier -----------------------------------------------------------------------

# Messages as chDB 26.9 returned them (clickhouse-connect's DatabaseError carries code and name).
PARTITIONS_PER_BLOCK = (
    "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). The limit is controlled by "
    "'max_partitions_per_insert_block' setting. Large number of partitions is a common misconception. It will lead to "
    "severe negative performance impact, including slow server startup, slow INSERT queries and slow SELECT queries. "
    "Recommended total number of partitions for a table is under 1000..10000. Please note, that partitioning is not "
    "intended to speed up SELECT queries (ORDER BY key is sufficient to make range queries fast). Partitions are intended "
    "for data manipulation (DROP PARTITION, etc). (TOO_MANY_PARTS)"
)
PARTS_IN_TABLE = (
    "Code: 252. DB::Exception: Too many parts (2 with average size of 345.00 B) in table "
    "'probe.tp (1625af03-8095-42bf-8937-0c65c651065d)'. Merges are processing significantly slower than inserts. "
    "(TOO_MANY_PARTS)"
)
MEMORY = (
    "Code: 241. DB::Exception: Query memory limit exceeded: would use 5.06 MiB (attempt to allocate chunk of 5.00 MiB), "
    "maximum: 976.56 KiB: While executing AggregatingTransform. (MEMORY_LIMIT_EXCEEDED)"
)
TIMEOUT = "Code: 159. DB::Exception: Timeout exceeded: elapsed 1003.415 ms, maximum: 100.000 ms. (TIMEOUT_EXCEEDED)"
UNKNOWN_TABLE = (
    "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. Maybe you meant system.one? "
    "In scope SELECT * FROM nope. (UNKNOWN_TABLE)"
)
CANNOT_PARSE = (
    "Code: 41. DB::Exception: Cannot read DateTime: unexpected date: 2020-13-45: Cannot parse DateTime64(3) from String: "
    "In scope SELECT toDateTime64('2020-13-45', 3). (CANNOT_PARSE_DATETIME)"
)
OUT_OF_BOUND = (
    "Code: 69. DB::Exception: Decimal value is too big: 1 digits were read: '1'e40. Expected to read decimal with scale 9 "
    "and precision 38: In scope SELECT toDecimal128('1e40', 9). (ARGUMENT_OUT_OF_BOUND)"
)
THROW_IF = (
    "Code: 395. DB::Exception: boom: while executing 'FUNCTION throwIf(1_UInt8 :: 1, 'boom'_String :: 2) -> "
    "throwIf(1_UInt8, 'boom'_String) UInt8 : 3'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)"
)
CONNECTION_REFUSED = (
    "Error HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /?query_id=ebc0dd94 (Caused by "
    "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new connection: [Errno 111] "
    'Connection refused")) executing HTTP request attempt 1 (http://127.0.0.1:1)'
)
SOMETHING_NEW = "Code: 1234. DB::Exception: something new. (SOMETHING_NEW)"  # a code this loader does not know


def _server(message: str) -> DatabaseError:
    """As clickhouse-connect raises a server's (or chDB's) exception: code and name parsed from the text."""
    code = int(message.split(".")[0].removeprefix("Code: "))
    return DatabaseError(message, code=code, name=message.rsplit("(", 1)[1].rstrip(")"))


class ChdbError(Exception):
    """chDB's own exception type: the text only, no attributes."""


@pytest.mark.parametrize(
    ("exc", "kind", "code", "name"),
    [
        (_server(PARTITIONS_PER_BLOCK), InsertErrorKind.REFUSED, 252, "TOO_MANY_PARTS"),
        (ChdbError(PARTITIONS_PER_BLOCK), InsertErrorKind.REFUSED, 252, "TOO_MANY_PARTS"),
        (_server(PARTS_IN_TABLE), InsertErrorKind.RETRY, 252, "TOO_MANY_PARTS"),
        (ChdbError(PARTS_IN_TABLE), InsertErrorKind.RETRY, 252, "TOO_MANY_PARTS"),
        (_server(MEMORY), InsertErrorKind.RETRY, 241, "MEMORY_LIMIT_EXCEEDED"),
        (_server(TIMEOUT), InsertErrorKind.RETRY, 159, "TIMEOUT_EXCEEDED"),
        (_server(UNKNOWN_TABLE), InsertErrorKind.RETRY, 60, "UNKNOWN_TABLE"),
        (_server(CANNOT_PARSE), InsertErrorKind.REFUSED, 41, "CANNOT_PARSE_DATETIME"),
        (_server(OUT_OF_BOUND), InsertErrorKind.REFUSED, 69, "ARGUMENT_OUT_OF_BOUND"),
        (_server(THROW_IF), InsertErrorKind.REFUSED, 395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"),
        (
            DatabaseError("Code: 1234. DB::Exception: something new. (SOMETHING_NEW)", code=1234),
            InsertErrorKind.UNKNOWN,
            1234,
            "SOMETHING_NEW",
        ),
        (OperationalError(CONNECTION_REFUSED), InsertErrorKind.RETRY, 0, "OperationalError"),
        (ConnectionResetError(104, "Connection reset by peer"), InsertErrorKind.RETRY, 0, "ConnectionResetError"),
        (TimeoutError("timed out"), InsertErrorKind.RETRY, 0, "TimeoutError"),
        # Raised by clickhouse-connect while serializing a row (chDB and HTTP alike), before ClickHouse sees it:
        (OverflowError("int too big to convert"), InsertErrorKind.REFUSED, 0, "OverflowError"),  # Decimal(38, 9) overflow
        (DataError("Unable to create native array for column `schema_version`: error"), InsertErrorKind.REFUSED, 0, "DataError"),
        (
            DataError("Invalid None value in non-Nullable column, column name: `event_id`"),
            InsertErrorKind.REFUSED,
            0,
            "DataError",
        ),
        (struct.error("ushort format requires 0 <= number <= 65535"), InsertErrorKind.REFUSED, 0, "error"),
        (TypeError("'str' object cannot be interpreted as an integer"), InsertErrorKind.REFUSED, 0, "TypeError"),
        (RuntimeError("something else"), InsertErrorKind.UNKNOWN, 0, "RuntimeError"),
    ],
)
def test_insert_errors_are_about_the_store_or_about_the_rows(
    exc: BaseException, kind: InsertErrorKind, code: int, name: str
) -> None:
    error = classify_insert_error(exc)
    assert (error.kind, error.code, error.name) == (kind, code, name)
    assert error.message == str(exc)


def test_an_error_reads_with_its_code_or_its_type() -> None:
    assert str(classify_insert_error(_server(MEMORY))) == MEMORY
    assert str(classify_insert_error(OverflowError("int too big to convert"))) == "OverflowError: int too big to convert"


# --- conversion failures and quarantine rows ----------------------------------------------------


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def test_a_record_its_row_function_cannot_convert_is_quarantined_with_its_bytes() -> None:
    config = Config()
    loader = Loader(config, storage=None)  # type: ignore[arg-type]  # conversion needs no storage
    segment = {"customer_id": "acme", "group_key": "", "aggregation": "sum"}  # no minute: no partition to insert it in
    record = Record(config.kafka.topics.aggregates, 1, 41, 1_700_000_000_000, b"acme", json.dumps(segment).encode())
    batch = _Batch()
    loader._convert(record, batch)
    assert batch.rows_waiting == 1 and not batch.rows
    [row] = batch.quarantine
    stored = dict(zip(QUARANTINE_COLUMNS, row, strict=True))
    assert stored["target_table"] == "aggregate_segments" and stored["stage"] == "convert"
    assert (stored["error_code"], stored["error_name"], stored["error"]) == (0, "ValueError", "ValueError: subsection not found")
    assert stored["record"] == record.value and stored["record_key"] == b"acme" and stored["row"] == ""
    assert (stored["source_topic"], stored["source_partition"], stored["source_offset"]) == (record.topic, 1, 41)
    assert stored["source_time"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_a_raw_row_without_its_event_time_key_is_quarantined_and_a_tombstone_skipped() -> None:
    """The job keys every raw row by its event time; a record without one is quarantined, never a stop."""
    config = Config()
    loader = Loader(config, storage=None)  # type: ignore[arg-type]
    batch = _Batch()
    loader._convert(Record(config.kafka.topics.raw, 0, 1, 0, None, b'{"event_id": "e"}'), batch)
    loader._convert(Record(config.kafka.topics.raw, 0, 2, 0, b"soon", b'{"event_id": "e"}'), batch)
    loader._convert(Record(config.kafka.topics.raw, 0, 3, 0, b"0", None), batch)
    assert [(row[0], row[1], row[3]) for row in batch.quarantine] == [
        ("raw_events", "convert", "TypeError"),
        ("raw_events", "convert", "ValueError"),
    ]
    assert not batch.rows
    loader._convert(Record(config.kafka.topics.raw, 0, 4, 0, b"1767225600123", b'{"event_id": "e"}'), batch)
    assert batch.rows["raw_events"] == [[datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC), b'{"event_id": "e"}']]


@pytest.mark.parametrize("timestamp", [-1, 2**62, None])
def test_a_quarantine_row_is_storable_whatever_the_record_holds(timestamp: Any) -> None:
    from jobs.loader.inserts import InsertError
    from jobs.loader.loader import quarantine_row

    record = Record("t", 0, 7, timestamp, None, None)
    error = InsertError(InsertErrorKind.REFUSED, 2**40, "X", "x")
    stored = quarantine_row("corrections", "insert", error, record, [Decimal("1e30")])
    row = dict(zip(QUARANTINE_COLUMNS, stored, strict=True))
    assert row["source_time"] == datetime(1970, 1, 1, tzinfo=UTC) or 1900 <= row["source_time"].year <= 2299
    assert row["error_code"] == 2**31 - 1 and row["record"] == b"" and row["record_key"] == b""
    assert json.loads(row["row"]) == {"customer_id": "1E+30"}  # the row as JSON, by column name
    line = b'{"event_id": "\\ud800"}'  # a JSON line: the row is the line, as text
    raw = quarantine_row("raw_events", "insert", error, record, [datetime(2026, 1, 1, tzinfo=UTC), line])
    assert dict(zip(QUARANTINE_COLUMNS, raw, strict=True))["row"] == line.decode()
