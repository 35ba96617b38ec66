"""`metering check` on real chDB: a consistent dataset passes every suite; one corrupted aggregate row fails it.

The dataset is seeded table by table the way the job and the loader write it (jobs/loader/loader.py columns,
udfs/periods.py periods and local days, one on-time segment per minute with growing versions, a
late segment, a final per closed period, a correction for an event that arrived after its period was
final, dead letters, a duplicate), so the suites see what a pipeline run leaves behind, in a
fraction of the time. The corruption is the one a broken writer or a bad manual fix would leave: a
higher version of one minute segment with a wrong value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.gateway import QueryGateway
from clickhouse.migrate import migrate
from clickhouse.quality import DATASETS, CheckOptions, CheckReport, query_parameters, read_dataset, run_checks
from clickhouse.queries import StorageReader
from clickhouse.tables import COLUMNS
from infra.settings import PROJECT_ROOT
from jobs.config import Config, load_config
from udfs.meters import Aggregation
from udfs.periods import billing_period, epoch_millis, local_day

GRACE = timedelta(hours=48)
LOOSE = {"max_dead_letter_rate": 0.5, "max_correction_rate": 0.5}  # a tiny dataset has high rates


def t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Event:
    """One raw record as the loader stores it, and what the job did with it."""

    event_id: str
    customer_id: str
    event_type: str
    time: str
    quantity: str = "1"
    properties: dict[str, str] = field(default_factory=dict)
    received: str | None = None  # default: event time + 2 s
    refused: str = ""  # event-level dead-letter reason
    late_segment: bool = False  # late but within grace: its own 'late:<id>' segment
    after_final: bool = False  # arrived after its period was final: a correction

    @property
    def received_at(self) -> datetime:
        return t(self.received) if self.received else t(self.time) + timedelta(seconds=2)


EVENTS = [
    # acme (UTC): February is final, March provisional
    Event("a1", "acme", "api_call", "2026-02-10T10:00:05Z", properties={"user": "u1"}),
    Event("a2", "acme", "api_call", "2026-02-10T10:00:40Z", properties={"user": "u2"}),
    Event("a3", "acme", "api_call", "2026-02-10T11:30:00Z", properties={"user": "u1"}),
    Event("a4", "acme", "tokens", "2026-02-10T10:00:10Z", "100", {"model": "m1"}),
    Event("a5", "acme", "tokens", "2026-02-10T10:00:50Z", "23.5", {"model": "m1"}),
    Event("a6", "acme", "tokens", "2026-02-11T09:15:00Z", "7", {"model": "m2"}),
    Event("a7", "acme", "storage_snapshot", "2026-02-12T00:00:10Z", "1000"),
    Event("a8", "acme", "storage_snapshot", "2026-02-12T00:00:20Z", "2500"),
    Event("a9", "acme", "credits", "2026-02-12T08:00:00Z", "-5.25"),
    Event("a10", "acme", "tokens", "2026-03-02T08:01:00Z", "40", {"model": "m1"}),
    Event("a11", "acme", "api_call", "2026-03-02T08:01:30Z", properties={"user": "u3"}),
    Event("a12", "acme", "tokens", "2026-03-02T08:01:20Z", "2", {"model": "m1"}),
    Event("a10", "acme", "tokens", "2026-03-02T08:01:00Z", "40", {"model": "m1"}, received="2026-03-02T08:01:09Z"),  # retry
    Event("a13", "acme", "tokens", "2026-03-02T09:00:00Z", "-3", {"model": "m1"}),  # tokens refuses: negative_value
    Event("a14", "acme", "teleport", "2026-03-02T09:10:00Z", refused="unknown_meter"),
    Event(
        "a15",
        "acme",
        "tokens",
        "2026-03-05T00:00:00Z",
        "9",
        {"model": "m1"},
        received="2026-03-02T10:00:00Z",
        refused="future_timestamp",
    ),
    Event(
        "a16",
        "acme",
        "api_call",
        "2026-03-02T08:01:45Z",
        properties={"user": "u1"},
        received="2026-03-02T09:30:00Z",
        late_segment=True,
    ),
    Event(
        "a17", "acme", "tokens", "2026-02-20T12:00:30Z", "11", {"model": "m2"}, received="2026-03-04T10:00:00Z", after_final=True
    ),
    # globex (Europe/Berlin): its February period ends 2026-02-28T23:00Z, local days start at 23:00Z
    Event("g1", "globex", "api_call", "2026-02-28T23:30:00Z", properties={"user": "x"}),
    Event("g2", "globex", "tokens", "2026-02-15T12:00:00Z", "5", {"model": "m1"}),
    Event("g3", "globex", "tokens", "2026-03-01T10:00:00Z", "6", {"model": "m1"}),
    Event("g4", "globex", "tokens", "2026-03-01T10:00:30Z", "0.25", {"model": "m1"}),
]


def write_config(path: Path, settings: StorageSettings) -> Path:
    document = {
        "storage": {"backend": "chdb", "path": str(settings.path), "database": settings.database},
        "pipeline": {"allowed_future_skew": "5m"},
        "billing": {
            "default": {"period": "month", "timezone": "UTC", "grace": "48h"},
            "customers": {"globex": {"timezone": "Europe/Berlin"}},
        },
        "meters": [
            {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
            {"name": "active_users", "event_type": "api_call", "aggregation": "unique_count", "value": "properties.user"},
            {"name": "tokens", "event_type": "tokens", "aggregation": "sum", "group_by": ["model"]},
            {"name": "storage_peak_bytes", "event_type": "storage_snapshot", "aggregation": "max"},
            {"name": "credits", "event_type": "credits", "aggregation": "sum", "allow_negative": True},
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _partial(aggregation: Aggregation, values: list[tuple[Event, Decimal | str]]) -> dict[str, Any]:
    """The value columns of a segment (or final) combining some events, as the job writes them."""
    numbers = [v for _, v in values if isinstance(v, Decimal)]
    total = sum(numbers, Decimal(0))
    distinct = sorted({str(v) for _, v in values}) if aggregation is Aggregation.UNIQUE_COUNT else []
    value = {
        Aggregation.SUM: total,
        Aggregation.COUNT: Decimal(len(values)),
        Aggregation.MAX: max(numbers, default=None),
        Aggregation.UNIQUE_COUNT: Decimal(len(distinct)),
    }[aggregation]
    return {
        "value": value,
        "event_count": len(values),
        "sum_value": total if aggregation is Aggregation.SUM else Decimal(0),
        "max_value": value if aggregation is Aggregation.MAX else None,
        "min_value": None,
        "distinct_values": distinct,
        "latest_ms": None,
        "latest_value": None,
    }


def seed(storage: Storage, config: Config) -> None:
    """Write what a pipeline run over EVENTS leaves in ClickHouse."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    offsets = {"acme": 0, "globex": 0}
    seen: dict[tuple[str, str], int] = defaultdict(int)
    # (customer, meter, group_key, minute) -> on-time and late contributions
    on_time: dict[tuple[str, str, str, datetime], list[tuple[Event, Any]]] = defaultdict(list)
    late: list[tuple[tuple[str, str, str, datetime], Event, Any]] = []
    for event in sorted(EVENTS, key=lambda e: e.received_at):  # Kafka order: a customer's records share a partition
        partition = 0 if event.customer_id == "acme" else 1
        offset = offsets[event.customer_id] = offsets[event.customer_id] + 1
        received = event.received_at
        payload = {
            "event_id": event.event_id,
            "customer_id": event.customer_id,
            "event_type": event.event_type,
            "timestamp": event.time,
            "quantity": event.quantity,
            "properties": event.properties,
        }
        rows["raw_events"].append(
            {
                "event_id": event.event_id,
                "customer_id": event.customer_id,
                "event_type": event.event_type,
                "event_time": t(event.time),
                "quantity": Decimal(event.quantity),
                "properties": event.properties,
                "resource": "",
                "user_id": "",
                "region": "",
                "source": "",
                "schema_version": 1,
                "status": "received",
                "kafka_topic": "usage-events",
                "kafka_partition": partition,
                "kafka_offset": offset,
                "received_at": received,
                "payload": json.dumps(payload),
            }
        )
        dead_letter = {
            "meter": "",
            "customer_id": event.customer_id,
            "event_id": event.event_id,
            "payload": json.dumps(payload),
            "payload_size": len(json.dumps(payload)),
            "source_partition": partition,
            "source_offset": offset,
            "source_time": received,
        }
        if event.refused:
            rows["dead_letters"].append({"reason": event.refused, **dead_letter})
            continue
        seen[(event.customer_id, event.event_id)] += 1
        if seen[(event.customer_id, event.event_id)] > 1:
            continue  # dropped by dedup
        minute = t(event.time).replace(second=0, microsecond=0)
        for definition in config.meters_for(event.event_type):
            quantity = Decimal(event.quantity)
            if quantity < 0 and not definition.allow_negative:
                rows["dead_letters"].append({"reason": "negative_value", **dead_letter, "meter": definition.name})
                continue
            value: Any = event.properties[definition.value_property] if definition.value_property else quantity
            group_key = json.dumps({d: event.properties.get(d, "") for d in definition.group_by}, separators=(",", ":"))
            key = (event.customer_id, definition.name, group_key, minute)
            if event.late_segment or event.after_final:
                late.append((key, event, value))
            else:
                on_time[key].append((event, value))
    rows["dead_letters"].append(
        {
            "reason": "malformed_json",
            "meter": "",
            "customer_id": "",
            "event_id": "",
            "payload": "{oops",
            "payload_size": 5,
            "source_partition": 0,
            "source_offset": 99,
            "source_time": t("2026-03-02T09:20:00Z"),
        }
    )
    rows["duplicates"].append(
        {"customer_id": "acme", "event_id": "a10", "seen": 2, "variants": 1, "last_seen": t("2026-03-02T08:01:09Z")}
    )

    aggregation_of = {m.name: m.aggregation for m in config.meters}

    def placement(customer: str, minute: datetime) -> dict[str, Any]:
        cycle = config.billing.policy_for(customer).cycle
        period = billing_period(minute, cycle)
        return {"day_start": local_day(minute, cycle.timezone).start, "period_start": period.start, "period_end": period.end}

    periods: dict[tuple[str, str, str, datetime], list[tuple[Event, Any]]] = defaultdict(list)
    for (customer, meter, group_key, minute), values in on_time.items():
        base = {
            "customer_id": customer,
            "meter": meter,
            "group_key": group_key,
            "aggregation": aggregation_of[meter].value,
            "minute": minute,
            **placement(customer, minute),
            "segment": "on_time",
        }
        for step in range(1, len(values) + 1):  # the CUMULATE steps: one version per step, the latest counts
            version = epoch_millis(minute) + 10_000 * step if step < len(values) else epoch_millis(minute) + 60_000
            rows["aggregate_segments"].append({**base, "version": version, **_partial(aggregation_of[meter], values[:step])})
        periods[(customer, meter, group_key, base["period_start"])] += values
    for (customer, meter, group_key, minute), event, value in late:
        where = placement(customer, minute)
        common = {"customer_id": customer, "meter": meter, "group_key": group_key, "aggregation": aggregation_of[meter].value}
        partial = _partial(aggregation_of[meter], [(event, value)])
        if event.after_final:
            rows["corrections"].append(
                {
                    **common,
                    "period_start": where["period_start"],
                    "period_end": where["period_end"],
                    "minute": minute,
                    "sign": 1,
                    "value": partial["value"],
                    "event_count": 1,
                    "event_id": event.event_id,
                    "kafka_partition": 0,
                    "kafka_offset": len(rows["corrections"]),
                }
            )
        else:
            rows["aggregate_segments"].append(
                {**common, "minute": minute, **where, "segment": f"late:{event.event_id}", "version": 1, **partial}
            )
            periods[(customer, meter, group_key, where["period_start"])].append((event, value))
    for (customer, meter, group_key, period_start), values in periods.items():
        period = billing_period(period_start, config.billing.policy_for(customer).cycle)
        if period.end + GRACE <= t("2026-03-03T00:00:00Z"):  # the watermark passed February's end + grace
            partial = _partial(aggregation_of[meter], values)
            rows["period_finals"].append(
                {
                    "customer_id": customer,
                    "meter": meter,
                    "group_key": group_key,
                    "aggregation": aggregation_of[meter].value,
                    "period_start": period.start,
                    "period_end": period.end,
                    "value": partial["value"],
                    "event_count": partial["event_count"],
                    "finalized_at_watermark": period.end + GRACE,
                }
            )
    for table, table_rows in rows.items():
        columns = COLUMNS[table]
        storage.client.insert(table, [[r[c] for c in columns] for r in table_rows], column_names=columns)


