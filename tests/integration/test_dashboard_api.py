"""The dashboard's JSON API and page over real chDB, and reads through the chDB owner's gateway."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clickhouse.client import StorageError, StorageLockedError, StorageSettings, open_storage
from clickhouse.gateway import GatewayReader, QueryGateway, gateway_file, open_reader
from clickhouse.migrate import migrate
from clickhouse.queries import QueryError, StorageReader
from infra.settings import PROJECT_ROOT
from jobs.dashboard.app import create_app
from tests.integration.dashboard_data import seed

VENDOR = PROJECT_ROOT / "jobs" / "dashboard" / "static" / "vendor"


@pytest.fixture
def client(storage_settings: StorageSettings) -> Iterator[Any]:
    with open_storage(storage_settings) as storage:
        migrate(storage)
        seed(storage)
        yield create_app(StorageReader(storage), refresh_s=3, storage_label="test").test_client()


def test_customer_endpoints_require_a_customer(client: Any) -> None:
    for endpoint in ("usage", "periods", "finals", "series"):
        response = client.get(f"/api/{endpoint}")
        assert response.status_code == 400 and "customer is required" in response.json["error"], endpoint


def test_usage_finals_and_periods(client: Any) -> None:
    usage = client.get("/api/usage?customer=acme&meter=tokens").json
    assert usage["customer"] == "acme"
    [row] = usage["rows"]
    assert (row["total"], row["status"], row["group_by"]) == ("4", "provisional", {"model": "l"})
    finals = client.get("/api/finals?customer=acme").json["rows"]
    assert [(r["total"], r["revision"]) for r in finals] == [("15", 2)]
    periods = client.get("/api/periods?customer=acme&meter=tokens&from=2026-01-01&to=2026-03-15T00:00:00Z").json["rows"]
    assert [(r["period_start"], r["status"]) for r in periods] == [("2026-02-28T18:30:00.000Z", "final")]


def test_series_groups_points_per_meter_and_group_with_exact_values(client: Any) -> None:
    payload = client.get("/api/series?customer=acme&granularity=hour&from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z").json
    assert (payload["granularity"], payload["from"], payload["to"]) == (
        "hour",
        "2026-03-01T00:00:00.000Z",
        "2026-03-02T00:00:00.000Z",
    )
    lines = {(s["meter"], json.dumps(s["group_by"])): s for s in payload["series"]}
    assert lines[("tokens", '{"model": "l"}')]["points"] == [
        ["2026-03-01T10:00:00.000Z", "14", 4],
        ["2026-03-01T19:00:00.000Z", "1", 1],
    ]
    assert lines[("users", "{}")]["aggregation"] == "unique_count"
    # Without a range: the default span ends at the customer's newest minute (2026-04-02 08:00).
    default = client.get("/api/series?customer=acme&granularity=day").json
    assert default["to"] == "2026-04-02T09:00:00.000Z" and default["series"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("granularity=week", "--granularity='week'"),
        ("granularity=hour&from=yesterday", "from='yesterday'"),
        ("granularity=minute&from=2026-03-01&to=2026-03-09", "too long"),
        ("granularity=hour&from=2026-03-02&to=2026-03-01", "must be before"),
    ],
)
def test_bad_parameters_are_400_with_the_reason(client: Any, query: str, message: str) -> None:
    response = client.get(f"/api/series?customer=acme&{query}")
    assert response.status_code == 400 and message in response.json["error"]


def test_health_and_customers(client: Any) -> None:
    health = client.get("/api/health").json
    assert health["dead_letters"] == 3 and health["dead_letter_reasons"][0]["reason"] == "malformed_json"
    customers = client.get("/api/customers").json["customers"]
    assert "acme" in [c["customer_id"] for c in customers]
    assert client.get("/api/config").json["refresh_s"] == 3


def test_the_page_loads_its_scripts_locally_and_the_vendored_chart_is_the_locked_one(client: Any) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'data-refresh-s="3"' in page and "/static/vendor/chart.umd.min.js" in page
    assert "http://" not in page and "https://" not in page  # no CDN
    lock = json.loads((VENDOR / "vendor.lock.json").read_text())["chart.umd.min.js"]
    served = client.get("/static/vendor/chart.umd.min.js").get_data()
    assert hashlib.sha256(served).hexdigest() == lock["sha256"]
    assert served.startswith(f"/*!\n * Chart.js v{lock['version']}".encode())
    assert (VENDOR / "chart.js.LICENSE.md").read_text().startswith("The MIT License")
    app_js = client.get("/static/app.js").get_data(as_text=True)
    assert "http" not in app_js.replace("http.", "")


def test_the_gateway_serves_the_same_rows_as_the_storage(storage_settings: StorageSettings) -> None:
    with open_storage(storage_settings) as storage:
        migrate(storage)
        seed(storage)
        direct = StorageReader(storage)
        parameters = {"customer": "acme", "meter": "", "from": "2026-03-01 00:00:00.000", "to": "2026-03-02 00:00:00.000"}
        with QueryGateway(storage) as gateway:
            info = json.loads(gateway_file(storage_settings).read_text())
            assert info["url"] == gateway.url and info["database"] == storage_settings.database
            remote = GatewayReader(gateway.url)
            assert remote.run("series_hour", parameters) == direct.run("series_hour", parameters)
            with pytest.raises(QueryError, match="no query named"):
                remote.run("../migrations/0001_raw_events", {})
            with pytest.raises(StorageError, match="Cannot parse DateTime"):  # ClickHouse's refusal, passed on
                remote.run("series_hour", {**parameters, "from": "not a time"})
        assert not gateway_file(storage_settings).exists()


OWNER = """
import sys, time
from pathlib import Path
from clickhouse.client import StorageSettings, open_storage
from clickhouse.gateway import QueryGateway
from clickhouse.migrate import migrate
settings = StorageSettings(backend="chdb", path=Path(sys.argv[1]), database="owned")
with open_storage(settings) as storage:
    migrate(storage)
    storage.command("INSERT INTO dead_letters (reason, meter, customer_id, event_id, payload, source_partition, source_offset,"
                    " source_time) VALUES ('bad_quantity', '', '', '', '', 0, 1, now64(3))")
    gateway = QueryGateway(storage) if sys.argv[2] == "serve" else None
    if gateway:
        gateway.__enter__()
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("serve", [True, False])
def test_a_second_process_reads_through_the_owner(tmp_path: Path, serve: bool) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "chdb"), "serve" if serve else "hold"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        settings = StorageSettings(backend="chdb", path=tmp_path / "chdb", database="owned")
        if serve:
            with open_reader(settings) as reader:
                assert isinstance(reader, GatewayReader)
                assert reader.run("dead_letter_reasons", {})[0]["reason"] == "bad_quantity"
        else:
            with pytest.raises(StorageLockedError, match="serves no read gateway"), open_reader(settings):
                pass
    finally:
        owner.kill()
        owner.wait()
    time.sleep(0.2)
    with open_reader(StorageSettings(backend="chdb", path=tmp_path / "chdb", database="owned")) as reader:
        assert isinstance(reader, StorageReader)  # the owner is gone: direct again (a stale gateway file is ignored)
