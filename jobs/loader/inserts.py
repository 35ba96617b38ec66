"""How the loader cuts its ClickHouse inserts and reads ClickHouse's refusals: pure functions, no I/O.

* :func:`chunk_by_partition` cuts one table's rows into inserts that each touch at most N
  partitions: ClickHouse refuses an INSERT block spanning more than
  ``max_partitions_per_insert_block`` (default 100) partitions, whatever the rows are.
* :func:`classify_insert_error` tells an error about the *store* (ClickHouse down, slow, out of
  memory, merges behind, a table missing: retry the same insert) from an error about the *rows*
  (a value the column cannot hold, text that does not parse, too many partitions in one block:
  retrying cannot help; the loader bisects the insert and quarantines the refused rows).

The error codes and texts are ClickHouse's own (``Code: NNN``, and ``(NAME)`` at the end of the
message); tests/unit/test_inserts.py holds texts captured from chDB 26.9, and
tests/integration/test_loader_history.py checks every code below against the engine's
``errorCodeToName``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

#: Partition keys are months as ClickHouse's toYYYYMM writes them (202403), or None for a table
#: (or a value) without one.
PartitionKey = int | None


def month_key(value: object) -> PartitionKey:
    """``toYYYYMM`` of a value bound for a ``DateTime64(3, 'UTC')`` column; None when it is no datetime.

    A naive datetime is read as UTC (clickhouse-connect writes the columns' values as UTC).
    """
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC)
        except (OverflowError, ValueError):  # year 1 with a positive offset: ClickHouse decides
            return None
    return value.year * 100 + value.month


def chunk_by_partition(keys: Sequence[PartitionKey], max_partitions: int) -> list[list[int]]:
    """Row indexes (positions in ``keys``) cut into inserts of at most ``max_partitions`` distinct keys.

    When the keys fit, one chunk with every index in its order (the common case: no copy, no
    reordering). Otherwise rows are grouped by key, keys in ascending order (None first), and
    consecutive keys fill a chunk; a key is never split across chunks and rows keep their order
    within a key. Every index appears in exactly one chunk.
    """
    if max_partitions < 1:
        raise ValueError(f"max_partitions must be at least 1, got {max_partitions}")
    if not keys:
        return []
    groups: dict[PartitionKey, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    if len(groups) <= max_partitions:
        return [list(range(len(keys)))]
    ordered = sorted(groups, key=lambda k: (k is not None, k or 0))
    return [
        [index for key in ordered[start : start + max_partitions] for index in groups[key]]
        for start in range(0, len(ordered), max_partitions)
    ]


class InsertErrorKind(StrEnum):
    RETRY = "retry"  # about the store, not the rows: the same insert may pass later
    REFUSED = "refused"  # about the rows: the same insert fails again; isolate and quarantine
    UNKNOWN = "unknown"  # neither is known: retried a few times, then treated as refused


#: ClickHouse refuses the data itself: the same rows fail again however often they are sent.
REFUSED_CODES: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    36: "BAD_ARGUMENTS",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    43: "ILLEGAL_TYPE_OF_ARGUMENT",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    131: "TOO_LARGE_STRING_SIZE",
    190: "SIZES_OF_ARRAYS_DONT_MATCH",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
    407: "DECIMAL_OVERFLOW",
    469: "VIOLATED_CONSTRAINT",
}

#: The store cannot take any insert right now (down, busy, short of memory or disk, merges behind)
#: or is not set up (a table or column missing, no permission): retry, never quarantine rows for it.
RETRY_CODES: dict[int, str] = {
    3: "UNEXPECTED_END_OF_FILE",
    16: "NO_SUCH_COLUMN_IN_TABLE",
    47: "UNKNOWN_IDENTIFIER",
    60: "UNKNOWN_TABLE",
    81: "UNKNOWN_DATABASE",
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    173: "CANNOT_ALLOCATE_MEMORY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",  # merges behind; but see _PARTITIONS_PER_BLOCK
    285: "TOO_FEW_LIVE_REPLICAS",
    286: "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE",
    319: "UNKNOWN_STATUS_OF_INSERT",
    394: "QUERY_WAS_CANCELLED",
    425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
    999: "KEEPER_EXCEPTION",
}

#: Code 252 (TOO_MANY_PARTS) says either "Too many parts (N …) in table …. Merges are processing
#: significantly slower than inserts" (the table's state: wait and retry) or "Too many partitions
#: for single INSERT block (more than 100)" (this block's rows: retrying the same block fails again).
_PARTITIONS_PER_BLOCK = re.compile(r"partitions for single insert block|max_partitions_per_insert_block", re.IGNORECASE)
_CODE = re.compile(r"\bCode:\s*(\d+)")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")

#: Python exceptions raised while a row is serialized into its column (clickhouse-connect raises
#: them for a value the column type cannot hold: OverflowError for a Decimal(38, 9) beyond 38
#: digits, struct.error / DataError for a negative or too large UInt, TypeError for a wrong type).
_ROW_ERRORS: tuple[type[BaseException], ...] = (ArithmeticError, struct.error, TypeError, ValueError, AttributeError)


@dataclass(frozen=True)
class InsertError:
    """A failed insert, read: what kind, ClickHouse's code and name (0 / the exception type when none)."""

    kind: InsertErrorKind
    code: int
    name: str
    message: str

    @property
    def signature(self) -> tuple[int, str]:
        return self.code, self.name

    def __str__(self) -> str:
        return self.message if self.code else f"{self.name}: {self.message}"


def classify_insert_error(exc: BaseException) -> InsertError:
    """Read an exception raised by an insert (clickhouse-connect over HTTP or chDB, or the row serializer)."""
    message = str(exc) or repr(exc)
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        match = _CODE.search(message)
        code = int(match.group(1)) if match else 0
    name = getattr(exc, "name", None)
    if not isinstance(name, str) or not name:
        names = _NAME.findall(message) if code else []
        name = names[-1] if names else REFUSED_CODES.get(code) or RETRY_CODES.get(code) or type(exc).__name__
    if code:
        if code in REFUSED_CODES or (code == 252 and _PARTITIONS_PER_BLOCK.search(message)):
            kind = InsertErrorKind.REFUSED
        elif code in RETRY_CODES:
            kind = InsertErrorKind.RETRY
        else:
            kind = InsertErrorKind.UNKNOWN
        return InsertError(kind, code, name, message)
    return InsertError(_python_kind(exc), 0, name, message)


def _python_kind(exc: BaseException) -> InsertErrorKind:
    """An exception without a ClickHouse code: the transport's (retry) or the row serializer's (refused)."""
    from clickhouse_connect.driver import exceptions as driver

    if isinstance(exc, driver.OperationalError):  # connection refused/reset, stream broken, HTTP errors
        return InsertErrorKind.RETRY
    if isinstance(exc, driver.DataError):  # "Unable to create native array for column …", None in a non-Nullable column
        return InsertErrorKind.REFUSED
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, socket errors
        return InsertErrorKind.RETRY
    if isinstance(exc, _ROW_ERRORS):
        return InsertErrorKind.REFUSED
    return InsertErrorKind.UNKNOWN