def corrupt(storage: Storage) -> None:
    """A higher version of acme's tokens{model=m1} segment of 2026-02-10 10:00 with a wrong value (999 instead of 123.5)."""
    storage.command(
        "INSERT INTO aggregate_segments SELECT * REPLACE (version + 1 AS version, toDecimal128('999', 9) AS value, "
        "toDecimal128('999', 9) AS sum_value) FROM aggregate_segments FINAL "
        "WHERE customer_id = 'acme' AND meter = 'tokens' AND minute = '2026-02-10 10:00:00' AND segment = 'on_time'"
    )


@pytest.fixture
def seeded(storage_settings: StorageSettings, tmp_path: Path) -> Iterator[tuple[Storage, Config, Path]]:
    config_path = write_config(tmp_path / "metering.yaml", storage_settings)
    config = load_config(config_path, env={})
    with open_storage(storage_settings) as storage:
        migrate(storage)
        seed(storage, config)
        yield storage, config, config_path


def failures(report: CheckReport) -> dict[str, list[str]]:
    return {s.name: [e.label for e in s.failed] for s in report.suites if not s.success}


def test_a_consistent_dataset_passes_every_suite(seeded: tuple[Storage, Config, Path], tmp_path: Path) -> None:
    storage, config, _ = seeded
    report = run_checks(StorageReader(storage), config, CheckOptions(overrides=LOOSE, docs_dir=tmp_path / "docs"))
    assert failures(report) == {}
    rows = {s.name: s.rows for s in report.suites}
    assert rows["raw_events.events"] == len(EVENTS)
    assert rows["raw_events.dedup"] == 1  # a10, sent twice
    assert rows["aggregates.finals"] >= 6 and rows["aggregates.recompute"] >= 12 and rows["aggregates.rollups"] > 20
    assert report.data_docs and Path(report.data_docs.removeprefix("file://")).exists()
    # The thresholds are real: with the default ones this tiny dataset's refusal rate is too high.
    strict = run_checks(StorageReader(storage), config, CheckOptions(suites=("operations",)))
    assert failures(strict) == {
        "operations.rates": [
            "expect_column_values_to_be_between(dead_letter_rate)",
            "expect_column_values_to_be_between(correction_rate)",
        ]
    }


