"""The dashboard's JSON API and page (jobs/dashboard/app.py) over real chDB, asked with an operator token.

Who may ask what (tokens, customers, hosts, headers) is tests/integration/test_dashboard_access.py.

Data: tests/integration/dashboard_data.py (customer ``acme`` in +05:30 and its look-alikes; the
expected values below are computed by hand from it), plus pipeline-health rows added here.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.gateway import GatewayReader
from clickhouse.migrate import migrate
from clickhouse.queries import StorageReader
from clickhouse.tables import COLUMNS
from infra.settings import PROJECT_ROOT
from schemas.validate import string_rule
from tests.integration.dashboard_data import LOOKALIKES, seed, simple_segment
from tests.integration.dashboard_tokens import make_client, make_token

STATIC = PROJECT_ROOT / "jobs" / "dashboard" / "static"
VENDOR = STATIC / "vendor"
L = {"model": "l"}
MARCH = ("2026-02-28T18:30:00.000Z", "2026-03-31T18:30:00.000Z")
APRIL = ("2026-03-31T18:30:00.000Z", "2026-04-30T18:30:00.000Z")
BIG = "29-digit-decimals"
BIG_VALUE = "12345678901234567890.123456789"  # fits Decimal(38, 9)
CUSTOMER_ENDPOINTS = ("usage", "periods", "finals", "series")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def seed_health(storage: Storage, now: datetime) -> None:
    """Rows for pipeline_health: raw events, duplicates, a correction, more dead letters, loader batches."""
    insert = storage.client.insert
    raw = [
        [
            f"e{i}",
            "acme",
            "tokens",
            now - timedelta(hours=1),
            Decimal(1),
            {},
            "",
            "",
            "",
            "",
            1,
            "accepted",
            "usage",
            0,
            i,
            now,
            "{}",
        ]
        for i in range(2)
    ]
    insert("raw_events", raw, column_names=COLUMNS["raw_events"])
    insert("raw_events", raw[:1], column_names=COLUMNS["raw_events"])  # a re-delivered batch: collapses
    insert("duplicates", [["acme", "e1", 2, 1, now], ["acme", "e2", 2, 2, now]], column_names=COLUMNS["duplicates"])
    insert("duplicates", [["acme", "e1", 3, 1, now]], column_names=COLUMNS["duplicates"])  # seen grows: the highest counts
    correction = [
        "acme",
        "tokens",
        '{"model":"l"}',
        "sum",
        *(datetime.fromisoformat(t) for t in MARCH),
        now,
        1,
        Decimal(1),
        1,
        "e7",
        0,
        7,
    ]
    insert("corrections", [correction], column_names=COLUMNS["corrections"])
    old = ["unknown_meter", "", "acme", "e9", "{}", 2, 1, 5, now - timedelta(days=3)]
    insert("dead_letters", [old], column_names=COLUMNS["dead_letters"])
    insert("dead_letters", [old], column_names=COLUMNS["dead_letters"])  # re-delivered: collapses
    batches = [
        ["loader-a", now - timedelta(seconds=120), 10, {"aggregate_segments": 10}, datetime(2026, 4, 2, 8, 0, 30, tzinfo=UTC), 7],
        ["loader-a", now - timedelta(seconds=60), 5, {"aggregate_segments": 5}, datetime(2026, 4, 2, 8, 1, tzinfo=UTC), 2],
    ]
    insert("loader_batches", batches, column_names=COLUMNS["loader_batches"])
    big = simple_segment(BIG, "tokens", "sum", "2026-03-01 10:01", BIG_VALUE)
    insert("aggregate_segments", [big], column_names=COLUMNS["aggregate_segments"])


@pytest.fixture(scope="module")
def storage(chdb_path: Path) -> Iterator[Storage]:
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_api_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as opened:
        migrate(opened)
        seed(opened)
        seed_health(opened, datetime.now(UTC).replace(microsecond=0))
        try:
            yield opened
        finally:
            opened.drop_database()


@pytest.fixture(scope="module")
def client(storage: Storage, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A test client sending an operator token on every request."""
    folder = tmp_path_factory.mktemp("access")
    client, store = make_client(StorageReader(storage), folder, refresh_s=3, storage_label="test storage")
    token, _ = make_token(store)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def ok(client: Any, path: str, **query: str) -> Any:
    response = client.get(path, query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.json


def refused(client: Any, path: str, status: int = 400, /, **query: str) -> str:
    response = client.get(path, query_string=query)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json" and list(response.json) == ["error", "reason"]
    message: str = response.json["error"]
    return message


# --- endpoints --------------------------------------------------------------------------------------


def test_config(client: Any) -> None:
    config = ok(client, "/api/config")
    assert config == {
        "refresh_s": 3,
        "granularities": ["minute", "hour", "day"],
        "storage": "test storage",
        "access": {"scope": "operator", "customer": None, "meters": None, "expires_at": config["access"]["expires_at"]},
    }


def test_customers_lists_everyone_with_usage_in_order(client: Any) -> None:
    customers = ok(client, "/api/customers")["customers"]
    assert [c["customer_id"] for c in customers] == sorted(["acme", *LOOKALIKES, BIG])
    assert customers[[c["customer_id"] for c in customers].index("acme")] == {
        "customer_id": "acme",
        "first_minute": "2026-03-01T10:01:00.000Z",
        "last_minute": "2026-04-02T08:00:00.000Z",
        "meters": ["peak", "tokens", "users"],
    }


def test_usage_is_the_newest_period_per_meter_and_group(client: Any) -> None:
    payload = ok(client, "/api/usage", customer="acme")
    assert list(payload) == ["customer", "rows"] and payload["customer"] == "acme"
    rows = payload["rows"]
    assert list(rows[0]) == [
        "customer_id",
        "meter",
        "aggregation",
        "period_start",
        "period_end",
        "total",
        "event_count",
        "status",
        "revision",
        "as_of_minute",
        "as_of_loaded",
        "group_by",
    ]
    fields = ("meter", "group_by", "aggregation", "period_start", "period_end", "total", "event_count", "status", "revision")
    assert [(*(r[f] for f in fields), r["as_of_minute"]) for r in rows] == [
        ("peak", {}, "max", *MARCH, "9", 2, "provisional", 0, "2026-03-01T11:00:00.000Z"),
        ("tokens", L, "sum", *APRIL, "4", 1, "provisional", 0, "2026-04-02T08:00:00.000Z"),
        ("users", {}, "unique_count", *MARCH, "3", 4, "provisional", 0, "2026-03-01T10:30:00.000Z"),
    ]
    assert all(RFC3339.match(r["as_of_loaded"]) and r["customer_id"] == "acme" for r in rows)
    tokens = ok(client, "/api/usage", customer="acme", meter="tokens")["rows"]
    assert [r["meter"] for r in tokens] == ["tokens"]
    assert ok(client, "/api/usage", customer="acme", **{"from": "2026-04-03T00:00:00Z"})["rows"] == []


VALID_LOOKALIKES = [i for i, c in enumerate(LOOKALIKES) if string_rule("customer_id").problem(c) is None]
INVALID_LOOKALIKES = [i for i in range(len(LOOKALIKES)) if i not in VALID_LOOKALIKES]


@pytest.mark.parametrize("index", VALID_LOOKALIKES, ids=[repr(LOOKALIKES[i]) for i in VALID_LOOKALIKES])
def test_a_lookalike_customer_in_the_query_string_gets_its_own_rows(client: Any, index: int) -> None:
    customer = LOOKALIKES[index]
    payload = ok(client, "/api/usage", customer=customer)
    assert payload["customer"] == customer
    expected_status = ("final", 1) if customer == "acme2" else ("provisional", 0)
    expected_total = "100" if customer == "acme2" else str(100 + index)
    assert [(r["customer_id"], r["total"], r["status"], r["revision"]) for r in payload["rows"]] == [
        (customer, expected_total, *expected_status)
    ]
    series = ok(client, "/api/series", customer=customer, granularity="minute", **{"from": "2026-03-01", "to": "2026-03-02"})
    assert [line["points"] for line in series["series"]] == [[["2026-03-01T10:01:00.000Z", str(100 + index), 1]]]


@pytest.mark.parametrize("index", INVALID_LOOKALIKES, ids=[repr(LOOKALIKES[i]) for i in INVALID_LOOKALIKES])
@pytest.mark.parametrize("endpoint", CUSTOMER_ENDPOINTS)
def test_a_customer_id_the_schema_refuses_is_400_even_for_the_operator(client: Any, index: int, endpoint: str) -> None:
    """No event can carry such an id (quotes, %, spaces: SQL or LIKE bait), so no question about it is asked."""
    message = refused(client, f"/api/{endpoint}", customer=LOOKALIKES[index])
    assert "not a customer id" in message


def test_periods_in_a_range(client: Any) -> None:
    rows = ok(client, "/api/periods", customer="acme", meter="tokens")["rows"]
    assert [(r["period_start"], r["total"], r["event_count"], r["status"], r["revision"], r["group_by"]) for r in rows] == [
        (MARCH[0], "15", 4, "final", 2, L),  # the highest revision
        (APRIL[0], "4", 1, "provisional", 0, L),
    ]
    march = ok(client, "/api/periods", customer="acme", meter="tokens", **{"from": "2026-01-01", "to": "2026-03-15T00:00:00Z"})
    assert [(r["period_start"], r["status"]) for r in march["rows"]] == [(MARCH[0], "final")]


def test_finals(client: Any) -> None:
    rows = ok(client, "/api/finals", customer="acme")["rows"]
    assert rows == [
        {
            "customer_id": "acme",
            "meter": "tokens",
            "aggregation": "sum",
            "period_start": MARCH[0],
            "period_end": MARCH[1],
            "total": "15",
            "event_count": 4,
            "revision": 2,
            "finalized_at_watermark": "2026-04-02T18:30:00.000Z",
            "group_by": L,
        }
    ]
    assert ok(client, "/api/finals", customer="acme", **{"from": "2026-03-01T00:00:00Z"})["rows"] == []
    assert ok(client, "/api/finals", customer="ACME")["rows"] == []


def test_series_groups_points_per_meter_and_group_with_exact_values(client: Any) -> None:
    payload = ok(
        client,
        "/api/series",
        customer="acme",
        granularity="hour",
        **{"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"},
    )
    assert payload == {
        "customer": "acme",
        "granularity": "hour",
        "from": "2026-03-01T00:00:00.000Z",
        "to": "2026-03-02T00:00:00.000Z",
        "series": [
            {
                "meter": "peak",
                "group_by": {},
                "aggregation": "max",
                "points": [["2026-03-01T10:00:00.000Z", "4", 1], ["2026-03-01T11:00:00.000Z", "9", 1]],
            },
            {
                "meter": "tokens",
                "group_by": L,
                "aggregation": "sum",
                "points": [["2026-03-01T10:00:00.000Z", "14", 4], ["2026-03-01T19:00:00.000Z", "1", 1]],  # 5 (v2) + 2 (late) + 7
            },
            {"meter": "users", "group_by": {}, "aggregation": "unique_count", "points": [["2026-03-01T10:00:00.000Z", "3", 4]]},
        ],
    }


def test_series_by_minute_and_day_and_for_one_meter(client: Any) -> None:
    minute = ok(
        client,
        "/api/series",
        customer="acme",
        meter="tokens",
        granularity="minute",
        **{"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T11:00:00Z"},
    )
    assert [(s["meter"], s["points"]) for s in minute["series"]] == [
        ("tokens", [["2026-03-01T10:01:00.000Z", "7", 2], ["2026-03-01T10:02:00.000Z", "7", 2]])
    ]
    day = ok(
        client, "/api/series", customer="acme", meter="tokens", granularity="day", **{"from": "2026-02-01", "to": "2026-05-01"}
    )
    assert day["series"][0]["points"] == [
        ["2026-02-28T18:30:00.000Z", "14", 4],
        ["2026-03-01T18:30:00.000Z", "1", 1],
        ["2026-04-01T18:30:00.000Z", "4", 1],
    ]


def test_series_without_a_range_ends_at_the_newest_usage(client: Any) -> None:
    hour = ok(client, "/api/series", customer="acme")
    assert (hour["granularity"], hour["from"], hour["to"]) == ("hour", "2026-03-26T09:00:00.000Z", "2026-04-02T09:00:00.000Z")
    assert [(s["meter"], s["points"]) for s in hour["series"]] == [("tokens", [["2026-04-02T08:00:00.000Z", "4", 1]])]
    minute = ok(client, "/api/series", customer="acme", granularity="minute")
    assert (minute["from"], minute["to"]) == ("2026-04-02T02:01:00.000Z", "2026-04-02T08:01:00.000Z")
    start_only = ok(client, "/api/series", customer="acme", granularity="day", **{"from": "2026-03-01"})
    assert (start_only["from"], start_only["to"]) == ("2026-03-01T00:00:00.000Z", "2026-05-02T00:00:00.000Z")
    nobody = ok(client, "/api/series", customer="nobody", granularity="day")
    assert nobody["series"] == [] and nobody["customer"] == "nobody"


def test_health_counts_and_dead_letters_per_reason(client: Any) -> None:
    health = ok(client, "/api/health")
    assert list(health) == [
        "raw_events",
        "dead_letters",
        "dead_letters_24h",
        "duplicated_ids",
        "duplicates_dropped",
        "conflicting_ids",
        "corrections",
        "finals",
        "customers",
        "loader_last_batch",
        "loader_idle_seconds",
        "loader_consumer_lag",
        "loader_newest_source_time",
        "quarantined",
        "dead_letter_reasons",
    ]
    counters = {k: health[k] for k in list(health)[:9]}
    assert counters == {
        "raw_events": 2,
        "dead_letters": 4,
        "dead_letters_24h": 3,
        "duplicated_ids": 2,
        "duplicates_dropped": 3,  # e1 seen 3 times (2 dropped) + e2 seen twice (1 dropped)
        "conflicting_ids": 1,
        "corrections": 1,
        "finals": 2,
        "customers": 2 + len(LOOKALIKES),
    }
    assert health["loader_consumer_lag"] == 2 and health["loader_newest_source_time"] == "2026-04-02T08:01:00.000Z"
    assert health["quarantined"] == 0
    last = datetime.fromisoformat(health["loader_last_batch"].replace("Z", "+00:00"))
    assert timedelta(seconds=55) < datetime.now(UTC) - last < timedelta(minutes=10)
    assert 59 <= health["loader_idle_seconds"] < 600
    reasons = health["dead_letter_reasons"]
    assert [(r["reason"], r["total"], r["last_24h"]) for r in reasons] == [("malformed_json", 3, 3), ("unknown_meter", 1, 0)]
    assert all(RFC3339.match(r["newest"]) for r in reasons)


# --- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", CUSTOMER_ENDPOINTS)
@pytest.mark.parametrize("customer", [None, ""])
def test_customer_endpoints_require_a_customer(client: Any, endpoint: str, customer: str | None) -> None:
    query = {} if customer is None else {"customer": customer}
    message = refused(client, f"/api/{endpoint}", **query)
    assert message.startswith(f"{endpoint}: a customer is required") and "?customer=" in message  # an operator names one


@pytest.mark.parametrize("endpoint", CUSTOMER_ENDPOINTS)
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"granularity": "week"}, "--granularity='week': must be one of minute, hour, day"),
        ({"granularity": ""}, "--granularity='': must be one of"),
        ({"from": "yesterday"}, "from='yesterday': not a time"),
        ({"to": "2026-03-01T00:00:00"}, "to='2026-03-01T00:00:00': give a time zone"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "must be before --to"),
        ({"from": "2026-03-01", "to": "2026-03-01"}, "must be before --to"),
    ],
)
def test_bad_parameters_are_400_with_the_reason(client: Any, endpoint: str, query: dict[str, str], message: str) -> None:
    taken = {"series": {"granularity", "from", "to"}, "usage": {"from"}}.get(endpoint, {"from", "to"})
    if not set(query) <= taken:  # a parameter the endpoint does not take is refused as such
        message = f"{sorted(set(query) - taken)[0]!r}: not a parameter of this endpoint"
    assert message in refused(client, f"/api/{endpoint}", customer="acme", **query)


