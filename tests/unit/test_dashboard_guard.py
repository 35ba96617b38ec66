"""The dashboard's request checks (jobs/dashboard/guard.py) and `metering dashboard`'s refusals to start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from clickhouse.access import AccessDenied, Claims, SigningKey, TokenStore, issue
from clickhouse.queries import QueryError
from jobs.cli import EXIT_USAGE, main
from jobs.dashboard.guard import (
    AuthorizedReader,
    Guard,
    HostAllowlist,
    HostRefused,
    bearer,
    binding_problem,
    checked_parameters,
    content_security_policy,
    frame_ancestors,
    is_loopback,
    security_headers,
)

KEY = SigningKey("unit-tests-dashboard-signing-key-000")
OPERATOR = Claims("o" * 24, "operator", 0, 2**40)
ACME = Claims("a" * 24, "customer", 0, 2**40, customer="acme")
ACME_PEAK = Claims("p" * 24, "customer", 0, 2**40, customer="acme", meters=("peak",))


def args(**values: str | list[str]) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in values.items()}


# --- the token's header -------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "token"), [(None, None), ("", None), ("  ", None), ("Bearer t", "t"), ("bearer  t ", "t")])
def test_bearer_reads_one_token(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer a b", "Token t", "t"])
def test_bearer_refuses_anything_else(header: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        bearer(header)
    assert (refused.value.reason, refused.value.status) == ("malformed_token", 401)


def test_the_guard_verifies_with_the_live_revocation_list(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    guard = Guard(KEY, store.revocations, HostAllowlist.of("127.0.0.1", 8050))
    token, claims = issue(KEY, scope="customer", customer="acme", ttl_s=600)
    store.record(claims)
    assert guard.claims(f"Bearer {token}") == claims
    store.revoke(claims.jti)
    with pytest.raises(AccessDenied, match="revoked"):
        guard.claims(f"Bearer {token}")
    later = Guard(KEY, None, guard.hosts, clock=lambda: time.time() + 601)
    with pytest.raises(AccessDenied, match="expired"):
        later.claims(f"Bearer {issue(KEY, scope='operator', ttl_s=600)[0]}")


# --- parameters -------------------------------------------------------------------------------------------


def test_a_customer_tokens_customer_is_its_own_by_default() -> None:
    assert checked_parameters(ACME, {}) == {"customer": "acme"}
    assert checked_parameters(ACME, args(customer="")) == {"customer": "acme"}
    assert checked_parameters(ACME, args(customer="acme", meter="tokens")) == {"customer": "acme", "meter": "tokens"}
    assert checked_parameters(ACME, {}, accepted=()) == {}  # an endpoint without parameters
    assert checked_parameters(OPERATOR, {}) == {}  # the operator names one (else the endpoint's 400)


@pytest.mark.parametrize("customer", ["acme2", "ACME", "globex"])
def test_another_customer_is_403(customer: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        checked_parameters(ACME, args(customer=customer))
    assert (refused.value.reason, refused.value.status) == ("wrong_customer", 403)
    assert checked_parameters(OPERATOR, args(customer=customer)) == {"customer": customer}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (args(customer="x' OR '1'='1"), "not a customer id"),
        (args(customer="../acme"), "not a customer id"),
        (args(meter="tokens' --"), "not a meter name"),
        (args(meter="../x"), "not a meter name"),
        (args(customer=["acme", "globex"]), "given 2 times"),
        (args(customer_id="acme"), "not a parameter"),
        (args(token="mt1.a.b"), "never accepted in the URL"),
        (args(access_token="mt1.a.b"), "never accepted in the URL"),
        (args(meter="m" * 300), "longer than"),
    ],
)
def test_bad_parameters_are_400(query: dict[str, list[str]], message: str) -> None:
    for claims in (ACME, OPERATOR):
        with pytest.raises(QueryError, match=message):
            checked_parameters(claims, query)


def test_a_parameter_the_endpoint_does_not_take_is_400() -> None:
    with pytest.raises(QueryError, match="'granularity': not a parameter of this endpoint"):
        checked_parameters(OPERATOR, args(granularity="day"), accepted=("customer",))


class Recording:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.ran: list[str] = []

    def run(self, name: str, parameters: Any) -> list[dict[str, Any]]:
        self.ran.append(name)
        return self.rows


def test_the_authorized_reader_holds_every_query_to_the_access_table() -> None:
    rows = [{"customer_id": "acme", "meter": "peak"}, {"customer_id": "acme", "meter": "tokens"}]
    inner = Recording(rows)
    assert AuthorizedReader(inner, ACME_PEAK).run("customer_usage", {"customer": "acme", "meter": ""}) == rows[:1]
    for name, parameters, reason in [
        ("customers", {}, "operator_only"),
        ("health", {}, "operator_only"),
        ("dead_letters", {"customer": ""}, "wrong_customer"),
        ("customer_usage", {"customer": "globex"}, "wrong_customer"),
        ("customer_usage", {"customer": "acme", "meter": "tokens"}, "meter_not_allowed"),
        ("no_such_query", {"customer": "acme"}, "operator_only"),
    ]:
        with pytest.raises(AccessDenied) as refused:
            AuthorizedReader(inner, ACME_PEAK).run(name, parameters)
        assert refused.value.reason == reason and refused.value.status == 403
    assert inner.ran == ["customer_usage"]  # refused before asking the storage
    assert AuthorizedReader(inner, OPERATOR).run("customers", {}) == rows


# --- hosts --------------------------------------------------------------------------------------------------


def test_the_default_hosts_are_the_loopback_names_with_the_port() -> None:
    hosts = HostAllowlist.of("127.0.0.1", 8050)
    for ok in ("127.0.0.1:8050", "localhost:8050", "LOCALHOST:8050", "[::1]:8050"):
        assert hosts.allows(ok), ok
    for bad in (
        None,
        "",
        "localhost",
        "localhost:8051",
        "evil.example:8050",
        "127.0.0.1.nip.io:8050",
        "localhost:8050@x",
        "[::2]:8050",
    ):
        assert not hosts.allows(bad), bad


def test_the_bound_address_and_added_names() -> None:
    hosts = HostAllowlist.of("192.168.1.5", 8050, ["dash.example.com", "10.0.0.9:9000", "fe80::1"])
    assert hosts.allows("192.168.1.5:8050") and not hosts.allows("192.168.1.5:80")
    assert hosts.allows("dash.example.com") and hosts.allows("dash.example.com:443")  # any port
    assert hosts.allows("10.0.0.9:9000") and not hosts.allows("10.0.0.9:8050")
    assert hosts.allows("[fe80::1]:1")
    assert not HostAllowlist.of("0.0.0.0", 8050).allows("0.0.0.0:8050")
    with pytest.raises(ValueError, match="--allow-host"):
        HostAllowlist.of("127.0.0.1", 8050, ["evil.example/x"])


def test_port_80_may_be_left_out() -> None:
    assert HostAllowlist.of("127.0.0.1", 80).allows("localhost")


def test_a_foreign_host_is_refused_by_the_guard() -> None:
    guard = Guard(KEY, None, HostAllowlist.of("127.0.0.1", 8050))
    guard.check_host("127.0.0.1:8050")
    with pytest.raises(HostRefused, match="--allow-host"):
        guard.check_host("evil.example:8050")


# --- binding and headers --------------------------------------------------------------------------------------


LOOPBACK = [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True)]
BEYOND = [("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("my-host", False)]


@pytest.mark.parametrize(("host", "loopback"), LOOPBACK + BEYOND)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (binding_problem(host, public=False) is None) is loopback
    assert binding_problem(host, public=True) is None


def test_frame_ancestors_are_origins_only() -> None:
    assert frame_ancestors(["https://app.example.com/", "self", "http://*.example.com:8443"]) == (
        "https://app.example.com",
        "'self'",
        "http://*.example.com:8443",
    )
    for bad in ["*", "https://a.com; script-src *", "app.example.com", "https://a.com/path", "'unsafe-inline'", "javascript:x"]:
        with pytest.raises(ValueError, match="--frame-ancestors"):
            frame_ancestors([bad])


def test_headers() -> None:
    assert content_security_policy().endswith("frame-ancestors 'none'")
    closed = security_headers()
    assert closed["X-Frame-Options"] == "DENY" and closed["X-Content-Type-Options"] == "nosniff"
    assert closed["Referrer-Policy"] == "no-referrer"
    embeddable = security_headers(("https://app.example.com",))
    assert "X-Frame-Options" not in embeddable
    assert "frame-ancestors https://app.example.com" in embeddable["Content-Security-Policy"]


# --- `metering dashboard` refuses to start unsafely ---------------------------------------------------------


def test_the_dashboard_needs_a_signing_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("METERING__ACCESS__SIGNING_KEY", raising=False)
    assert main(["dashboard"]) == EXIT_USAGE
    assert "METERING__ACCESS__SIGNING_KEY" in capsys.readouterr().err


def test_binding_beyond_loopback_needs_public(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("METERING__ACCESS__SIGNING_KEY", KEY.secret)
    assert main(["dashboard", "--host", "0.0.0.0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--public" in err and "--host 0.0.0.0" in err
    monkeypatch.delenv("METERING__ACCESS__SIGNING_KEY")
    assert main(["dashboard", "--host", "0.0.0.0", "--public"]) == EXIT_USAGE  # public, but no key
    assert "METERING__ACCESS__SIGNING_KEY" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"), [(["--frame-ancestors", "*"], "--frame-ancestors"), (["--allow-host", "a/b"], "--allow-host")]
)
def test_bad_options_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    monkeypatch.setenv("METERING__ACCESS__SIGNING_KEY", KEY.secret)
    assert main(["dashboard", *option]) == EXIT_USAGE
    assert message in capsys.readouterr().err
