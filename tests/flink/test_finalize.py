"""The finalization function (``metering_finalize``) on Flink itself, against the Python ledger.

Hand-made partial rows (``jobs/sql.PARTIAL_COLUMNS``) stream through the job's own finalization
view with a watermark, and what it writes is compared with ``udfs/ledger.py`` driven by the same
rows: the aggregates of open minutes, each period's final exactly once with the sum of everything
on time, a late event for a final period as a correction, and what a rebuild changes (a replayed
row's correction left out, periods at or behind the replaced job's finality never finalized
again). A partial the function cannot read becomes a processing-error dead letter and the rest
goes on.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from jobs.config import load_config
from jobs.flink import sql
from schemas import records
from udfs.aggregators import Partial, merge
from udfs.ledger import PeriodLedger
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, PeriodKind, epoch_millis

EXAMPLE = load_config(Path(__file__).resolve().parents[2] / "config" / "metering.example.yaml", env={})
DAY_POLICY = replace(EXAMPLE.billing.default, cycle=BillingCycle(PeriodKind.DAY, "UTC", 1), grace=timedelta(hours=1))
CONFIG = replace(EXAMPLE, billing=replace(EXAMPLE.billing, default=DAY_POLICY, customers={}))
DAY1 = epoch_millis(datetime(2026, 3, 2, tzinfo=UTC))
MINUTE = 60_000
DAY = 86_400_000


def partial(minute_ms: int, window_end_ms: int, cnt: int, total: str | None, **extra: Any) -> dict[str, Any]:
    """A ``tokens`` (sum) partial of key (acme, tokens, {}); ``rowtime_ms`` drives the watermark."""
    row = {
        "customer_id": "acme",
        "meter": "tokens",
        "group_key": "{}",
        "minute_ms": minute_ms,
        "window_end_ms": window_end_ms,
        "cnt": cnt,
        "total": total,
        "event_id": "",
        "partition_wm_ms": None,
        "replayed": False,
        "rowtime_ms": window_end_ms - 1 if window_end_ms > 0 else minute_ms,
    }
    return row | extra


_numbers = itertools.count(1)

#: The record type of each kind the finalization writes (jobs/sql.FINALIZED_KINDS).
RECORD_OF_KIND = {
    "aggregate": records.AGGREGATE,
    "final": records.FINAL,
    "correction": records.CORRECTION,
    "processing_error": records.DEAD_LETTER,
}


def finalize(rows: list[dict[str, Any]], finalized_through_ms: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, record)`` of everything the job's finalization view writes for ``rows`` (in this order)."""
    from pyflink.common import Row, Types
    from pyflink.table import Schema

    from infra.flink import python_path
    from jobs.flink.metering_job import Rebuild, RunOptions, create_environment

    os.environ["PYTHONPATH"] = python_path(os.environ.get("PYTHONPATH"))
    rebuild = Rebuild({}, {}, finalized_through_ms) if finalized_through_ms is not None else None
    env, t_env = create_environment(CONFIG, RunOptions(bounded=True, rebuild=rebuild))
    env.set_parallelism(1)
    for statement in sql.function_ddl():
        t_env.execute_sql(statement)
    types = {
        "minute_ms": "BIGINT",
        "window_end_ms": "BIGINT",
        "cnt": "BIGINT",
        "partition_wm_ms": "BIGINT",
        "rowtime_ms": "BIGINT",
    }
    names = ["customer_id", "meter", "group_key", "minute_ms", "window_end_ms", "cnt", "total", "event_id"]
    names += ["partition_wm_ms", "replayed", "rowtime_ms"]

    def flink_type(name: str) -> Any:
        return Types.BOOLEAN() if name == "replayed" else Types.LONG() if name in types else Types.STRING()

    row_type = Types.ROW_NAMED(names, [flink_type(n) for n in names])
    data = env.from_collection([Row(**{n: r.get(n) for n in names}) for r in rows], type_info=row_type)
    builder = Schema.new_builder()
    for name in names:
        builder = builder.column(name, "BOOLEAN" if name == "replayed" else types.get(name, "STRING"))
    schema = (
        builder.column_by_expression("rowtime", "TO_TIMESTAMP_LTZ(rowtime_ms, 3)")
        .watermark("rowtime", "rowtime - INTERVAL '0.001' SECOND")
        .build()
    )
    number = next(_numbers)
    t_env.create_temporary_view(f"raw_partials_{number}", t_env.from_data_stream(data, schema))
    t_env.create_temporary_view(
        f"partials_{number}",
        t_env.sql_query(f"""
SELECT customer_id, meter, group_key, minute_ms, window_end_ms, cnt, total, total AS mx, total AS mn,
       CAST(NULL AS STRING) AS distinct_values, CAST(NULL AS STRING) AS latest_enc, event_id, partition_wm_ms, replayed
FROM raw_partials_{number}"""),
    )
    query = sql.finalized_view(f"partials_{number}", f"test-finalize-{number}")
    rows = list(t_env.sql_query(query).execute().collect())
    written = [(kind, json.loads(record)) for _, kind, record in rows]
    for (key, kind, _), (_, record) in zip(rows, written, strict=True):
        assert tuple(record) == RECORD_OF_KIND[kind].names, (kind, record)  # its declared fields, in order (schemas/records.py)
        assert key == record["customer_id"], (key, record)  # the sinks' Kafka key: a customer's records share a partition
    return written