@pytest.mark.parametrize(
    ("granularity", "start", "end"),
    [
        ("minute", "2026-03-01", "2026-03-03T00:00:00.001Z"),
        ("hour", "2026-01-01", "2026-03-05"),
        ("day", "2020-01-01", "2026-01-01"),
    ],
)
def test_a_series_range_too_long_for_its_granularity_is_400(client: Any, granularity: str, start: str, end: str) -> None:
    message = refused(client, "/api/series", customer="acme", granularity=granularity, **{"from": start, "to": end})
    assert f"too long for --granularity={granularity}" in message


@pytest.mark.parametrize(
    "query",
    [
        {"from": "9999-12-31T23:00:00-05:00"},  # parse_time: OverflowError
        {"from": "9999-12-31", "granularity": "day"},  # series_range: from + span overflows
        {"to": "0001-01-01"},  # series_range: to - span overflows
        {"from": "0001-01-01", "to": "0002-01-01", "granularity": "day"},  # '1-01-01 00:00:00.000': ClickHouse refuses
    ],
    ids=["parse", "end", "start", "year-1"],
)
def test_an_unrepresentable_time_is_400_not_500(client: Any, query: dict[str, str]) -> None:
    response = client.get("/api/series", query_string={"customer": "acme", **query})
    assert response.status_code in (200, 400) and response.mimetype == "application/json"


