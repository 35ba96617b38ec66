"""Dedup and the duplicates count (``metering_first_seen``) on Flink itself, in streaming mode.

The process table function cannot run in batch mode, so these tests stream hand-made rows
through a DataStream source with a watermark. They check it against an independent count, that
late rows are not dropped on the way (Flink drops them when a PTF is called with ``on_time``),
that the state is forgotten after ``table.exec.state.ttl`` counted from a key's latest event, and
the job's own wiring (``jobs.flink.metering_job.define_views``) on retries and changed payloads.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from jobs.config import load_config
from jobs.flink import sql

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "metering.example.yaml", env={})
RECEIVED_MS = 1798761600000  # 2027-01-01T00:00:00Z, when "Kafka" received every row
UID = "test-first-seen"


@pytest.fixture(scope="module")
def stream() -> Iterator[tuple[Any, Any]]:
    """The job's own environment (jobs.flink.metering_job.create_environment) with its functions."""
    from infra.flink import python_path
    from jobs.flink.metering_job import RunOptions, create_environment

    # The embedded interpreter of thread mode (below) imports through the JVM's PYTHONPATH.
    os.environ["PYTHONPATH"] = python_path(os.environ.get("PYTHONPATH"))
    env, t_env = create_environment(CONFIG, RunOptions(bounded=True))
    env.set_parallelism(1)
    # The pacing map below is Python (the job itself has none). Thread mode: in process mode the
    # MiniCluster runs Python workers inside this process (loopback), which sets
    # PYFLINK_GATEWAY_DISABLED in os.environ, and every PyFlink subprocess a later test starts fails.
    t_env.get_config().set("python.execution-mode", "thread")
    for statement in sql.function_ddl():
        t_env.execute_sql(statement)
    yield env, t_env


_view_numbers = itertools.count(1)


def rows_view(stream: tuple[Any, Any], rows: list[dict[str, Any]], pause_before: dict[int, float] | None = None) -> str:
    """A view of ``rows`` (``first_seen_input_view``'s columns) with a watermarked ``rowtime``; returns its name.

    Each row needs ``kafka_offset`` and ``rowtime_ms``; the other columns default to NULL. The
    watermark trails the highest rowtime by one second, so a row more than a second older than
    an earlier one is late. ``pause_before``: seconds to sleep before emitting the row at that index.
    """
    from pyflink.common import Row, Types
    from pyflink.table import Schema

    env, t_env = stream
    columns = {"kafka_offset": "BIGINT", "rowtime_ms": "BIGINT"} | dict.fromkeys(
        ["doc", "event_id", "customer_id", "reason", "fingerprint"], "STRING"
    )
    names = list(columns)
    row_type = Types.ROW_NAMED(names, [Types.LONG() if sql_type == "BIGINT" else Types.STRING() for sql_type in columns.values()])
    data = env.from_collection([Row(**{name: row.get(name) for name in names}) for row in rows], type_info=row_type)
    if pause_before:
        pauses = dict(pause_before)

        def paced(row: Any) -> Any:
            time.sleep(pauses.get(row.kafka_offset, 0.0))
            return row

        data = data.map(paced, output_type=row_type)
    builder = Schema.new_builder()
    for name, sql_type in columns.items():
        builder = builder.column(name, sql_type)
    schema = (
        builder.column_by_expression("rowtime", "TO_TIMESTAMP_LTZ(rowtime_ms, 3)")
        .watermark("rowtime", "rowtime - INTERVAL '1' SECOND")
        .build()
    )
    number = next(_view_numbers)
    raw, name = f"raw_rows_{number}", f"rows_{number}"
    t_env.create_temporary_view(raw, t_env.from_data_stream(data, schema))
    t_env.create_temporary_view(
        name,
        t_env.sql_query(f"""
SELECT 0 AS kafka_partition, kafka_offset, TO_TIMESTAMP_LTZ({RECEIVED_MS}, 3) AS kafka_ts, rowtime, doc,
       CAST(NULL AS INT) AS payload_size, event_id,
       customer_id, CAST('tokens' AS STRING) AS event_type, CAST(NULL AS STRING) AS q_text, rowtime_ms AS event_ms,
       CAST(NULL AS ARRAY<STRING>) AS props, reason, fingerprint, CAST(NULL AS BIGINT) AS partition_wm_ms,
       FALSE AS replayed, CAST(NULL AS STRING) AS amendment, CAST(NULL AS STRING) AS amendment_id, FALSE AS amendable
FROM {raw}"""),
    )
    return name


