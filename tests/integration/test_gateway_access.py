"""Attacks on the chDB owner's query gateway (clickhouse/gateway.py): real chDB, real HTTP, real tokens.

A seeded database where ``acme`` and ``acme2`` (and look-alike ids) each have usage, finals,
corrections and dead letters; ``acme2``'s rows carry the marker ``LEAK`` in their payloads, and no
refusal and no answer to an ``acme`` token may contain it. The gateway admits its own secret (the
owner's user, everything) and tokens signed with the configured key (access.py's one rule); every
other request is refused with 400, 401, 403, 404, 411, 413 or 415 and a JSON error, before any query
runs. ``metering query --gateway`` is driven in a subprocess with a customer token.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from clickhouse.access import QUERY_ACCESS, AccessSettings, SigningKey, issue
from clickhouse.client import Storage, StorageError, StorageSettings, open_storage
from clickhouse.gateway import GATEWAY_FILE, MAX_BODY_BYTES, GatewayReader, GatewayRefused, QueryGateway, gateway_file
from clickhouse.migrate import migrate
from clickhouse.queries import QueryError, StorageReader
from clickhouse.tables import COLUMNS
from infra.settings import PROJECT_ROOT
from tests.integration.dashboard_data import MARCH, seed, utc

KEY = "k" * 40
OTHER_KEY = "o" * 40
LEAK = b"LEAK"
EVERYONE_QUERIES = ["dead_letters", "usage", "finals", "corrections"]
CUSTOMER_QUERIES = {
    "dead_letters": {},
    "usage": {},
    "finals": {},
    "corrections": {},
    "customer_usage": {"meter": "", "since": "1970-01-01 00:00:00.000"},
    "customer_finals": {"meter": "", "from": "1970-01-01 00:00:00.000", "to": "2200-01-01 00:00:00.000"},
    "customer_periods": {"meter": "", "from": "1970-01-01 00:00:00.000", "to": "2200-01-01 00:00:00.000"},
    "series_hour": {"meter": "", "from": "2026-03-01 00:00:00.000", "to": "2026-03-02 00:00:00.000"},
    "customer_extent": {},
    "customer_corrections": {"meter": "", "loaded_before": "2200-01-01 00:00:00.000"},
}


def seed_tenants(storage: Storage) -> None:
    """Dead letters and corrections for acme and acme2 (whose payloads and event ids say LEAK), on top of dashboard_data."""
    now = datetime.now(UTC)
    dead = [
        ["out_of_range", "tokens", "acme", "e-acme", '{"customer_id":"acme"}', 22, 0, 10, now],
        ["out_of_range", "tokens", "acme2", "LEAK-e", '{"customer_id":"acme2","LEAK":1}', 33, 0, 11, now],
        ["out_of_range", "tokens", "acme'", "LEAK-q", '{"customer_id":"acme\'","LEAK":2}', 33, 0, 12, now],
    ]
    storage.client.insert("dead_letters", dead, column_names=COLUMNS["dead_letters"])
    corrections = [
        [customer, "tokens", "{}", "sum", *MARCH, utc("2026-03-10 10:00"), 1, Decimal(value), 1, event, 0, offset]
        for customer, value, event, offset in [("acme", "2", "c-acme", 1), ("acme2", "9", "LEAK-c", 2)]
    ]
    storage.client.insert("corrections", corrections, column_names=COLUMNS["corrections"])


@pytest.fixture(scope="module")
def storage(chdb_path: Path) -> Iterator[Storage]:
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_gw_access_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as opened:
        migrate(opened)
        seed(opened)
        seed_tenants(opened)
        try:
            yield opened
        finally:
            opened.drop_database()


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory) -> AccessSettings:
    return AccessSettings(signing_key=KEY, store=tmp_path_factory.mktemp("access"))


@pytest.fixture(scope="module")
def gateway(storage: Storage, access: AccessSettings) -> Iterator[QueryGateway]:
    with QueryGateway(storage, access=access) as serving:
        yield serving


def token(access: AccessSettings, *, customer: str | None = None, meters: list[str] | None = None, **kwargs: Any) -> str:
    text, claims = issue(access.key(), scope="customer" if customer else "operator", customer=customer, meters=meters, **kwargs)
    access.tokens().record(claims)
    return text


class Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes) -> None:
        self.status, self.headers, self.raw = status, headers, raw
        self.json: Any = json.loads(raw)

    @property
    def rows(self) -> list[dict[str, Any]]:
        assert self.status == 200, self.raw
        rows: list[dict[str, Any]] = self.json["rows"]
        return rows

    def refused(self, status: int, reason: str | None = None) -> None:
        """Refused with this status (and reason), a JSON error only, nothing of another customer."""
        assert self.status == status, self.raw
        assert self.headers.get_content_type() == "application/json"
        assert set(self.json) <= {"error", "reason"} and self.json["error"], self.json
        if reason is not None:
            assert self.json["reason"] == reason, self.json
        assert LEAK not in self.raw and b"acme2" not in self.raw


def call(
    gateway: QueryGateway,
    body: bytes | dict[str, Any] | None = None,
    *,
    credential: str | None = None,
    method: str = "POST",
    path: str = "/query",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request with exactly these headers (http.client adds only Host, Accept-Encoding and Content-Length)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json"} if method == "POST" else {}
    if credential is not None:
        sent["Authorization"] = f"Bearer {credential}"
    sent.update(headers or {})
    connection = http.client.HTTPConnection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), timeout=30)
    try:
        connection.request(method, path, body=data, headers={k: v for k, v in sent.items() if v is not None})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def ask(name: str, customer: str | None = None, **parameters: Any) -> dict[str, Any]:
    given = {**CUSTOMER_QUERIES.get(name, {}), **parameters}
    if customer is not None:
        given["customer"] = customer
    return {"name": name, "parameters": given}


# --- who is asking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/query"), ("GET", "/health"), ("GET", "/query"), ("POST", "/sql"), ("GET", "/../etc/passwd")]
)
def test_no_credential_is_401_everywhere(gateway: QueryGateway, method: str, path: str) -> None:
    answer = call(gateway, ask("dead_letters", "") if method == "POST" else None, method=method, path=path)
    answer.refused(401, "missing_token")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer",
        "Token abc",
    ],
)
def test_no_bearer_credential_is_401(gateway: QueryGateway, authorization: str) -> None:
    call(gateway, ask("dead_letters", ""), headers={"Authorization": authorization}).refused(401, "missing_token")


def test_a_wrong_secret_is_401(gateway: QueryGateway, storage: Storage) -> None:
    secret = gateway.secret
    for wrong in [secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret[:-1], secret + "x", secret.upper(), "x" * 43]:
        call(gateway, ask("dead_letters", ""), credential=wrong).refused(401, "malformed_token")
    with QueryGateway(storage, port=0) as other:  # another gateway's secret (it also rewrote the file: same process)
        call(gateway, ask("dead_letters", ""), credential=other.secret).refused(401)
    assert other.secret != secret


def test_two_authorization_headers_are_refused(gateway: QueryGateway) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), timeout=30)
    body = json.dumps(ask("dead_letters", "")).encode()
    connection.putrequest("POST", "/query")
    for header, value in [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Authorization", "Bearer nonsense"),
        ("Authorization", f"Bearer {gateway.secret}"),
    ]:
        connection.putheader(header, value)
    connection.endheaders(body)
    response = connection.getresponse()
    Answer(response.status, response.headers, response.read()).refused(401, "malformed_credentials")
    connection.close()


def _tampered(text: str, **changes: Any) -> str:
    prefix, payload, signature = text.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{prefix}.{body}.{signature}"


def test_malformed_forged_expired_and_revoked_tokens_are_401(gateway: QueryGateway, access: AccessSettings) -> None:
    acme = token(access, customer="acme", ttl_s=3600)
    forged, _ = issue(SigningKey(OTHER_KEY), scope="operator", ttl_s=3600)
    expired = token(access, customer="acme", ttl_s=60, now=time.time() - 3600)
    revoked = token(access, customer="acme", ttl_s=3600)
    revoked_id = json.loads(base64.urlsafe_b64decode(revoked.split(".")[1] + "==="))["jti"]
    assert access.tokens().revoke(revoked_id)
    cases = {
        "malformed_token": [
            "mt1",
            "mt1..",
            "mt1.x.y",
            "mt2" + acme[3:],
            acme + "=",
            "not a token",
            "mt1." + "A" * 5000,
        ],
        "bad_signature": [
            forged,
            _tampered(acme, customer="acme2"),
            _tampered(acme, scope="operator"),
            acme.rsplit(".", 1)[0] + "." + "A" * 43,
        ],
        "expired_token": [expired],
        "revoked_token": [revoked],
    }
    for reason, tokens in cases.items():
        for text in tokens:
            call(gateway, ask("dead_letters", "acme"), credential=text).refused(401, reason)
            call(gateway, method="GET", path="/health", credential=text).refused(401, reason)


def test_a_revocation_takes_effect_at_the_next_request(gateway: QueryGateway, access: AccessSettings) -> None:
    text = token(access, customer="acme", ttl_s=3600)
    assert call(gateway, ask("finals", "acme"), credential=text).status == 200
    jti = json.loads(base64.urlsafe_b64decode(text.split(".")[1] + "==="))["jti"]
    assert access.tokens().revoke(jti)
    call(gateway, ask("finals", "acme"), credential=text).refused(401, "revoked_token")


def test_a_gateway_without_a_signing_key_takes_no_tokens(storage: Storage, access: AccessSettings) -> None:
    operator = token(access, ttl_s=3600)
    with QueryGateway(storage) as plain:
        assert not plain.accepts_tokens
        call(plain, ask("finals", ""), credential=operator).refused(401, "bad_credentials")
        assert len(call(plain, ask("finals", ""), credential=plain.secret).rows) == 2


# --- what a customer token may read ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CUSTOMER_QUERIES))
@pytest.mark.parametrize("other", ["acme2", "ACME", "acme'", "a%", "acme ", "x' OR '1'='1", "acme' OR '1'='1", "%", "*"])
def test_a_customer_token_cannot_ask_for_another_customer(
    gateway: QueryGateway, access: AccessSettings, name: str, other: str
) -> None:
    call(gateway, ask(name, other), credential=token(access, customer="acme", ttl_s=3600)).refused(403, "wrong_customer")


@pytest.mark.parametrize("name", EVERYONE_QUERIES)
@pytest.mark.parametrize("customer", ["", None, ["acme"], 0, False])
def test_a_customer_token_cannot_ask_for_everyone(
    gateway: QueryGateway, access: AccessSettings, name: str, customer: Any
) -> None:
    body = {"name": name, "parameters": {} if customer is None else {"customer": customer}}
    call(gateway, body, credential=token(access, customer="acme", ttl_s=3600)).refused(403, "wrong_customer")


@pytest.mark.parametrize("name", sorted(n for n, scope in QUERY_ACCESS.items() if scope == "operator"))
def test_operator_queries_refuse_a_customer_token(gateway: QueryGateway, access: AccessSettings, name: str) -> None:
    acme = token(access, customer="acme", ttl_s=3600)
    call(gateway, ask(name, "acme"), credential=acme).refused(403, "operator_only")


def test_the_health_endpoint_is_for_the_owner_and_operators(gateway: QueryGateway, access: AccessSettings) -> None:
    call(gateway, method="GET", path="/health", credential=token(access, customer="acme", ttl_s=3600)).refused(
        403, "operator_only"
    )
    for credential in (gateway.secret, token(access, ttl_s=3600)):
        answer = call(gateway, method="GET", path="/health", credential=credential)
        assert answer.status == 200 and answer.json == {"owner_pid": os.getpid(), "database": gateway.storage.settings.database}


@pytest.mark.parametrize(
    "name",
    [
        "no_such_query",
        "../migrations/0001_raw_events",
        "../../../../etc/passwd",
        "",
        "health.sql",
        "usage; DROP TABLE raw_events",
    ],
)
def test_unknown_and_path_like_query_names(gateway: QueryGateway, access: AccessSettings, name: str) -> None:
    for credential in (token(access, customer="acme", ttl_s=3600), token(access, ttl_s=3600)):
        call(gateway, ask(name, "acme"), credential=credential).refused(403, "operator_only")
    owner = call(gateway, ask(name, "acme"), credential=gateway.secret)
    assert owner.status == 400 and "no query named" in owner.json["error"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"customer": "acme", "meter": "x' OR '1'='1"},
        {"customer": "acme", "meter": "tokens' OR customer_id != 'acme"},
        {"customer": "acme", "meter": "{customer:String}"},
        {"customer": "acme", "meter": "../../etc/passwd"},
        {"customer": "acme", "meter": "", "since": "1970-01-01 00:00:00.000') OR ('1'='1"},
    ],
)
def test_sql_looking_values_stay_values(gateway: QueryGateway, access: AccessSettings, parameters: dict[str, Any]) -> None:
    """Bound server-side by ClickHouse: at worst no row or a 400 naming the parameter, never another customer's."""
    answer = call(
        gateway,
        {"name": "customer_usage", "parameters": {"since": "1970-01-01 00:00:00.000", **parameters}},
        credential=token(access, customer="acme", ttl_s=3600),
    )
    if answer.status == 200:
        assert answer.rows == []
    else:  # ClickHouse refused the value (a time that does not parse): 400, its words for the owner only
        answer.refused(400)
        assert "DateTime64" not in answer.json["error"]
    value = parameters["meter"] or parameters["since"]
    owner = call(gateway, {"name": "dead_letters", "parameters": {"customer": value}}, credential=gateway.secret)
    assert owner.rows == []  # not acme's, not everyone's: a customer id nobody has