def test_datasets_classify_records_and_sample_whole_customers(seeded: tuple[Storage, Config, Path]) -> None:
    storage, config, _ = seeded
    reader = StorageReader(storage)
    raw = read_dataset(reader, DATASETS["raw_events"], query_parameters(config, CheckOptions()))
    status = {(r["event_id"], r["kafka_offset"]): r["status"] for r in raw}
    assert sorted(k[0] for k, v in status.items() if v == "dead_letter") == ["a14", "a15"]
    assert [v for k, v in sorted(status.items()) if k[0] == "a10"] == ["accepted", "duplicate"]  # first in Kafka order wins
    assert sum(v == "accepted" for v in status.values()) == len(EVENTS) - 3
    assert {r["event_id"]: r["negative_refused"] for r in raw if r["quantity"] < 0} == {"a9": 0, "a13": 1}
    assert all(r["schema_problems"] == "" for r in raw) and "payload" not in raw[0]
    # Every sampled dataset covers the same whole customers (cityHash64 % 10000: acme 2270, globex 5197).
    for sample, expected in ((0.1, set()), (0.3, {"acme"}), (0.7, {"acme", "globex"})):
        params = query_parameters(config, CheckOptions(sample=sample))
        chosen = {c["customer_id"] for c in reader.run("check_customers", {**params, "sample": sample})}
        assert chosen == expected
        for name in ("raw_events", "raw_duplicates", "finals", "recompute"):
            assert {r["customer_id"] for r in read_dataset(reader, DATASETS[name], params)} <= chosen, (name, sample)
        assert {r["customer_id"] for r in read_dataset(reader, DATASETS["recompute"], params)} == chosen


