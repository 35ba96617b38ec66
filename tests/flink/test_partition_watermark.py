"""``metering_partition_watermark`` on Flink: each partition's watermark before each record, from its own order only."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.config import load_config
from jobs.flink import sql

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "metering.example.yaml", env={})
LAG_MS = 30_000


@pytest.fixture(scope="module")
def t_env() -> Iterator[Any]:
    from jobs.flink.metering_job import RunOptions, create_environment

    env, table_env = create_environment(CONFIG, RunOptions(bounded=True))
    env.set_parallelism(1)
    for statement in sql.function_ddl():
        table_env.execute_sql(statement)
    yield table_env


def reference(rows: list[tuple[int, int, int]]) -> dict[tuple[int, int], int | None]:
    """(partition, offset) -> the newest positive rowtime of the partition's earlier records minus the lag."""
    newest: dict[int, int] = {}
    out: dict[tuple[int, int], int | None] = {}
    for partition, offset, rowtime in rows:
        out[(partition, offset)] = newest[partition] - LAG_MS if partition in newest else None
        if rowtime > 0:
            newest[partition] = max(newest.get(partition, rowtime), rowtime)
    return out


def test_each_partition_has_its_own_watermark_whatever_the_interleaving(t_env: Any) -> None:
    rng = random.Random(3)
    start = 1_767_225_600_000

    def rowtime(partition: int, offset: int) -> int:
        # partition 2 runs three times as fast through event time as partition 0; 5% have no event time (0)
        return 0 if rng.random() < 0.05 else start + offset * 60_000 * (partition + 1) - rng.randrange(600_000)

    streams = {partition: [(partition, offset, rowtime(partition, offset)) for offset in range(300)] for partition in range(3)}
    rows: list[tuple[int, int, int]] = []
    cursors = dict.fromkeys(streams, 0)
    while any(cursors[p] < len(streams[p]) for p in streams):  # a random interleaving, each partition in order
        partition = rng.choice([p for p in streams if cursors[p] < len(streams[p])])
        rows.append(streams[partition][cursors[partition]])
        cursors[partition] += 1
    from pyflink.table import DataTypes

    schema = DataTypes.ROW(
        [DataTypes.FIELD(n, t) for n, t in (("p", DataTypes.INT()), ("o", DataTypes.BIGINT()), ("r", DataTypes.BIGINT()))]
    )
    t_env.create_temporary_view("interleaved", t_env.from_elements(rows, schema))
    query = f"""
SELECT p, o, metering_partition_watermark(p, o, TO_TIMESTAMP_LTZ(r, 3), CAST({LAG_MS} AS BIGINT)) FROM interleaved"""
    got = {(p, o): wm for p, o, wm in t_env.sql_query(query).execute().collect()}
    assert got == reference(rows)