def test_the_customer_token_reads_exactly_its_own_rows(gateway: QueryGateway, access: AccessSettings, storage: Storage) -> None:
    direct = StorageReader(storage)
    acme = token(access, customer="acme", ttl_s=3600)
    for name in CUSTOMER_QUERIES:
        answer = call(gateway, ask(name, "acme"), credential=acme)
        expected = direct.run(name, ask(name, "acme")["parameters"])
        assert answer.rows == expected, name
        assert LEAK not in answer.raw and b"acme2" not in answer.raw, name
        assert all(row.get("customer_id", "acme") == "acme" for row in answer.rows), name
    dead = call(gateway, ask("dead_letters", "acme"), credential=acme).rows
    assert [(r["customer_id"], r["event_id"]) for r in dead] == [("acme", "e-acme")]
    assert [(r["customer_id"], r["value"]) for r in call(gateway, ask("corrections", "acme"), credential=acme).rows] == [
        ("acme", "2")
    ]
    assert [(r["customer_id"], r["total"]) for r in call(gateway, ask("finals", "acme"), credential=acme).rows] == [
        ("acme", "15")
    ]


def test_a_meter_scoped_token_reads_only_its_meters(gateway: QueryGateway, access: AccessSettings) -> None:
    users_only = token(access, customer="acme", meters=["users"], ttl_s=3600)
    usage = call(gateway, ask("usage", "acme"), credential=users_only).rows
    assert usage and {r["meter"] for r in usage} == {"users"}
    assert call(gateway, ask("finals", "acme"), credential=users_only).rows == []  # acme's only final is of tokens
    call(gateway, ask("customer_usage", "acme", meter="tokens"), credential=users_only).refused(403, "meter_not_allowed")


