"""The ClickHouse tables that take the job's records as they are have those records' fields as columns (schemas/records.py).

``raw_events`` takes the raw rows and ``aggregate_segments_json`` the aggregates, both as
``JSONEachRow`` lines: a field the job writes that the table lacks would be refused, and a
column the record lacks would be filled with a default. So the table holds every field of its
record, and any other column is filled by ClickHouse (a default or a materialized expression).
"""

from __future__ import annotations

import pytest

from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from jobs.loader.loader import JSON_LINE_TABLES
from schemas import records

TABLE_RECORDS = {"raw_events": records.RAW_EVENT, "aggregate_segments_json": records.AGGREGATE}


@pytest.mark.integration
def test_each_json_line_table_has_its_records_fields_and_fills_the_rest(storage_settings: StorageSettings) -> None:
    assert {into for into, _ in JSON_LINE_TABLES.values()} == set(TABLE_RECORDS)
    with open_storage(storage_settings) as storage:
        migrate(storage)
        for table, record in TABLE_RECORDS.items():
            columns = storage.query_rows(
                "SELECT name, default_kind FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
                "ORDER BY position",
                {"t": table},
            )
            names = [name for name, _ in columns]
            assert [n for n in names if n in record.names] == list(record.names), table
            assert all(kind for name, kind in columns if name not in record.names), (table, columns)