def first_seen(stream: tuple[Any, Any], view: str) -> dict[int, tuple[int, int]]:
    """``kafka_offset -> (seen, variants)`` of every row ``sql.first_seen_view`` emits for ``view``."""
    _, t_env = stream
    query = f"SELECT kafka_offset, seen, variants FROM ({sql.first_seen_view(view, UID)})"
    out: dict[int, tuple[int, int]] = {}
    for offset, seen, variants in t_env.sql_query(query).execute().collect():
        assert offset not in out, f"offset {offset} emitted twice"
        out[offset] = (seen, variants)
    return out


def test_agrees_with_an_independent_count_and_drops_no_late_row(stream: tuple[Any, Any]) -> None:
    rng = random.Random(5)
    rows: list[dict[str, Any]] = []
    for offset in range(2000):
        reason = rng.choice([None] * 9 + ["bad_quantity"])
        rows.append(
            {
                "kafka_offset": offset,
                # jumps back by up to a minute: about half the rows are behind the watermark
                "rowtime_ms": RECEIVED_MS + offset * 100 - rng.randrange(60_000),
                "event_id": f"e{rng.randrange(400)}",
                "customer_id": rng.choice(["acme", "globex", None]),
                "reason": reason,
                "fingerprint": rng.choice(["f1", "f2", "f3"]) if reason is None else None,
            }
        )
    got = first_seen(stream, rows_view(stream, rows))

    expected: dict[int, tuple[int, int]] = {}
    seen: Counter[tuple[Any, Any]] = Counter()
    prints: dict[tuple[Any, Any], set[str]] = {}
    for row in rows:
        key = (row["customer_id"], row["event_id"])
        if row["reason"] is not None:
            expected[row["kafka_offset"]] = (0, 0)
            continue
        seen[key] += 1
        prints.setdefault(key, set()).add(row["fingerprint"])
        expected[row["kafka_offset"]] = (seen[key], len(prints[key]))
    newest, late = 0, 0
    for row in rows:
        newest = max(newest, row["rowtime_ms"])
        late += row["rowtime_ms"] < newest - 1000
    assert late > 500  # the case the test is about
    assert got == expected


def test_state_is_forgotten_after_the_ttl_counted_from_the_latest_event(stream: tuple[Any, Any]) -> None:
    """Retries 0.1 s apart keep the id for longer than the TTL in all; a 3 s silence forgets it."""
    _, t_env = stream
    rows = [
        {"kafka_offset": n, "rowtime_ms": RECEIVED_MS + n, "event_id": "e1", "customer_id": "acme", "fingerprint": "f1"}
        for n in range(20)
    ]
    pauses = {n: 0.1 for n in range(1, 19)} | {19: 3.0}
    retention = t_env.get_config().get("table.exec.state.ttl", None)
    t_env.get_config().set("table.exec.state.ttl", "1500 ms")
    try:
        got = first_seen(stream, rows_view(stream, rows, pauses))
    finally:
        t_env.get_config().set("table.exec.state.ttl", retention)
    assert [got[n][0] for n in range(20)] == [*range(1, 20), 1]