def test_the_operator_token_and_the_owner_read_everything(
    gateway: QueryGateway, access: AccessSettings, storage: Storage
) -> None:
    direct = StorageReader(storage)
    operator = token(access, ttl_s=3600)
    for name in EVERYONE_QUERIES:
        everyone = direct.run(name, {"customer": ""})
        assert {r["customer_id"] for r in everyone} >= {"acme", "acme2"}, name
        assert call(gateway, ask(name, ""), credential=operator).rows == everyone
        assert call(gateway, ask(name, ""), credential=gateway.secret).rows == everyone
    assert call(gateway, ask("customers"), credential=operator).rows == direct.run("customers", {})
    assert GatewayReader(gateway.url, credential=operator).run("dead_letters", {"customer": ""}) == direct.run(
        "dead_letters", {"customer": ""}
    )


def test_the_reader_raises_refusals_as_gateway_refused(gateway: QueryGateway, access: AccessSettings) -> None:
    acme = GatewayReader(gateway.url, credential=token(access, customer="acme", ttl_s=3600))
    with pytest.raises(GatewayRefused) as refused:
        acme.run("dead_letters", {"customer": ""})
    assert (refused.value.status, refused.value.reason) == (403, "wrong_customer")
    with pytest.raises(GatewayRefused) as refused:
        GatewayReader(gateway.url).run("finals", {"customer": "acme"})
    assert (refused.value.status, refused.value.reason) == (401, "missing_token")
    assert isinstance(refused.value, StorageError)  # in-process callers that handle StorageError keep working
    assert "mt1." not in repr(acme) and gateway.secret not in repr(gateway)


