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


@pytest.mark.integration
def test_every_writers_column_list_fits_its_table(storage_settings: StorageSettings) -> None:
    """clickhouse/tables.py: each list names columns its table has, and the table fills every other one."""
    from clickhouse import tables

    written = {
        **tables.COLUMNS,
        "adjustments": tables.ADJUSTMENT_COLUMNS,
        "replay_scope": tables.SCOPE_COLUMNS,
        "replay_runs": tables.RUN_COLUMNS,
        "credit_ledger": tables.LEDGER_COLUMNS,
        "credit_balances": tables.BALANCE_COLUMNS,
    }
    replay = {"aggregate_segments": tables.REPLAY_SEGMENT_COLUMNS, "period_finals": tables.REPLAY_FINAL_COLUMNS}
    with open_storage(storage_settings) as storage:
        migrate(storage)
        for table, columns in [*written.items(), *replay.items()]:
            kinds = dict(
                storage.query_rows(
                    "SELECT name, default_kind FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
                    {"t": table},
                )
            )
            assert set(columns) <= set(kinds), (table, set(columns) - set(kinds))
            assert len(set(columns)) == len(columns), table
            unfilled = [name for name, kind in kinds.items() if name not in columns and not kind]
            assert unfilled == [], (table, unfilled)
