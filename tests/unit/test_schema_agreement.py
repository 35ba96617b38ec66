"""The event schema, the Python model and the ClickHouse raw_events columns agree."""

from __future__ import annotations

import dataclasses
import re

from clickhouse.migrate import discover
from schemas.validate import UsageEvent, schema_v1

#: Schema field -> raw_events column, where the names differ on purpose.
RENAMED = {"timestamp": "event_time"}
#: raw_events columns that are pipeline metadata, not event fields.
PIPELINE_COLUMNS = {"status", "kafka_topic", "kafka_partition", "kafka_offset", "received_at", "payload"}


def raw_events_columns() -> dict[str, str]:
    sql = next(m for m in discover() if m.name == "raw_events").sql
    body = sql[sql.index("CREATE TABLE raw_events") :]
    body = body[body.index("(") + 1 : body.index("\n)")]
    columns = {}
    for line in body.splitlines():
        match = re.match(r"^\s+([a-z_]+)\s+(.+?)(?:\s+DEFAULT.*|\s+CODEC.*)?,?$", line)
        if match:
            columns[match.group(1)] = match.group(2).rstrip(",")
    return columns


def test_every_schema_field_has_a_raw_column() -> None:
    columns = raw_events_columns()
    for name in schema_v1()["properties"]:
        assert RENAMED.get(name, name) in columns, f"schema field {name!r} has no raw_events column"


def test_every_raw_column_is_a_schema_field_or_pipeline_metadata() -> None:
    fields = {RENAMED.get(n, n) for n in schema_v1()["properties"]}
    assert set(raw_events_columns()) - fields == PIPELINE_COLUMNS


def test_python_model_carries_every_schema_field() -> None:
    assert {f.name for f in dataclasses.fields(UsageEvent)} == set(schema_v1()["properties"])


def test_quantity_column_is_exact_with_the_schema_scale() -> None:
    assert raw_events_columns()["quantity"] == "Decimal(38, 9)"
    assert raw_events_columns()["event_time"].startswith("DateTime64")
