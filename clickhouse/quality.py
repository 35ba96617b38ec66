"""Data-quality checks (``metering check``): great-expectations suites run against ClickHouse.

GX Core 1.x has no ClickHouse/chDB data source, so every check goes through GX's pandas path:

1. a *dataset* is one named query (``clickhouse/queries/check_*.sql``) read through a :class:`Reader`
   (directly, or through the chDB owner's gateway: only query names and parameters cross it). The
   heavy lifting (joins, recomputation, comparisons) happens in ClickHouse; each dataset returns one
   row per thing to judge, e.g. per (customer, meter, group, minute) the stored and the recomputed value;
2. the rows become a pandas DataFrame, validated by a GX ``ExpectationSuite`` built from the versioned
   suite files in ``clickhouse/expectations/*.json`` (one file per suite group: raw_events, aggregates,
   operations; each holds GX-native suite documents with a ``meta.dataset``);
3. each suite runs in a GX ``Checkpoint`` (whole-dataframe batch definition), results are stored in a
   file data context under ``--docs-dir`` and rendered as GX Data Docs (HTML);
4. a :class:`CheckReport` names every failed expectation with example offending rows (the full row
   of the dataset, found by the ``row`` column GX reports as an unexpected index).

Suite parameters (``{"$PARAMETER": name}`` in a suite file) come from the group file's
``parameters`` (defaults), then from the configuration (``allowed_future_skew_ms``), then from
``--set NAME=VALUE``. docs/quality.md describes every expectation and what its failure means.

Why one module: the suites, their datasets and the report are one vocabulary over the named check
queries; the SQL lives in clickhouse/queries/check_*.sql and the expectations in
clickhouse/expectations.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from clickhouse.client import StorageError
from clickhouse.queries import EARLIEST, LATEST, QueryError, Reader, plain
from udfs.meters import Meter

log = logging.getLogger("metering.quality")

SUITES_DIR = Path(__file__).resolve().parent / "expectations"
#: Suite groups run in pipeline order (others after them, by name).
GROUP_ORDER = ("raw_events", "aggregates", "operations")
#: Column added to every dataset: the row's position, reported by GX for unexpected rows.
ROW = "row"
#: How many offending rows a report keeps per failed expectation.
EXAMPLES = 3


class QualityError(ValueError):
    """A check that cannot run as asked (unknown suite or parameter, bad range): a usage error."""


class CheckedPipeline(Protocol):
    @property
    def allowed_future_skew(self) -> timedelta: ...


class CheckedConfig(Protocol):
    """What the checks read of the configuration (``jobs.config.Config`` is one: jobs sits above this folder)."""

    @property
    def meters(self) -> Sequence[Meter]: ...

    @property
    def pipeline(self) -> CheckedPipeline: ...


# --- datasets ---------------------------------------------------------------------------------------


def _schema_problems(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """raw_events: validate each payload against schemas/usage_event.v1.json; the payload itself is dropped."""
    from schemas.validate import validate_line

    out = []
    for row in rows:
        row = dict(row)
        payload = row.pop("payload", "") or ""
        row["schema_problems"] = "; ".join(str(p) for p in validate_line(payload).problems)
        out.append(row)
    return out


@dataclass(frozen=True)
class Dataset:
    """What a suite validates: the rows of one named query, one row per thing to judge."""

    name: str
    query: str
    #: Columns of the dataframe (after ``derive``), so an empty result still has them.
    columns: tuple[str, ...]
    #: Columns that identify a row; GX reports them for each unexpected row (with ``row``).
    keys: tuple[str, ...]
    #: Query parameters beyond from/to (see :func:`query_parameters`).
    parameters: tuple[str, ...] = ()
    #: Run once per customer (the query reads customer-scoped views); rows are concatenated.
    per_customer: bool = False
    derive: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "raw_events",
            "check_raw_events",
            (
                "event_id",
                "customer_id",
                "event_type",
                "event_time",
                "received_at",
                "future_skew_ms",
                "quantity",
                "schema_version",
                "kafka_partition",
                "kafka_offset",
                "status",
                "dead_letter_reason",
                "non_negative_required",
                "negative_refused",
                "schema_problems",
            ),
            ("customer_id", "event_id", "kafka_partition", "kafka_offset"),
            ("sample", "non_negative_types"),
            derive=_schema_problems,
        ),
        Dataset(
            "raw_duplicates",
            "check_raw_duplicates",
            ("customer_id", "event_id", "raw_records", "job_seen", "job_variants"),
            ("customer_id", "event_id"),
            ("sample",),
        ),
        Dataset(
            "rollups",
            "check_rollups",
            (
                "level",
                "customer_id",
                "meter",
                "group_key",
                "aggregation",
                "bucket",
                "minutes_value",
                "rollup_value",
                "minutes_events",
                "rollup_events",
            ),
            ("level", "customer_id", "meter", "group_key", "bucket"),
            per_customer=True,
        ),
        Dataset(
            "finals",
            "check_finals",
            (
                "customer_id",
                "meter",
                "group_key",
                "aggregation",
                "period_start",
                "period_end",
                "revision",
                "finalized_at_watermark",
                "final_value",
                "segments_value",
                "final_events",
                "segments_events",
                "minutes",
            ),
            ("customer_id", "meter", "group_key", "period_start"),
            ("sample",),
        ),
        Dataset(
            "recompute",
            "check_recompute",
            (
                "customer_id",
                "meter",
                "group_key",
                "aggregation",
                "minute",
                "stored_value",
                "recomputed_value",
                "stored_events",
                "recomputed_events",
                "value_comparable",
                "corrections",
            ),
            ("customer_id", "meter", "group_key", "minute"),
            ("sample", "meter_names", "meter_types", "meter_aggregations", "meter_values", "meter_dims"),
        ),
        Dataset(
            "operations",
            "check_operations",
            (
                "range_start",
                "range_end",
                "records",
                "dead_lettered",
                "dead_letter_rate",
                "counted_events",
                "corrected_events",
                "correction_rate",
            ),
            ("range_start", "range_end"),
        ),
    )
}


# --- suite files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """One GX suite of a group file: its dataset and its GX-native document."""

    group: str
    name: str
    dataset: Dataset
    document: dict[str, Any]

    @property
    def description(self) -> str:
        return str(self.document.get("meta", {}).get("description", ""))


@dataclass(frozen=True)
class SuiteGroup:
    """One suite file (``clickhouse/expectations/<name>.json``): a ``--suite`` name."""

    name: str
    description: str
    parameters: dict[str, Any]
    suites: tuple[Suite, ...]


def load_groups(directory: Path = SUITES_DIR) -> dict[str, SuiteGroup]:
    """Every suite group in ``directory``, checked for the datasets and shape they name."""
    groups: dict[str, SuiteGroup] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise QualityError(f"{path}: not valid JSON: {exc}") from None
        name = str(doc.get("group") or path.stem)
        suites = []
        for entry in doc.get("suites", []):
            dataset_name = entry.get("meta", {}).get("dataset")
            if dataset_name not in DATASETS:
                raise QualityError(f"{path}: suite {entry.get('name')!r} names unknown dataset {dataset_name!r}")
            if not str(entry.get("name", "")).startswith(f"{name}."):
                raise QualityError(f"{path}: suite names must start with '{name}.', got {entry.get('name')!r}")
            suites.append(Suite(name, entry["name"], DATASETS[dataset_name], entry))
        groups[name] = SuiteGroup(name, str(doc.get("description", "")), dict(doc.get("parameters") or {}), tuple(suites))
    order = {name: index for index, name in enumerate(GROUP_ORDER)}
    return {name: groups[name] for name in sorted(groups, key=lambda n: (order.get(n, len(order)), n))}


def select_suites(groups: Mapping[str, SuiteGroup], names: Sequence[str]) -> list[Suite]:
    """The suites a ``--suite`` list names (a group, or one suite as ``group.suite``); all when empty."""
    everything = [s for g in groups.values() for s in g.suites]
    if not names:
        return everything
    chosen: list[Suite] = []
    for name in names:
        matches = list(groups[name].suites) if name in groups else [s for s in everything if s.name == name]
        if not matches:
            known = ", ".join([*groups, *(s.name for s in everything)])
            raise QualityError(f"--suite={name!r}: no such suite (have: {known})")
        chosen += [s for s in matches if s not in chosen]
    return chosen


# --- parameters ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOptions:
    """What to check: suites (empty = all), event-time range, customer sample, parameter overrides, docs."""

    suites: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    #: Fraction of customers (by a hash of the id) the raw-event and aggregate suites cover; 1 = all.
    sample: float = 1.0
    overrides: Mapping[str, float] = field(default_factory=dict)
    #: Where the GX file context, validation results and Data Docs live; None = no Data Docs.
    docs_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.sample <= 1:
            raise QualityError(f"--sample={self.sample}: must be a fraction in (0, 1]")
        for option, moment in (("--from", self.start), ("--to", self.end)):
            if moment is not None and moment.tzinfo is None:
                raise QualityError(f"{option}: give a time zone (e.g. 2026-03-01T00:00:00Z)")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise QualityError(f"--from ({plain(self.start)}) must be before --to ({plain(self.end)})")


def parse_override(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` of ``--set`` (a number)."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise QualityError(f"--set {text!r}: use NAME=NUMBER, e.g. --set max_dead_letter_rate=0.05") from None


def _ch_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def query_parameters(config: CheckedConfig, options: CheckOptions) -> dict[str, Any]:
    """Every parameter the check queries take, from the configuration and the options."""
    meters = config.meters
    return {
        "from": _ch_time(options.start or EARLIEST),
        "to": _ch_time(options.end or LATEST),
        "sample": options.sample,
        # Event types whose quantity must not be negative: a meter refuses a negative value and reads the
        # quantity (or is a count, which refuses a negative quantity too).
        "non_negative_types": sorted(
            {
                m.event_type
                for m in meters
                if not m.allow_negative
                and (m.aggregation.value == "count" or (m.value_property is None and m.aggregation.needs_numeric_value))
            }
        ),
        "meter_names": [m.name for m in meters],
        "meter_types": [m.event_type for m in meters],
        "meter_aggregations": [m.aggregation.value for m in meters],
        "meter_values": [m.value_property or "" for m in meters],
        "meter_dims": [list(m.group_by) for m in meters],
    }


def suite_parameters(config: CheckedConfig, groups: Iterable[SuiteGroup], overrides: Mapping[str, float]) -> dict[str, Any]:
    """Values for ``$PARAMETER`` references: group defaults < configuration < ``--set``."""
    values: dict[str, Any] = {}
    for group in groups:
        values.update(group.parameters)
    values["allowed_future_skew_ms"] = int(config.pipeline.allowed_future_skew / timedelta(milliseconds=1))
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise QualityError(f"--set {', '.join(unknown)}: unknown parameter (have: {', '.join(sorted(values))})")
    values.update(overrides)
    return values


# --- reading ------------------------------------------------------------------------------------------


def _run(reader: Reader, query: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        return reader.run(query, parameters)
    except (StorageError, QueryError):
        raise
    except Exception as exc:  # the database refused the query: name it (an unmigrated database is the usual cause)
        raise StorageError(
            f"check query {query} failed: {type(exc).__name__}: {str(exc)[:600]}\n"
            "  fix: run `metering migrate` if the database is behind clickhouse/migrations"
        ) from None


def read_dataset(reader: Reader, dataset: Dataset, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset's rows (per customer for customer-scoped ones), derived columns added, ``row`` numbered."""
    base = {"from": parameters["from"], "to": parameters["to"]}
    if dataset.per_customer:
        customers = _run(reader, "check_customers", {**base, "sample": parameters["sample"]})
        rows = [r for c in customers for r in _run(reader, dataset.query, {**base, "customer": c["customer_id"]})]
    else:
        rows = _run(reader, dataset.query, {**base, **{name: parameters[name] for name in dataset.parameters}})
    if dataset.derive is not None:
        rows = dataset.derive(rows)
    if rows and list(rows[0]) != list(dataset.columns):
        raise QualityError(
            f"query {dataset.query} returned columns {list(rows[0])}, "
            f"the dataset {dataset.name!r} expects {list(dataset.columns)}"
        )
    return [{**row, ROW: index} for index, row in enumerate(rows)]