def test_unknown_paths_are_404_with_a_token(client: Any) -> None:
    assert client.get("/api/nothing").status_code == 404
    assert client.post("/api/usage?customer=acme").status_code == 405


def test_storage_failures_are_503(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broken, store = make_client(GatewayReader(f"http://127.0.0.1:{port}", timeout_s=2), tmp_path / "access")
    token, _ = make_token(store)
    broken.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    for path, query in [
        ("/api/health", {}),
        ("/api/customers", {}),
        ("/api/usage", {"customer": "acme"}),
        ("/api/series", {"customer": "acme"}),
    ]:
        message = refused(broken, path, 503, **query)
        assert f"the chDB owner's gateway at http://127.0.0.1:{port} is unreachable" in message
    assert refused(broken, "/api/series", 400, granularity="week", customer="acme")  # refused before any read
    assert ok(broken, "/api/config")["granularities"] == ["minute", "hour", "day"]


def test_series_values_are_exact_for_every_decimal_38_9(client: Any) -> None:
    payload = ok(client, "/api/series", customer=BIG, granularity="minute", **{"from": "2026-03-01", "to": "2026-03-02"})
    assert payload["series"][0]["points"] == [["2026-03-01T10:01:00.000Z", BIG_VALUE, 1]]


# --- the page and its assets ----------------------------------------------------------------------------


class Assets(HTMLParser):
    """Every URL the page loads or links to."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts.append(found.get("src") or "(inline)")
        elif tag == "link":
            self.links.append(found.get("href") or "")
        for name in ("src", "href", "action", "data", "poster"):
            if found.get(name) and tag not in ("script", "link"):
                self.other.append(str(found[name]))


def test_the_page_loads_only_local_scripts_and_styles(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assets = Assets()
    assets.feed(page)
    assert assets.scripts == ["/static/vendor/chart.umd.min.js", "/static/app.js"]
    assert assets.links == ["/static/style.css"]
    assert assets.other == []
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page)  # no CDN, no protocol-relative URL either
    assert 'data-refresh-s="3"' in page and "test storage" not in page  # the shell is served without a token: no data in it
    for url in assets.scripts + assets.links:
        assert client.get(url).status_code == 200, url


def test_the_storage_label_is_not_in_the_page_but_json_for_the_operator(storage: Storage, tmp_path: Path) -> None:
    label = "<script>alert(1)</script>"
    client, store = make_client(StorageReader(storage), tmp_path / "access", storage_label=label)
    assert "alert(1)" not in client.get("/").get_data(as_text=True)
    token, _ = make_token(store)
    assert client.get("/api/config", headers={"Authorization": f"Bearer {token}"}).json["storage"] == label  # page: textContent


def test_the_vendored_chart_is_the_locked_one(client: Any) -> None:
    lock = json.loads((VENDOR / "vendor.lock.json").read_text())
    assert set(lock) == {"chart.umd.min.js"}
    entry = lock["chart.umd.min.js"]
    response = client.get("/static/vendor/chart.umd.min.js")
    assert response.status_code == 200 and "javascript" in response.mimetype
    served = response.get_data()
    assert (
        hashlib.sha256(served).hexdigest()
        == entry["sha256"]
        == hashlib.sha256((VENDOR / "chart.umd.min.js").read_bytes()).hexdigest()
    )
    assert served.startswith(f"/*!\n * Chart.js v{entry['version']}".encode())
    assert (VENDOR / "chart.js.LICENSE.md").read_text().startswith("The MIT License")


def test_the_pages_own_script_fetches_only_the_api(client: Any) -> None:
    for asset in ("app.js", "style.css"):
        text = client.get(f"/static/{asset}").get_data(as_text=True)
        assert not re.search(r"(?i)https?://|url\(\s*['\"]?//", text), asset
    app_js = client.get("/static/app.js").get_data(as_text=True)
    assert set(re.findall(r"""["'`](/api/[a-z]+)""", app_js)) == {
        "/api/config",
        "/api/customers",
        "/api/usage",
        "/api/series",
        "/api/finals",
        "/api/health",
        "/api/cost",
    }


