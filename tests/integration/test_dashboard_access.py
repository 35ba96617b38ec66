"""Who may ask the dashboard what: attacks on every endpoint, over real chDB (jobs/dashboard/guard.py).

The endpoints are the app's registered routes, not a list written here: a route added without a
probe below fails :func:`test_every_route_has_a_probe`, and every route but the page shell and its
static files must refuse each attack. The data: tests/integration/dashboard_data.py (``acme`` and
its look-alikes) plus ``victim-co``, whose values (:data:`SECRETS`) must never appear in an answer
to anyone but the operator.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clickhouse.access import TokenStore
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import StorageReader
from clickhouse.tables import COLUMNS
from jobs.dashboard.app import create_app
from jobs.dashboard.guard import PUBLIC_ENDPOINTS
from tests.integration.dashboard_data import MARCH, seed, simple_segment, utc
from tests.integration.dashboard_tokens import OTHER_KEY, bearer, make_client, make_guard, make_token

VICTIM = "victim-co"
SECRETS = ("987654.321", "555000.125", "victim-secret-payload", "victim_meter")

#: One request per route that an operator token answers with 200; a customer token for ``acme``
#: may ask the ``customer`` ones (with its own customer), never the ``operator`` ones.
PROBES: dict[str, tuple[str, dict[str, str]]] = {
    "/api/config": ("any", {}),
    "/api/customers": ("operator", {}),
    "/api/health": ("operator", {}),
    "/api/usage": ("customer", {"customer": "acme"}),
    "/api/periods": ("customer", {"customer": "acme"}),
    "/api/finals": ("customer", {"customer": "acme"}),
    "/api/cost": ("customer", {"customer": "acme"}),
    "/api/series": ("customer", {"customer": "acme", "granularity": "day", "from": "2026-02-01", "to": "2026-05-01"}),
}


def routes() -> list[str]:
    """The app's routes that need a token (every one but the page shell and its static files)."""
    app = create_app(StorageReader(None), guard=make_guard(TokenStore(Path("/nonexistent"))))  # type: ignore[arg-type]
    return sorted(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint not in PUBLIC_ENDPOINTS)


ROUTES = routes()


def seed_victim(storage: Storage) -> None:
    insert = storage.client.insert
    rows = [
        simple_segment(VICTIM, "victim_meter", "sum", "2026-03-01 10:01", "987654.321"),
        simple_segment(VICTIM, "tokens", "sum", "2026-03-01 10:05", "555000.125", group_key='{"model":"l"}'),
    ]
    insert("aggregate_segments", rows, column_names=COLUMNS["aggregate_segments"])
    final = [VICTIM, "victim_meter", "{}", "sum", *MARCH, Decimal("987654.321"), 1, utc("2026-04-02 18:30")]
    insert("period_finals", [final], column_names=COLUMNS["period_finals"])
    dead = ["unknown_meter", "", VICTIM, "v1", '{"note":"victim-secret-payload"}', 30, 0, 99, datetime.now(UTC)]
    insert("dead_letters", [dead], column_names=COLUMNS["dead_letters"])


@pytest.fixture(scope="module")
def storage(chdb_path: Path) -> Iterator[Storage]:
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_access_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as opened:
        migrate(opened)
        seed(opened)
        seed_victim(opened)
        try:
            yield opened
        finally:
            opened.drop_database()


@pytest.fixture
def app(storage: Storage, tmp_path: Path) -> tuple[Any, TokenStore]:
    """A fresh app and token store per test (revocations must not leak between tests)."""
    return make_client(StorageReader(storage), tmp_path / "access", storage_label="chDB /secret/path")