# --- the form of a request ---------------------------------------------------------------------------


def test_an_oversize_body_is_413(gateway: QueryGateway) -> None:
    padding = "x" * MAX_BODY_BYTES
    call(gateway, {"name": "finals", "parameters": {"customer": "acme", "pad": padding}}, credential=gateway.secret).refused(413)
    # a declared length far beyond the limit is refused before a byte of it is read
    connection = http.client.HTTPConnection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), timeout=30)
    connection.putrequest("POST", "/query")
    for header, value in [
        ("Content-Type", "application/json"),
        ("Content-Length", str(10**12)),
        ("Authorization", f"Bearer {gateway.secret}"),
    ]:
        connection.putheader(header, value)
    connection.endheaders()
    response = connection.getresponse()
    Answer(response.status, response.headers, response.read()).refused(413)
    connection.close()
    assert call(gateway, ask("finals", "acme"), credential=gateway.secret).status == 200  # still serving


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_a_body_that_is_not_json_by_its_type_is_415(gateway: QueryGateway, content_type: str | None) -> None:
    headers: dict[str, Any] = {"Content-Type": content_type}
    call(gateway, ask("finals", "acme"), credential=gateway.secret, headers=headers).refused(415)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "expected {'name': str"),
        (b'"finals"', "expected {'name': str"),
        (b'{"name": "finals", "parameters": "customer=acme"}', "parameters must be an object"),
        (b'{"name": "finals", "parameters": ["acme"]}', "parameters must be an object"),
        (b'{"name": "finals", "parameters": {}, "sql": "SELECT 1"}', "expected {'name': str"),
        (b'{"name": "finals", "parameters": {"customer": {"$ne": ""}}}', "parameters.customer: must be text"),
        (b'{"name": "finals", "parameters": {"customer; DROP TABLE x": "a"}}', "is not a parameter name"),
        (b'{"name": "finals", "parameters": {"Customer": "a"}}', "is not a parameter name"),
        (b'{"name": "finals", "parameters": {"customer": NaN}}', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
    ],
)
def test_malformed_bodies_are_400(gateway: QueryGateway, access: AccessSettings, body: bytes, message: str) -> None:
    for credential in (gateway.secret, token(access, customer="acme", ttl_s=3600)):
        answer = call(gateway, body, credential=credential)
        answer.refused(400)
        assert message in answer.json["error"]


