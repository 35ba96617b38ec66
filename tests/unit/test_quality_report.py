"""`metering check` without storage: the summary it prints, its JSON, the suite files, options and parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clickhouse.quality import (
    DATASETS,
    CheckOptions,
    CheckReport,
    ExpectationOutcome,
    QualityError,
    SuiteOutcome,
    load_groups,
    outcome_of,
    parse_override,
    query_parameters,
    render_json,
    render_text,
    select_suites,
    suite_parameters,
)
from jobs.config import Config, PipelineSettings
from udfs.meters import Aggregation, Meter

OFFENDING = {
    "customer_id": "acme",
    "meter": "tokens",
    "group_key": {"model": "m1"},
    "minute": "2026-02-10T10:00:00.000Z",
    "stored_value": "999",
    "recomputed_value": "123.5",
}


def report(*, failing: bool) -> CheckReport:
    recompute = [
        ExpectationOutcome(
            "expect_column_pair_values_to_be_equal",
            ("stored_value", "recomputed_value"),
            "stored minute totals equal a recomputation from raw_events",
            success=not failing,
            checked=16,
            unexpected=1 if failing else 0,
            examples=[OFFENDING] if failing else [],
        ),
        ExpectationOutcome("expect_column_pair_values_to_be_equal", ("stored_events", "recomputed_events"), "", True, 16),
    ]
    suites = [
        SuiteOutcome("raw_events.dedup", "raw_duplicates", 1, [ExpectationOutcome("expect_x", ("a",), "", True, 1)]),
        SuiteOutcome("aggregates.recompute", "recompute", 16, recompute),
    ]
    start = datetime(2026, 2, 1, tzinfo=UTC)
    return CheckReport(start, start + timedelta(days=28), 1.0, {"max_dead_letter_rate": 0.01}, suites, "file:///q/index.html")


def test_a_failed_expectation_is_named_with_an_offending_row() -> None:
    assert render_text(report(failing=True)).splitlines() == [
        "metering check: events 2026-02-01T00:00:00.000Z .. 2026-03-01T00:00:00.000Z",
        "  [ok  ] raw_events.dedup           1 row  1 expectation passed",
        "  [FAIL] aggregates.recompute     16 rows  1 of 2 expectations failed",
        "         FAILED expect_column_pair_values_to_be_equal(stored_value, recomputed_value)",
        "                stored minute totals equal a recomputation from raw_events",
        '                1 of 16 rows unexpected; e.g. customer_id=acme meter=tokens group_key={"model": "m1"} '
        "minute=2026-02-10T10:00:00.000Z stored_value=999 recomputed_value=123.5",
        "FAIL: 1 of 3 expectations failed (aggregates.recompute)",
        "Data Docs: file:///q/index.html",
    ]


def test_a_passing_run_says_pass() -> None:
    text = render_text(report(failing=False))
    assert "FAILED" not in text and "PASS: 3 expectations in 2 suites" in text


def test_an_expectation_that_raised_shows_the_error() -> None:
    broken = report(failing=False)
    broken.suites[0].expectations[0] = ExpectationOutcome("expect_x", ("a",), "", False, error="column a not found")
    assert "                error: column a not found" in render_text(broken).splitlines()


def test_json_lists_failures_for_machines() -> None:
    answer = json.loads(render_json(report(failing=True)))
    assert answer["success"] is False
    assert answer["failed"] == ["aggregates.recompute: expect_column_pair_values_to_be_equal(stored_value, recomputed_value)"]
    (failed,) = [e for s in answer["suites"] for e in s["expectations"] if not e["success"]]
    assert failed["examples"] == [OFFENDING] and failed["unexpected"] == 1
    assert answer["from"] == "2026-02-01T00:00:00.000Z" and answer["data_docs"] == "file:///q/index.html"


def test_the_offending_row_is_the_whole_dataset_row_gx_points_at() -> None:
    rows: list[dict[str, Any]] = [{"k": "good", "a": "1", "b": "1", "row": 0}, {"k": "bad", "a": "2", "b": None, "row": 1}]
    result = {
        "success": False,
        "expectation_config": {"type": "expect_column_pair_values_to_be_equal", "kwargs": {"column_A": "a", "column_B": "b"}},
        "result": {"element_count": 2, "unexpected_count": 1, "partial_unexpected_index_list": [{"a": "2", "b": None, "row": 1}]},
        "exception_info": {"raised_exception": False},
    }
    outcome = outcome_of(result, rows)
    assert outcome.label == "expect_column_pair_values_to_be_equal(a, b)"
    assert (outcome.success, outcome.checked, outcome.unexpected) == (False, 2, 1)
    assert outcome.examples == [{"k": "bad", "a": "2", "b": None}]


def test_every_suite_file_names_a_dataset_and_is_a_gx_suite() -> None:
    from great_expectations.core.expectation_suite import ExpectationSuite

    groups = load_groups()
    assert list(groups) == ["raw_events", "aggregates", "operations"]
    for group in groups.values():
        for suite in group.suites:
            gx_suite = ExpectationSuite(**suite.document)
            assert gx_suite.expectations, suite.name
            for expectation in gx_suite.expectations:
                for column in expectation.configuration.kwargs.values():
                    if isinstance(column, str) and column in suite.dataset.columns:
                        break
                else:
                    pytest.fail(f"{suite.name}: {expectation.expectation_type} names no column of {suite.dataset.name}")
                assert expectation.description, f"{suite.name}: every expectation says what it checks"


def test_every_dataset_query_exists() -> None:
    from clickhouse.queries import sql_of

    for dataset in DATASETS.values():
        text = sql_of(dataset.query)
        assert text.startswith("-- Data quality"), dataset.query
        for name in dataset.parameters:
            assert "{" + name + ":" in text, f"{dataset.query} does not bind {name}"


def test_suites_are_chosen_by_group_or_name() -> None:
    groups = load_groups()
    assert [s.name for s in select_suites(groups, ["operations"])] == ["operations.rates"]
    assert [s.name for s in select_suites(groups, ["aggregates.finals", "operations"])] == [
        "aggregates.finals",
        "operations.rates",
    ]
    assert len(select_suites(groups, [])) == sum(len(g.suites) for g in groups.values())
    with pytest.raises(QualityError, match="--suite='nope': no such suite"):
        select_suites(groups, ["nope"])


def test_a_suite_file_naming_an_unknown_dataset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"group": "x", "suites": [{"name": "x.y", "meta": {"dataset": "nope"}}]}))
    with pytest.raises(QualityError, match="unknown dataset 'nope'"):
        load_groups(tmp_path)


def test_parameters_come_from_the_suite_files_the_config_and_set() -> None:
    config = Config(pipeline=PipelineSettings(allowed_future_skew=timedelta(minutes=2)))
    values = suite_parameters(config, load_groups().values(), {"max_dead_letter_rate": 0.2})
    assert values == {"max_dead_letter_rate": 0.2, "max_correction_rate": 0.01, "allowed_future_skew_ms": 120_000}
    with pytest.raises(QualityError, match="--set max_typo: unknown parameter"):
        suite_parameters(config, load_groups().values(), {"max_typo": 1.0})
    assert parse_override("max_correction_rate=0.5") == ("max_correction_rate", 0.5)
    with pytest.raises(QualityError, match="use NAME=NUMBER"):
        parse_override("max_correction_rate")


def test_meters_become_query_parameters() -> None:
    meters = (
        Meter("api_calls", "api_call", Aggregation.COUNT),
        Meter("users", "api_call", Aggregation.UNIQUE_COUNT, value="properties.user"),
        Meter("tokens", "tokens", Aggregation.SUM, group_by=("model",)),
        Meter("bytes", "upload", Aggregation.SUM, value="properties.bytes"),
        Meter("credits", "credits", Aggregation.SUM, allow_negative=True),
    )
    params = query_parameters(Config(meters=meters), CheckOptions(start=datetime(2026, 3, 1, tzinfo=UTC), sample=0.5))
    assert params["from"] == "2026-03-01 00:00:00.000" and params["to"] == "2200-01-01 00:00:00.000"
    assert params["sample"] == 0.5
    # a negative quantity is refused by a count meter and by a meter reading the quantity, not by one reading a property
    assert params["non_negative_types"] == ["api_call", "tokens"]
    assert params["meter_values"] == ["", "user", "", "bytes", ""]
    assert params["meter_dims"] == [[], [], ["model"], [], []]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample": 0}, "--sample=0"),
        ({"sample": 1.5}, "--sample=1.5"),
        ({"start": datetime(2026, 3, 1)}, "--from: give a time zone"),
        ({"start": datetime(2026, 3, 2, tzinfo=UTC), "end": datetime(2026, 3, 1, tzinfo=UTC)}, "must be before --to"),
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(QualityError, match=message):
        CheckOptions(**options)