# --- results ------------------------------------------------------------------------------------------


@dataclass
class ExpectationOutcome:
    """One expectation's result: what it checks, whether it held, and examples of rows that broke it."""

    expectation: str
    columns: tuple[str, ...]
    description: str
    success: bool
    checked: int = 0
    unexpected: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    observed: Any = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.expectation}({', '.join(self.columns)})"


@dataclass
class SuiteOutcome:
    name: str
    dataset: str
    rows: int
    expectations: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(e.success for e in self.expectations)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]


@dataclass
class CheckReport:
    """The outcome of one ``metering check`` run."""

    start: datetime | None
    end: datetime | None
    sample: float
    parameters: dict[str, Any]
    suites: list[SuiteOutcome]
    data_docs: str | None = None

    @property
    def success(self) -> bool:
        return all(s.success for s in self.suites)

    def as_dict(self) -> dict[str, Any]:
        failed = [f"{s.name}: {e.label}" for s in self.suites for e in s.failed]
        return {
            "success": self.success,
            "from": plain(self.start) if self.start else None,
            "to": plain(self.end) if self.end else None,
            "sample": self.sample,
            "parameters": self.parameters,
            "failed": failed,
            "suites": [
                {
                    "name": s.name,
                    "dataset": s.dataset,
                    "rows": s.rows,
                    "success": s.success,
                    "expectations": [
                        {
                            "expectation": e.expectation,
                            "columns": list(e.columns),
                            "description": e.description,
                            "success": e.success,
                            "checked": e.checked,
                            "unexpected": e.unexpected,
                            "observed": e.observed,
                            "examples": e.examples,
                            "error": e.error,
                        }
                        for e in s.expectations
                    ],
                }
                for s in self.suites
            ],
            "data_docs": self.data_docs,
        }


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return plain(value)