def test_an_oversize_parameter_from_the_reader_is_a_query_error(gateway: QueryGateway) -> None:
    with pytest.raises(QueryError, match="larger than"):
        GatewayReader(gateway.url, credential=gateway.secret).run("finals", {"customer": "x" * (MAX_BODY_BYTES + 1)})


# --- the gateway file ----------------------------------------------------------------------------------


def test_the_gateway_file_is_private_from_its_creation(storage: Storage, access: AccessSettings) -> None:
    with QueryGateway(storage, access=access) as serving:
        path = gateway_file(storage.settings)
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
        assert json.loads(path.read_text())["secret"] == serving.secret
        assert not path.parent.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def test_a_gateway_file_is_created_0600_whatever_the_umask(storage: Storage) -> None:
    previous = os.umask(0)
    try:
        with QueryGateway(storage):
            assert stat.S_IMODE(gateway_file(storage.settings).stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_no_gateway_in_a_folder_others_may_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    fake = cast(Storage, SimpleNamespace(settings=StorageSettings(backend="chdb", path=shared, database="x")))
    with pytest.raises(StorageError, match=r"writable by other users .*chmod go-w"), QueryGateway(fake):
        pass
    assert not (shared / GATEWAY_FILE).exists()


OWNER = """
import sys
from pathlib import Path
from clickhouse.client import StorageSettings, open_storage
from clickhouse.gateway import QueryGateway
from clickhouse.migrate import migrate

settings = StorageSettings(backend="chdb", path=Path(sys.argv[1]), database="owned")
with open_storage(settings) as storage:
    migrate(storage)
    with QueryGateway(storage):
        print("ready", flush=True)
        sys.stdin.read()
"""


def test_a_reader_trusts_only_a_private_gateway_file(tmp_path: Path) -> None:
    from clickhouse.client import StorageLockedError
    from clickhouse.gateway import open_reader

    path = tmp_path / "chdb"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(path)], cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        settings = StorageSettings(backend="chdb", path=path, database="owned")
        assert stat.S_IMODE(path.stat().st_mode) == 0o700  # the chDB folder: the owner's user only
        with open_reader(settings) as reader:  # same user: the secret is read and sent, transparently
            assert isinstance(reader, GatewayReader)
            assert reader.run("health", {})[0]["dead_letters"] == 0
        gateway_file(settings).chmod(0o644)
        with pytest.raises(StorageLockedError, match="gateway file is not trusted"), open_reader(settings):
            pass
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(30)