def test_the_jobs_views_count_retries_and_payload_variants(stream: tuple[Any, Any]) -> None:
    """Through ``define_views``: the first copy is billed, ``seen``/``variants`` per id seen twice or more."""
    from jobs.flink.metering_job import define_views

    _, t_env = stream
    first: dict[str, Any] = {"event_id": "e1", "customer_id": "acme", "event_type": "tokens", "timestamp": "2026-12-31T10:00:00Z"}
    first |= {"quantity": "10", "properties": {"model": "m1"}}
    changed_quantity = json.dumps({**first, "quantity": "11"})
    docs = [
        json.dumps(first),
        json.dumps(first, indent=2),  # re-serialised, same content: a plain duplicate
        changed_quantity,
        json.dumps({**first, "properties": {"model": "m2"}}),
        changed_quantity,  # acme/e1: 5 seen, 3 variants
        json.dumps({**first, "customer_id": "globex"}),  # globex/e1: once, not a duplicate
        json.dumps({**first, "event_id": "e2"}),
        json.dumps({**first, "event_id": "e2", "timestamp": "2026-12-31T09:00:00Z"}),  # acme/e2: 2 seen, 2 variants
        json.dumps({**first, "event_id": "e3", "quantity": "-x"}),  # a dead letter is not counted
        json.dumps({**first, "event_id": "e3"}),
        json.dumps({**first, "event_id": "e4", "quantity": "-5"}),  # refused by the tokens meter
        json.dumps({**first, "event_id": "e5", "event_type": "api_call"}),  # counted; active_users lacks properties.user
        json.dumps({**first, "event_id": "e6", "event_type": "api_call", "quantity": "x"}),  # not a number: no meter reads it
    ]
    rows: list[dict[str, Any]] = [
        {"kafka_offset": n, "rowtime_ms": RECEIVED_MS - 3_600_000 * n, "doc": doc}  # ever later: all late but the first
        for n, doc in enumerate(docs)
    ]
    view = rows_view(stream, rows)
    source = f"{view}_events"
    t_env.create_temporary_view(
        source,
        t_env.sql_query(f"SELECT CAST(doc AS BYTES) AS payload, kafka_partition, kafka_offset, kafka_ts, rowtime FROM {view}"),
    )
    views = define_views(t_env, CONFIG, source, suffix=f"_{view}")
    duplicates = [
        tuple(r)
        for r in t_env.sql_query(f"SELECT customer_id, event_id, seen, variants FROM ({views.duplicates_sql()})")
        .execute()
        .collect()
    ]
    latest = {(c, e): (s, v) for c, e, s, v in sorted(duplicates, key=lambda r: r[2])}
    assert latest == {("acme", "e1"): (5, 3), ("acme", "e2"): (2, 2)}
    assert sorted(r[2] for r in duplicates) == [2, 2, 3, 4, 5]
    billed = sorted(r[0] for r in t_env.sql_query(f"SELECT kafka_offset FROM deduped_{view}").execute().collect())
    assert billed == [0, 5, 6, 9, 10, 11]
    query = f"SELECT reason, meter, event_id, FROM_BASE64(payload_base64) FROM ({views.dead_letters_sql()})"
    dead = t_env.sql_query(query).execute().collect()
    assert sorted(tuple(r) for r in dead) == [
        ("bad_quantity", None, "e3", docs[8]),
        ("bad_quantity", None, "e6", docs[12]),
        ("missing_value", "active_users", "e5", docs[11]),
        ("negative_value", "tokens", "e4", docs[10]),
    ]
    # Only the records a dead letter needs carry the payload past the dedup function.
    kept_query = f"SELECT kafka_offset, FROM_BASE64(doc) FROM deduped_{view}"
    kept = {r[0]: r[1] for r in t_env.sql_query(kept_query).execute().collect()}
    assert kept == {0: None, 5: None, 6: None, 9: None, 10: docs[10], 11: docs[11]}
    metered = t_env.sql_query(f"SELECT customer_id, event_id, meter, group_key, val FROM metered_{view}").execute().collect()
    assert sorted(tuple(r) for r in metered if r[0] == "acme" and r[1] in ("e1", "e5")) == [
        ("acme", "e1", "tokens", '{"direction":"","model":"m1"}', "10"),  # group_by values from the one read
        ("acme", "e5", "active_users", "{}", None),
        ("acme", "e5", "api_calls", "{}", None),
    ]