def _columns_of(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    if "column" in kwargs:
        return (str(kwargs["column"]),)
    if "column_A" in kwargs:
        return (str(kwargs["column_A"]), str(kwargs["column_B"]))
    return tuple(str(c) for c in kwargs.get("column_list", ()))


def outcome_of(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> ExpectationOutcome:
    """An :class:`ExpectationOutcome` from one GX expectation result (its JSON form) and the dataset's rows."""
    expectation = result["expectation_config"]
    kwargs = expectation.get("kwargs", {})
    details = result.get("result") or {}
    error = None
    exception = result.get("exception_info") or {}
    if exception.get("raised_exception"):
        error = str(exception.get("exception_message") or "the expectation raised an exception")
    examples = []
    for index in (details.get("partial_unexpected_index_list") or [])[:EXAMPLES]:
        position = index.get(ROW) if isinstance(index, Mapping) else None
        if isinstance(position, int) and 0 <= position < len(rows):
            examples.append({k: _cell(v) for k, v in rows[position].items() if k != ROW})
    return ExpectationOutcome(
        expectation=str(expectation["type"]),
        columns=_columns_of(kwargs),
        description=str(expectation.get("description") or expectation.get("meta", {}).get("description") or ""),
        success=bool(result.get("success")) and error is None,
        checked=int(details.get("element_count") or 0),
        unexpected=int(details.get("unexpected_count") or 0),
        examples=examples,
        observed=_cell(details.get("observed_value")) if "observed_value" in details else None,
        error=error,
    )


# --- running ------------------------------------------------------------------------------------------


def _context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context: Any
    if docs_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.variables.save()
    return context


def run_checks(
    reader: Reader, config: CheckedConfig, options: CheckOptions, *, groups: Mapping[str, SuiteGroup] | None = None
) -> CheckReport:
    """Run the selected suites against the storage behind ``reader``; Data Docs under ``options.docs_dir``."""
    groups = load_groups() if groups is None else groups
    suites = select_suites(groups, options.suites)
    parameters = suite_parameters(config, groups.values(), options.overrides)
    query_params = query_parameters(config, options)

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GX's own deprecation and pandas warnings are not the user's concern
        import great_expectations as gx
        from great_expectations.core.expectation_suite import ExpectationSuite

        context = _context(options.docs_dir)
        source = context.data_sources.add_or_update_pandas(name="metering")
        outcomes: list[SuiteOutcome] = []
        cache: dict[str, list[dict[str, Any]]] = {}
        for suite in suites:
            if suite.dataset.name not in cache:
                cache[suite.dataset.name] = read_dataset(reader, suite.dataset, query_params)
            rows = cache[suite.dataset.name]
            frame = pd.DataFrame(rows, columns=[*suite.dataset.columns, ROW], dtype=object)
            asset = source.add_dataframe_asset(name=suite.name)
            batch = asset.add_batch_definition_whole_dataframe("whole dataframe")
            gx_suite = context.suites.add_or_update(ExpectationSuite(**suite.document))
            definition = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
            )
            checkpoint = context.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=f"metering.{suite.name}",
                    validation_definitions=[definition],
                    result_format={
                        "result_format": "SUMMARY",
                        "unexpected_index_column_names": [ROW, *suite.dataset.keys],
                        "partial_unexpected_count": 20,
                    },
                )
            )
            result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters)
            expectations = [
                outcome_of(r.to_json_dict(), rows) for validation in result.run_results.values() for r in validation.results
            ]
            outcomes.append(SuiteOutcome(suite.name, suite.dataset.name, len(rows), expectations))
            log.info("%s: %d rows, %s", suite.name, len(rows), "ok" if outcomes[-1].success else "FAILED")
        docs = None
        if options.docs_dir is not None:
            context.build_data_docs()
            docs = next((site["site_url"] for site in context.get_docs_sites_urls() if site.get("site_url")), None)
    return CheckReport(options.start, options.end, options.sample, parameters, outcomes, docs)