# --- cost and limits ------------------------------------------------------------------------------


def test_cost_is_the_priced_current_periods_and_each_limit_the_rules_entitlement(
    storage: Storage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """acme's newest tokens period holds 4 (provisional) at 0.5 each, against an entitlement of 8: 50 %."""
    from clickhouse import billing
    from tests.unit.test_pricing import USD
    from udfs.alerting import AlertRule, RuleKind
    from udfs.pricing import PerUnit, RateCard, RatePlan, RateVersion, Rating

    start = datetime(2026, 1, 1, tzinfo=UTC)
    cards = {m: RateCard(m, (RateVersion(start, PerUnit(Decimal(price))),)) for m, price in (("tokens", "0.5"), ("peak", "1"))}
    rating = Rating({"standard": RatePlan(USD, cards)}, "standard")
    rules = [
        AlertRule("quota", RuleKind.ENTITLEMENT_PCT, "tokens", (Decimal(50),), entitlement=Decimal(8)),
        AlertRule("tight", RuleKind.ENTITLEMENT_PCT, "tokens", (Decimal(50),), frozenset({"globex"}), Decimal(1)),
    ]
    client, store = make_client(StorageReader(storage), tmp_path_factory.mktemp("cost"), rating=rating, rules=rules)
    operator, _ = make_token(store)
    body = client.get("/api/cost", query_string={"customer": "acme"}, headers={"Authorization": f"Bearer {operator}"}).json
    assert body["priced"] is True and body["customer"] == "acme"
    stable = ("meter", "period_start", "quantity", "cost", "projected_quantity", "is_final")
    expected = billing.cost(StorageReader(storage), rating, customer="acme", at=datetime.now(UTC))
    assert [({k: r[k] for k in stable}, r["group_by"]) for r in body["rows"]] == [
        ({k: r[k] for k in stable}, json.loads(r["group_key"])) for r in expected
    ]
    tokens = next(r for r in body["rows"] if r["meter"] == "tokens")
    assert (tokens["quantity"], tokens["cost"], tokens["group_by"]) == ("4", "2.00", {"model": "l"})
    assert body["limits"] == [
        {
            "meter": "tokens",
            "period_start": APRIL[0],
            "period_end": APRIL[1],
            "used": "4",
            "limit": "8",
            "used_pct": "50.000000000",
            "is_final": False,
        }
    ]
    # The one access rule: a customer token reads its own cost only, a meter-scoped one its meters' rows only.
    own, _ = make_token(store, "customer", "acme", ["peak"])
    mine = client.get("/api/cost", headers={"Authorization": f"Bearer {own}"}).json
    assert [r["meter"] for r in mine["rows"]] == ["peak"] and mine["limits"] == []
    other, _ = make_token(store, "customer", "acme2")
    response = client.get("/api/cost", query_string={"customer": "acme"}, headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 403, response.json


def test_cost_without_a_rating_says_nothing_is_priced(client: Any) -> None:
    assert ok(client, "/api/cost", customer="acme") == {"customer": "acme", "priced": False, "rows": [], "limits": []}
    refused(client, "/api/cost")  # a customer is required, as for usage