def test_voids_and_amends_take_back_exactly_what_was_counted(stream: tuple[Any, Any]) -> None:
    """Through ``define_views``: retractions and replacements on the late path, refusals as dead letters, retries ignored."""
    from jobs.flink.metering_job import define_views

    _, t_env = stream
    base: dict[str, Any] = {"customer_id": "acme", "event_type": "tokens", "timestamp": "2026-12-31T10:00:00Z"}
    base |= {"properties": {"model": "m1"}}

    def event(event_id: str, quantity: str, **more: Any) -> str:
        return json.dumps({**base, "event_id": event_id, "quantity": quantity, **more})

    def amendment(amendment_id: str, event_id: str, quantity: str | None = None) -> str:
        doc = {"amendment": "void" if quantity is None else "amend", "amendment_id": amendment_id}
        doc |= {"customer_id": "acme", "event_id": event_id, "requested_at": "2026-12-31T12:00:00Z"}
        return json.dumps(doc | ({} if quantity is None else {"quantity": quantity}))

    docs = [
        event("e1", "10"),
        event("e2", "4", properties={"model": "m2"}),
        amendment("amd-1", "e1"),  # void: -10
        amendment("amd-1", "e1"),  # the same amendment again: a retry, no effect, no dead letter
        amendment("amd-2", "e1"),  # already voided
        amendment("amd-3", "e2", "6"),  # -4 +6
        amendment("amd-4", "e2", "7"),  # -6 +7
        amendment("amd-5", "e9"),  # no such event
        event("e5", "1", event_type="api_call"),
        amendment("amd-6", "e5"),  # api_call feeds a unique_count meter: not amendable
        event("e1", "10"),  # a retry of the voided event: a duplicate, not counted again
        amendment("amd-7", "e1", "3"),  # already voided
        event("e3", "-5"),  # refused by the tokens meter (negative_value)
        amendment("amd-8", "e3", "5"),  # the retraction of what was never counted is refused too; +5 counts
    ]
    rows = [{"kafka_offset": n, "rowtime_ms": RECEIVED_MS - 60_000 + n, "doc": doc} for n, doc in enumerate(docs)]
    view = rows_view(stream, rows)
    source = f"{view}_events"
    t_env.create_temporary_view(
        source,
        t_env.sql_query(f"SELECT CAST(doc AS BYTES) AS payload, kafka_partition, kafka_offset, kafka_ts, rowtime FROM {view}"),
    )
    views = define_views(t_env, CONFIG, source, suffix=f"_{view}")
    partials = t_env.sql_query(
        f"SELECT meter, group_key, event_id, cnt, total FROM ({views.partials_sql(timedelta(seconds=10))})"
    )
    tokens_rows = [tuple(r) for r in partials.execute().collect() if r[0] == "tokens"]
    got = sorted((r[2] or "", r[3], r[4]) for r in tokens_rows)
    # a retraction and a replacement carry the event's properties, so its group
    assert {r[1] for r in tokens_rows if (r[2] or "").startswith("e2")} == {'{"direction":"","model":"m2"}'}
    # no watermark before the first rows: the events are late events too, under their own ids
    assert got == [
        ("e1", 1, "10"),
        ("e1~amd-1-", -1, "-10"),
        ("e2", 1, "4"),
        ("e2~amd-3+", 1, "6"),
        ("e2~amd-3-", -1, "-4"),
        ("e2~amd-4+", 1, "7"),
        ("e2~amd-4-", -1, "-6"),
        ("e3~amd-8+", 1, "5"),
    ]
    total = sum(Decimal(t) for _, _, t in got)
    assert (sum(c for _, c, _ in got), total) == (2, Decimal(12))  # e2 at 7 and e3 at 5
    query = f"SELECT reason, meter, event_id, FROM_BASE64(payload_base64) FROM ({views.dead_letters_sql()})"
    dead = sorted(tuple(r) for r in t_env.sql_query(query).execute().collect())
    assert dead == sorted(
        [
            ("already_voided", None, "e1", docs[4]),
            ("already_voided", None, "e1", docs[11]),
            ("missing_value", "active_users", "e5", docs[8]),  # no properties.user
            ("negative_value", "tokens", "e3", docs[12]),  # once: not again for the retraction of amd-8
            ("not_amendable", None, "e5", docs[9]),
            ("unknown_event", None, "e9", docs[7]),
        ]
    )