def get(client: Any, path: str, query: dict[str, str] | None = None, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers |= bearer(token)
    return client.get(path, query_string=query or {}, headers=headers)


def assert_no_secret(response: Any) -> None:
    body = response.get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in body, (response.status_code, body[:300])
    assert "/secret/path" not in body or response.status_code == 200  # the storage label: operator only


def assert_refused(response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    assert list(response.json) == ["error", "reason"] and response.json["reason"] == reason, response.json
    assert response.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="metering"')
    assert_no_secret(response)


# --- the routes -------------------------------------------------------------------------------------


def test_every_route_has_a_probe() -> None:
    """A new endpoint fails here until it is given a probe, and so is attacked by every test below."""
    assert set(ROUTES) == set(PROBES)
    assert {"index", "static"} == PUBLIC_ENDPOINTS  # widening this is a decision for review


def test_every_route_is_read_only(app: tuple[Any, TokenStore]) -> None:
    client, _ = app
    for rule in client.application.url_map.iter_rules():
        assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule


@pytest.mark.parametrize("route", ROUTES)
def test_the_operator_reads_every_route(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    token, _ = make_token(store)
    response = get(client, route, PROBES[route][1], token)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.headers["Cache-Control"] == "no-store"


# --- no valid token: 401 ------------------------------------------------------------------------------

MALFORMED = {
    "empty bearer": "Bearer",
    "basic auth": "Basic YWRtaW46YWRtaW4=",
    "garbage": "Bearer garbage",
    "two tokens": "Bearer mt1.a.b mt1.c.d",
    "wrong prefix": "Bearer mt2.eyJ2IjoxfQ.AAAA",
    "not base64": "Bearer mt1.!!!.???",
    "sql": "Bearer ' OR '1'='1",
    "oversized": "Bearer mt1." + "A" * 5000 + ".AAAA",
}


@pytest.mark.parametrize("route", ROUTES)
def test_no_token_is_401(app: tuple[Any, TokenStore], route: str) -> None:
    client, _ = app
    response = get(client, route, PROBES[route][1])
    assert_refused(response, 401, "missing_token")
    assert "error=" not in response.headers["WWW-Authenticate"]  # RFC 6750: no error code without a token


@pytest.mark.parametrize("route", ROUTES)
def test_a_token_in_the_url_is_not_a_token(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    token, _ = make_token(store)
    assert_refused(get(client, route, {**PROBES[route][1], "token": token}), 401, "missing_token")
    assert_refused(get(client, route, {**PROBES[route][1], "token": token}, token), 400, "bad_parameter")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_token_is_401(app: tuple[Any, TokenStore], route: str, header: str) -> None:
    client, _ = app
    assert_refused(get(client, route, PROBES[route][1], Authorization=header), 401, "malformed_token")


@pytest.mark.parametrize("route", ROUTES)
def test_an_expired_token_is_401(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    token, _ = make_token(store, ttl_s=60, now=time.time() - 61)
    assert_refused(get(client, route, PROBES[route][1], token), 401, "expired_token")


@pytest.mark.parametrize("route", ROUTES)
def test_a_forged_token_is_401(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    forged, _ = make_token(store, key=OTHER_KEY)  # an operator token of another deployment's key
    assert_refused(get(client, route, PROBES[route][1], forged), 401, "bad_signature")
    # A customer token whose claims are rewritten to operator, its signature kept.
    token, _ = make_token(store, "customer", "acme")
    prefix, claims, signature = token.split(".")
    body = json.loads(_unb64(claims))
    body.pop("customer")
    body["scope"] = "operator"
    altered = f"{prefix}.{_b64(json.dumps(body, separators=(',', ':')).encode())}.{signature}"
    assert_refused(get(client, route, PROBES[route][1], altered), 401, "bad_signature")


@pytest.mark.parametrize("route", ROUTES)
def test_a_token_revoked_while_the_app_runs_is_401_at_the_next_request(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    token, claims = make_token(store)
    assert get(client, route, PROBES[route][1], token).status_code == 200
    assert store.revoke(claims.jti)
    assert_refused(get(client, route, PROBES[route][1], token), 401, "revoked_token")


# --- a valid token that may not read this: 403 ----------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_customer_token_reads_only_its_own_customer(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    token, _ = make_token(store, "customer", "acme")
    access, query = PROBES[route]
    own = get(client, route, query, token)
    if access == "operator":
        assert_refused(own, 403, "operator_only")
        return
    assert own.status_code == 200, own.get_data(as_text=True)[:300]
    assert_no_secret(own)
    if access == "customer":
        assert own.json["customer"] == "acme"
        default = get(client, route, {k: v for k, v in query.items() if k != "customer"}, token)  # no customer: its own
        assert default.status_code == 200 and default.json == own.json
        for other in (VICTIM, "acme2", "ACME"):
            assert_refused(get(client, route, {**query, "customer": other}, token), 403, "wrong_customer")


@pytest.mark.parametrize("route", ROUTES)
def test_another_customers_token_gets_nothing_of_the_victim(app: tuple[Any, TokenStore], route: str) -> None:
    client, store = app
    token, _ = make_token(store, "customer", "acme")
    access, query = PROBES[route]
    response = get(client, route, {**query, "customer": VICTIM} if "customer" in query else query, token)
    if access == "any":
        assert response.status_code == 200 and response.json["access"] == {
            "scope": "customer",
            "customer": "acme",
            "meters": None,
            "expires_at": response.json["access"]["expires_at"],
        }
        assert response.json["storage"] == ""  # where the storage lives is the operator's business
        assert_no_secret(response)
    else:
        assert_refused(response, 403, "operator_only" if access == "operator" else "wrong_customer")


def test_the_operator_does_see_the_victim(app: tuple[Any, TokenStore]) -> None:
    """The secrets are really there: the refusals above are not empty answers by accident."""
    client, store = app
    token, _ = make_token(store)
    usage = get(client, "/api/usage", {"customer": VICTIM}, token).get_data(as_text=True)
    assert "987654.321" in usage and "555000.125" in usage
    assert VICTIM in get(client, "/api/customers", None, token).get_data(as_text=True)


def test_a_meter_restricted_token_sees_only_its_meters(app: tuple[Any, TokenStore]) -> None:
    client, store = app
    token, _ = make_token(store, "customer", "acme", ["peak"])
    usage = get(client, "/api/usage", {}, token)
    assert usage.status_code == 200 and {r["meter"] for r in usage.json["rows"]} == {"peak"}
    series = get(client, "/api/series", PROBES["/api/series"][1], token)
    assert series.status_code == 200 and {s["meter"] for s in series.json["series"]} == {"peak"}
    periods = get(client, "/api/periods", {}, token)
    assert periods.status_code == 200 and {r["meter"] for r in periods.json["rows"]} == {"peak"}
    finals = get(client, "/api/finals", {}, token)  # acme's finals are all of tokens
    assert finals.status_code == 200 and finals.json["rows"] == []
    for route in ("/api/usage", "/api/series", "/api/periods", "/api/finals"):
        assert_refused(get(client, route, {"meter": "tokens"}, token), 403, "meter_not_allowed")
    assert get(client, "/api/config", {}, token).json["access"]["meters"] == ["peak"]


# --- hostile parameters: 400 (or 403) ---------------------------------------------------------------------

HOSTILE = [
    {"customer": "x' OR '1'='1"},
    {"customer": "acme' OR '1'='1' --"},
    {"customer": "acme') UNION SELECT * FROM system.users --"},
    {"customer": "../../etc/passwd"},
    {"customer": "acme/../victim-co"},
    {"customer": "%"},
    {"customer": "acme\x00"},
    {"customer": "acme\n"},
    {"customer": "victim-co"},
    {"meter": "tokens' OR 1=1 --"},
    {"meter": "../../../etc/passwd"},
    {"meter": "*"},
    {"granularity": "hour; DROP TABLE aggregate_segments"},
    {"from": "2026-01-01'; DROP TABLE period_finals; --"},
    {"to": "../../etc/passwd"},
    {"customer_id": VICTIM},
    {"sql": "SELECT 1"},
    {"customer": "a" * 300},
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("scope", ["customer", "operator"])
@pytest.mark.parametrize("query", HOSTILE, ids=[repr(q)[:40] for q in HOSTILE])
def test_hostile_parameters_are_refused_and_leak_nothing(
    app: tuple[Any, TokenStore], route: str, scope: str, query: dict[str, str]
) -> None:
    client, store = app
    token, _ = make_token(store, "customer", "acme") if scope == "customer" else make_token(store)
    response = get(client, route, {**PROBES[route][1], **query}, token)
    if scope == "operator" and query == {"customer": VICTIM} and "customer" in PROBES[route][1]:
        assert response.status_code == 200  # the operator reads every customer
        return
    assert response.status_code in (400, 403), (response.status_code, response.get_data(as_text=True)[:300])
    assert_refused(response, response.status_code, response.json["reason"])
    assert response.json["reason"] in ("bad_parameter", "wrong_customer", "operator_only")


@pytest.mark.parametrize("route", ROUTES)
def test_a_parameter_given_twice_is_400(app: tuple[Any, TokenStore], route: str) -> None:
    """`customer=acme&customer=victim-co`: no layer may read the first and another the last."""
    client, store = app
    token, _ = make_token(store, "customer", "acme")
    response = client.get(f"{route}?customer=acme&customer={VICTIM}", headers=bearer(token))
    assert_refused(response, 400, "bad_parameter")


# --- hosts, headers, the page -----------------------------------------------------------------------------

FOREIGN_HOSTS = ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost:1234", "localhost.", "", "[::1]:99"]


@pytest.mark.parametrize("route", [*ROUTES, "/", "/static/app.js"])
@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_foreign_host_is_400_whatever_the_token(app: tuple[Any, TokenStore], route: str, host: str) -> None:
    client, store = app
    token, _ = make_token(store)
    response = get(client, route, PROBES.get(route, ("", {}))[1], token, Host=host)
    assert_refused(response, 400, "unknown_host")


def test_allowed_hosts(storage: Storage, tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "access")
    client = create_app(StorageReader(storage), guard=make_guard(store, allow=["dash.example.com"])).test_client()
    token, _ = make_token(store)
    for host in ("localhost", "127.0.0.1", "[::1]", "localhost:80", "dash.example.com", "DASH.example.com:8443"):
        assert get(client, "/api/config", None, token, Host=host).status_code == 200, host
    assert get(client, "/api/config", None, token, Host="evil.dash.example.com").status_code == 400


@pytest.mark.parametrize("path", ["/", "/api/config", "/api/usage", "/static/app.js", "/api/nothing"])
def test_every_response_has_the_security_headers(app: tuple[Any, TokenStore], path: str) -> None:
    client, _ = app
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"


def test_framing_is_allowed_only_to_the_given_origins(storage: Storage, tmp_path: Path) -> None:
    client, _ = make_client(StorageReader(storage), tmp_path / "access", ancestors=("https://app.example.com",))
    headers = client.get("/").headers
    assert "frame-ancestors https://app.example.com" in headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in headers


def test_the_shell_is_served_without_a_token_and_holds_no_data(app: tuple[Any, TokenStore]) -> None:
    client, _ = app
    response = client.get("/")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    for value in ("acme", VICTIM, "/secret/path", *SECRETS):
        assert value not in page


@pytest.mark.parametrize(
    "path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e%2fconfig.py"]
)
def test_static_files_do_not_traverse(app: tuple[Any, TokenStore], path: str) -> None:
    client, _ = app
    response = client.get(path)
    assert response.status_code in (400, 401, 404)
    assert "create_app" not in response.get_data(as_text=True)


def test_unknown_paths_need_a_token_too(app: tuple[Any, TokenStore]) -> None:
    client, store = app
    assert_refused(client.get("/api/dead_letters"), 401, "missing_token")
    token, _ = make_token(store, "customer", "acme")
    assert client.get("/api/dead_letters", headers=bearer(token)).status_code == 404


def test_a_customer_is_not_told_where_the_storage_is_when_it_fails(tmp_path: Path) -> None:
    from clickhouse.gateway import GatewayReader

    client, store = make_client(GatewayReader("http://127.0.0.1:9", timeout_s=2), tmp_path / "access")
    customer, _ = make_token(store, "customer", "acme")
    response = get(client, "/api/usage", {}, customer)
    assert_refused(response, 503, "storage_unavailable")
    assert "127.0.0.1:9" not in response.get_data(as_text=True)
    operator, _ = make_token(store)
    assert "127.0.0.1:9" in get(client, "/api/usage", {"customer": "acme"}, operator).json["error"]


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