# --- metering query against a remote gateway -----------------------------------------------------------


def metering_query(*args: str, token_text: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING__ACCESS__")}
    env["METERING__STACK__HOME"] = str(tmp_path / "stack")
    if token_text is not None:
        env["METERING__ACCESS__TOKEN"] = token_text
    command = [sys.executable, "-m", "jobs.cli", "query", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120, check=False)


def test_metering_query_through_a_gateway_with_a_customer_token(
    gateway: QueryGateway, access: AccessSettings, tmp_path: Path
) -> None:
    acme = token(access, customer="acme", ttl_s=3600)
    done = metering_query(
        "dead-letters", "--gateway", gateway.url, "--customer", "acme", "--format", "json", token_text=acme, tmp_path=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert [(r["customer_id"], r["event_id"]) for r in json.loads(done.stdout)] == [("acme", "e-acme")]
    assert acme not in done.stdout + done.stderr

    everyone = metering_query("dead-letters", "--gateway", gateway.url, token_text=acme, tmp_path=tmp_path)
    assert everyone.returncode == 1 and "LEAK" not in everyone.stdout + everyone.stderr
    assert "refused (403 wrong_customer)" in everyone.stderr and "pass --customer" in everyone.stderr
    assert acme not in everyone.stdout + everyone.stderr

    other = metering_query("finals", "--gateway", gateway.url + "/", "--customer", "acme2", token_text=acme, tmp_path=tmp_path)
    assert other.returncode == 1 and "wrong_customer" in other.stderr and other.stdout == ""

    health = metering_query("health", "--gateway", gateway.url, token_text=acme, tmp_path=tmp_path)
    assert health.returncode == 1 and "operator_only" in health.stderr

    forged, _ = issue(SigningKey(OTHER_KEY), scope="operator", ttl_s=3600)
    refused = metering_query("customers", "--gateway", gateway.url, token_text=forged, tmp_path=tmp_path)
    assert refused.returncode == 1 and "bad_signature" in refused.stderr and forged not in refused.stderr


@pytest.mark.parametrize(
    ("url", "token_given", "code", "message"),
    [
        ("http://127.0.0.1:1", True, 1, "unreachable"),
        ("http://metering.example.com:8750", True, 2, "clear text"),
        ("ftp://127.0.0.1:1", True, 2, "give http(s)://"),
        ("http://user:pw@127.0.0.1:1", True, 2, "give http(s)://"),
        ("http://127.0.0.1:1", False, 2, "METERING__ACCESS__TOKEN"),
    ],
)
def test_metering_query_gateway_usage_errors(tmp_path: Path, url: str, token_given: bool, code: int, message: str) -> None:
    text = "mt1.not.checked-here" if token_given else None
    done = metering_query("finals", "--gateway", url, "--customer", "acme", token_text=text, tmp_path=tmp_path)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "mt1.not" not in done.stderr
