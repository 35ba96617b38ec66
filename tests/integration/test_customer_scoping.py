"""Every customer-scoped question returns one customer's rows, with the right values (chDB, migrated).

The values are computed by hand from tests/integration/dashboard_data.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from clickhouse import queries
from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import Scope, StorageReader
from tests.integration.dashboard_data import LOOKALIKES, seed

WIDE = {"start": datetime(2026, 1, 1, tzinfo=UTC), "end": datetime(2026, 5, 1, tzinfo=UTC)}


@pytest.fixture
def reader(storage_settings: StorageSettings) -> Iterator[StorageReader]:
    with open_storage(storage_settings) as storage:
        migrate(storage)
        seed(storage)
        yield StorageReader(storage)


def everything(reader: StorageReader, customer: str) -> dict[str, list[dict[str, Any]]]:
    """Every customer-scoped question for one customer (the hour series over 40 days, the maximum is 62)."""
    hour_range = {"start": datetime(2026, 2, 25, tzinfo=UTC), "end": datetime(2026, 4, 5, tzinfo=UTC)}
    minute_range = {"start": datetime(2026, 3, 1, 9, tzinfo=UTC), "end": datetime(2026, 3, 2, 9, tzinfo=UTC)}
    return {
        "usage": queries.usage(reader, Scope(customer=customer, start=WIDE["start"])),
        "periods": queries.periods(reader, Scope(customer=customer, **WIDE)),
        "finals": queries.finals(reader, Scope(customer=customer)),
        "minute": queries.series(reader, Scope(customer=customer, granularity="minute", **minute_range)),
        "hour": queries.series(reader, Scope(customer=customer, granularity="hour", **hour_range)),
        "day": queries.series(reader, Scope(customer=customer, granularity="day", **WIDE)),
    }


def values(rows: list[dict[str, Any]], meter: str, key: str = "bucket") -> dict[str, str]:
    return {r[key]: r.get("value", r.get("total")) for r in rows if r["meter"] == meter}


def test_each_customer_sees_only_its_own_rows(reader: StorageReader) -> None:
    for index, customer in enumerate(["acme", *LOOKALIKES]):
        answers = everything(reader, customer)
        for question, rows in answers.items():
            assert rows or question == "finals", (customer, question)
            assert {r["customer_id"] for r in rows} <= {customer}, (customer, question)
        if customer != "acme":
            assert values(answers["day"], "tokens") == {"2026-02-28T18:30:00.000Z": str(100 + index - 1)}


@pytest.mark.parametrize("customer", ["%", "_", "x' OR '1'='1' --", "acm", "*"])
def test_a_customer_that_does_not_exist_sees_nothing(reader: StorageReader, customer: str) -> None:
    assert all(rows == [] for rows in everything(reader, customer).values())


def test_a_scoped_view_cannot_be_read_without_naming_the_customer(reader: StorageReader) -> None:
    for view in ("customer_usage", "customer_finals", "customer_series_hour", "customer_minutes"):
        with pytest.raises(Exception, match=r"(?i)substitution|empty list of columns|parameter"):
            reader.storage.query_rows(f"SELECT * FROM {view}")


def test_minutes_take_the_latest_version_of_each_segment_plus_late_segments(reader: StorageReader) -> None:
    rows = everything(reader, "acme")["minute"]
    assert values(rows, "tokens") == {
        "2026-03-01T10:01:00.000Z": "7",
        "2026-03-01T10:02:00.000Z": "7",
        "2026-03-01T19:00:00.000Z": "1",
    }


def test_hours_merge_minutes_by_aggregation(reader: StorageReader) -> None:
    rows = everything(reader, "acme")["hour"]
    assert values(rows, "tokens") == {
        "2026-03-01T10:00:00.000Z": "14",
        "2026-03-01T19:00:00.000Z": "1",
        "2026-04-02T08:00:00.000Z": "4",
    }
    assert values(rows, "users") == {"2026-03-01T10:00:00.000Z": "3"}  # {u1,u2} ∪ {u2,u3}, not 2 + 2
    assert values(rows, "peak") == {"2026-03-01T10:00:00.000Z": "4", "2026-03-01T11:00:00.000Z": "9"}
    counts = {r["bucket"]: r["event_count"] for r in rows if r["meter"] == "tokens"}
    assert counts["2026-03-01T10:00:00.000Z"] == 4  # version 2 (1) + late (1) + 10:02 (2)


def test_days_follow_the_customers_local_midnight(reader: StorageReader) -> None:
    rows = everything(reader, "acme")["day"]
    assert values(rows, "tokens") == {
        "2026-02-28T18:30:00.000Z": "14",
        "2026-03-01T18:30:00.000Z": "1",
        "2026-04-01T18:30:00.000Z": "4",
    }
    assert values(rows, "peak") == {"2026-02-28T18:30:00.000Z": "9"}
    assert values(rows, "users") == {"2026-02-28T18:30:00.000Z": "3"}


def test_periods_show_the_highest_final_revision_else_the_running_total(reader: StorageReader) -> None:
    rows = [r for r in everything(reader, "acme")["periods"] if r["meter"] == "tokens"]
    assert [(r["period_start"], r["total"], r["status"], r["revision"]) for r in rows] == [
        ("2026-02-28T18:30:00.000Z", "15", "final", 2),
        ("2026-03-31T18:30:00.000Z", "4", "provisional", 0),
    ]
    assert rows[1]["as_of_minute"] == "2026-04-02T08:00:00.000Z" and rows[1]["as_of_loaded"]


def test_usage_so_far_is_the_newest_period_per_meter(reader: StorageReader) -> None:
    rows = {r["meter"]: r for r in everything(reader, "acme")["usage"]}
    assert (rows["tokens"]["period_start"], rows["tokens"]["total"], rows["tokens"]["status"]) == (
        "2026-03-31T18:30:00.000Z",
        "4",
        "provisional",
    )
    assert (rows["users"]["total"], rows["peak"]["total"]) == ("3", "9")
    later = queries.usage(reader, Scope(customer="acme", start=datetime(2026, 4, 1, tzinfo=UTC)))
    assert [(r["meter"], r["total"]) for r in later] == [("tokens", "4")]  # only meters with usage since then
    assert queries.usage(reader, Scope(customer="acme", start=datetime(2026, 4, 3, tzinfo=UTC))) == []


def test_finals_are_invoice_ready_and_revised_once(reader: StorageReader) -> None:
    rows = everything(reader, "acme")["finals"]
    assert [(r["meter"], r["total"], r["revision"]) for r in rows] == [("tokens", "15", 2)]
    everyone = queries.finals(reader, Scope())
    assert {r["customer_id"] for r in everyone} == {"acme", "acme2"}


def test_health_counts_and_reasons(reader: StorageReader) -> None:
    health = queries.health(reader)
    assert health["dead_letters"] == 3 and health["customers"] == 1 + len(LOOKALIKES)
    assert health["loader_last_batch"] is None and health["loader_consumer_lag"] is None
    assert health["dead_letter_reasons"] == [
        {"reason": "malformed_json", "total": 3, "last_24h": 3, "newest": health["dead_letter_reasons"][0]["newest"]}
    ]
    assert [c["customer_id"] for c in queries.customers(reader)] == sorted(["acme", *LOOKALIKES])