# --- rendering ----------------------------------------------------------------------------------------


def _example_text(row: Mapping[str, Any], width: int = 300) -> str:
    text = " ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in row.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def render_text(report: CheckReport) -> str:
    """The summary for people: one line per suite, each failed expectation with an example offending row."""
    if report.start is None and report.end is None:
        span = "all events"
    else:
        start = plain(report.start) if report.start else "the beginning"
        span = f"events {start} .. {plain(report.end) if report.end else 'the end'}"
    sample = "" if report.sample >= 1 else f", {report.sample:.0%} of customers"
    lines = [f"metering check: {span}{sample}"]
    width = max((len(s.name) for s in report.suites), default=0)
    for suite in report.suites:
        total, failed = len(suite.expectations), len(suite.failed)
        verdict = "ok  " if suite.success else "FAIL"
        detail = f"{_count(total, 'expectation')} passed" if not failed else f"{failed} of {_count(total, 'expectation')} failed"
        lines.append(f"  [{verdict}] {suite.name.ljust(width)}  {_count(suite.rows, 'row'):>10}  {detail}")
        for e in suite.failed:
            lines.append(f"         FAILED {e.label}")
            if e.description:
                lines.append(f"                {e.description}")
            if e.error:
                lines.append(f"                error: {e.error}")
            elif e.examples:
                lines.append(
                    f"                {e.unexpected} of {e.checked} rows unexpected; e.g. {_example_text(e.examples[0])}"
                )
            elif e.observed is not None:
                lines.append(f"                observed {e.observed}")
    failed_total = sum(len(s.failed) for s in report.suites)
    expectations_total = sum(len(s.expectations) for s in report.suites)
    if report.success:
        lines.append(f"PASS: {_count(expectations_total, 'expectation')} in {_count(len(report.suites), 'suite')}")
    else:
        names = ", ".join(s.name for s in report.suites if not s.success)
        lines.append(f"FAIL: {failed_total} of {_count(expectations_total, 'expectation')} failed ({names})")
    if report.data_docs:
        lines.append(f"Data Docs: {report.data_docs}")
    return "\n".join(lines) + "\n"


def render_json(report: CheckReport) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str) + "\n"