def python_ledger(rows: list[dict[str, Any]], finalized_through_ms: int = -(2**62)) -> PeriodLedger:
    """The Python reference fed the same partials, with the watermark each row's rowtime allows."""
    ledger = PeriodLedger(Aggregation.SUM, DAY_POLICY.cycle, DAY_POLICY.grace)
    for row in rows:
        count, total = row["cnt"], Decimal(row["total"])
        watermark = max(finalized_through_ms, row.get("partition_wm_ms") or -(2**62))
        ledger.apply(row["minute_ms"], Partial(Aggregation.SUM, count, total=total), watermark)
    return ledger


def test_open_minutes_finals_and_a_correction_agree_with_the_python_ledger() -> None:
    minute = DAY1 + 10 * MINUTE
    rows = [
        partial(minute, minute + 30_000, 2, "1.5"),
        partial(minute, minute + MINUTE, 1, "2.25"),  # the minute's last step
        partial(minute + MINUTE, minute + 2 * MINUTE, 3, "0.000000001"),
        partial(DAY1 + DAY + 5 * MINUTE, DAY1 + DAY + 6 * MINUTE, 1, "7"),  # the next day
        # two hours later: day 1 is final (end + 1 h); a late event for it is a correction
        partial(DAY1 + 2 * DAY + 2 * 3_600_000, DAY1 + 2 * DAY + 2 * 3_600_000 + MINUTE, 1, "1"),
        partial(DAY1 + 20 * MINUTE, -1, 1, "4", event_id="late-1", partition_wm_ms=DAY1 + 2 * DAY),
    ]
    out = finalize(rows)
    aggregates = [r for k, r in out if k == "aggregate"]
    finals = {r["period_start_ms"]: r for k, r in out if k == "final"}
    corrections = [r for k, r in out if k == "correction"]
    assert not [r for k, r in out if k == "processing_error"]

    # The minute's segment is its running value, version = the step's end.
    first_minute = [a for a in aggregates if a["minute_ms"] == minute]
    assert [(a["version"], Decimal(a["value"])) for a in first_minute] == [
        (minute + 30_000, Decimal("1.5")),
        (minute + MINUTE, Decimal("3.75")),
    ]
    assert all(a["segment"] == "on_time" and a["period_start_ms"] == DAY1 and a["day_start_ms"] == DAY1 for a in first_minute)

    # Each period final once, with what the Python ledger folds in before its end + grace.
    on_time = [r for r in rows if r["window_end_ms"] > 0]
    reference = python_ledger(on_time)
    expected = {f.period_start_ms: f for f in reference.finalize(2**62)}
    assert set(finals) == set(expected)
    for start, final in finals.items():
        assert Decimal(final["value"]) == expected[start].partial.total
        assert final["event_count"] == expected[start].partial.count
    assert finals[DAY1]["finalized_at_watermark_ms"] == DAY1 + DAY + 3_600_000

    # The late event: its period was final by its partition's watermark, so a correction.
    assert [(c["event_id"], Decimal(c["value"]), c["period_start_ms"]) for c in corrections] == [("late-1", Decimal("4"), DAY1)]
    assert Decimal(finals[DAY1]["value"]) == Decimal("3.750000001")


def test_a_rebuild_leaves_replayed_corrections_out_and_never_finalizes_a_closed_period_again() -> None:
    floor = DAY1 + DAY + 3_600_000  # day 1 was final in the replaced job
    rows = [
        partial(DAY1 + 5 * MINUTE, DAY1 + 6 * MINUTE, 2, "10", replayed=True),  # day 1: its correction was written
        partial(DAY1 + 6 * MINUTE, DAY1 + 7 * MINUTE, 1, "5"),  # day 1, not replayed: a correction now
        partial(DAY1 + DAY + 5 * MINUTE, DAY1 + DAY + 6 * MINUTE, 1, "3", replayed=True),  # day 2, open: rebuilt
        partial(DAY1 + DAY + 7 * MINUTE, DAY1 + DAY + 8 * MINUTE, 1, "4"),
    ]
    out = finalize(rows, finalized_through_ms=floor)
    finals = [r for k, r in out if k == "final"]
    corrections = [r for k, r in out if k == "correction"]
    assert [(f["period_start_ms"], Decimal(f["value"]), f["event_count"]) for f in finals] == [(DAY1 + DAY, Decimal("7"), 2)]
    assert [(c["period_start_ms"], Decimal(c["value"])) for c in corrections] == [(DAY1, Decimal("5"))]
    reference = merge(Partial(Aggregation.SUM, 1, total=Decimal(3)), Partial(Aggregation.SUM, 1, total=Decimal(4)))
    assert Decimal(finals[0]["value"]) == reference.total


def test_a_partial_it_cannot_read_is_a_dead_letter_and_the_rest_goes_on() -> None:
    rows = [
        partial(DAY1, DAY1 + MINUTE, 2, None),  # a step's DECIMAL(38, 9) sum that overflowed (NULL)
        partial(DAY1 + MINUTE, DAY1 + 2 * MINUTE, 1, "2"),
    ]
    out = finalize(rows)
    (error,) = [r for k, r in out if k == "processing_error"]
    assert error["reason"] == "processing_error" and error["kafka_partition"] == sql.NO_PARTITION
    assert "exceeds DECIMAL(38, 9)" in json.loads(base64.b64decode(error["payload_base64"]))["error"]
    (final,) = [r for k, r in out if k == "final"]
    assert (Decimal(final["value"]), final["event_count"]) == (Decimal("2"), 1)
