"""The job's generated SQL: well-formed text, identifiers quoted, intervals exact."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from infra.settings import PROJECT_ROOT
from jobs.config import load_config
from jobs.flink import sql

CONFIG = load_config(PROJECT_ROOT / "config" / "metering.example.yaml", env={})


def all_generated_sql() -> list[str]:
    skew = CONFIG.pipeline.allowed_future_skew
    return [
        sql.parse_view("events", CONFIG.meters, skew),
        sql.first_seen_input_view("parsed", CONFIG.pipeline.max_out_of_orderness, CONFIG.meters),
        sql.first_seen_view("first_seen_input", "metering-v1-first-seen"),
        sql.dead_letters_view("first_seen"),
        sql.dedup_view("first_seen"),
        sql.duplicates_view("first_seen"),
        sql.metered_view("deduped", CONFIG.meters),
        sql.flagged_view("metered"),
        sql.ontime_partials_view("flagged", timedelta(seconds=10)),
        sql.late_partials_view("flagged"),
        sql.meter_dead_letters_view("flagged"),
        *(expr for _, expr in sql.source_schema_columns(skew, CONFIG.meters)),
    ]


@pytest.mark.parametrize("text", all_generated_sql())
def test_no_control_characters_leak_into_sql(text: str) -> None:
    """A Python escape (e.g. '\\0001' read as octal NUL + '1') once broke unique_count silently."""
    assert all(ch in "\n\t" or ord(ch) >= 32 for ch in text), repr([ch for ch in text if ord(ch) < 32 and ch not in "\n\t"])


def test_listagg_separator_is_the_unicode_escape_finalize_splits_on() -> None:
    from jobs.flink.sql import SEP

    assert "U&'\\0001'" in sql.ontime_partials_view("flagged", timedelta(seconds=10))
    assert SEP == "\u0001"


def test_literals_double_quotes() -> None:
    assert sql.lit("it's") == "'it''s'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(seconds=30), "INTERVAL '0 00:00:30.000' DAY TO SECOND(3)"),
        (timedelta(hours=49, milliseconds=5), "INTERVAL '2 01:00:00.005' DAY TO SECOND(3)"),
    ],
)
def test_intervals_are_exact(value: timedelta, expected: str) -> None:
    assert sql.seconds(value) == expected


def test_every_meter_gets_a_row_under_its_event_type() -> None:
    metered = sql.metered_view("deduped", CONFIG.meters)
    assert "UNION" not in metered  # one correlate, whatever the number of meters (stable operator uids)
    for event_type in {m.event_type for m in CONFIG.meters}:
        assert metered.count(f"WHEN '{event_type}' THEN ARRAY[") == 1
    for meter in CONFIG.meters:
        assert f"ROW(CAST('{meter.name}' AS STRING)" in metered


def test_watermark_alignment_options_follow_the_configuration() -> None:
    from dataclasses import replace

    from jobs.flink.metering_job import ALIGNMENT_GROUP, alignment_options

    assert CONFIG.pipeline.alignment_max_drift == timedelta(minutes=1)
    assert alignment_options(CONFIG) == {
        "scan.watermark.alignment.group": ALIGNMENT_GROUP,
        "scan.watermark.alignment.max-drift": "60000 ms",
        "scan.watermark.alignment.update-interval": "1000 ms",
    }
    off = replace(CONFIG, pipeline=replace(CONFIG.pipeline, alignment_max_drift=timedelta(0)))
    assert alignment_options(off) == {}
    assert alignment_options(CONFIG, bounded=True) == {}  # the connector's bug with finished splits


def test_alignment_drift_may_be_zero_but_not_negative(tmp_path: Path) -> None:
    from jobs.config import ConfigError

    path = tmp_path / "metering.yaml"
    meters = "meters:\n  - {name: calls, event_type: api_call, aggregation: count}\n"
    path.write_text(meters + "pipeline:\n  alignment_max_drift: 0\n")
    assert load_config(path, env={}).pipeline.alignment_max_drift == timedelta(0)
    path.write_text(meters + "pipeline:\n  alignment_max_drift: -5\n  alignment_update_interval: 0\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert "pipeline.alignment_max_drift" in str(error.value) and "pipeline.alignment_update_interval" in str(error.value)


def test_late_rows_carry_their_partitions_watermark_to_the_finalization_operator() -> None:
    """Both partial branches have the column (``metering_finalize`` reads it by name), and ``replayed`` after it."""
    assert sql.PARTIAL_COLUMNS.split(", ")[-2:] == ["partition_wm_ms", "replayed"]
    assert "partition_wm_ms, replayed\nFROM flagged" in sql.late_partials_view("flagged")
    assert "CAST(NULL AS BIGINT) AS partition_wm_ms, replayed" in sql.ontime_partials_view("flagged", timedelta(seconds=10))
    assert "COALESCE(event_ms <= partition_wm_ms, FALSE)" in sql.flagged_view("metered")