def test_a_corrupted_aggregate_row_fails_the_check_and_is_named(seeded: tuple[Storage, Config, Path], tmp_path: Path) -> None:
    storage, config, config_path = seeded
    corrupt(storage)
    report = run_checks(StorageReader(storage), config, CheckOptions(suites=("aggregates",)))
    assert failures(report) == {
        "aggregates.finals": ["expect_column_pair_values_to_be_equal(final_value, segments_value)"],
        "aggregates.recompute": ["expect_column_pair_values_to_be_equal(stored_value, recomputed_value)"],
    }
    (recompute,) = [e for s in report.suites for e in s.failed if s.name == "aggregates.recompute"]
    assert recompute.unexpected == 1
    assert {
        k: recompute.examples[0][k] for k in ("customer_id", "meter", "group_key", "minute", "stored_value", "recomputed_value")
    } == {
        "customer_id": "acme",
        "meter": "tokens",
        "group_key": '{"model":"m1"}',
        "minute": "2026-02-10T10:00:00.000Z",
        "stored_value": "999",
        "recomputed_value": "123.5",
    }

    # The command line, in another process: the chDB directory is owned here, so it reads through the gateway.
    with QueryGateway(storage):
        command = [
            sys.executable,
            "-m",
            "jobs.cli",
            "check",
            "--config",
            str(config_path),
            "--docs-dir",
            str(tmp_path / "docs"),
            *[a for k, v in LOOSE.items() for a in ("--set", f"{k}={v}")],
        ]
        text = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False)
        as_json = subprocess.run(
            [*command, "--suite", "aggregates.recompute", "--format", "json", "--no-docs"],
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            timeout=120,
            check=False,
        )
    print(text.stdout)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "[FAIL] aggregates.recompute" in text.stdout and "[ok  ] raw_events.events" in text.stdout
    assert "FAILED expect_column_pair_values_to_be_equal(stored_value, recomputed_value)" in text.stdout
    assert (
        'customer_id=acme meter=tokens group_key={"model":"m1"} aggregation=sum minute=2026-02-10T10:00:00.000Z '
        "stored_value=999 recomputed_value=123.5"
    ) in text.stdout
    assert "Data Docs: file://" in text.stdout
    assert as_json.returncode == 1, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["success"] is False
    assert answer["failed"] == ["aggregates.recompute: expect_column_pair_values_to_be_equal(stored_value, recomputed_value)"]
    assert answer["data_docs"] is None
