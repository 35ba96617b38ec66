"""Access tokens (clickhouse/access.py): what verifies, and every way a token is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickhouse.access import (
    MAX_TOKEN_CHARS,
    AccessDenied,
    AccessError,
    Revocations,
    SigningKey,
    TokenStore,
    issue,
    verify,
)
from jobs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from jobs.config import ConfigError, load_config

KEY = SigningKey("k" * 32)
OTHER_KEY = SigningKey("x" * 32)
NOW = 1_800_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict[str, object], key: SigningKey = KEY) -> str:
    """A token with arbitrary claims, correctly signed: the checks after the signature must still hold."""
    body = b64(json.dumps(claims).encode())
    return f"mt1.{body}.{b64(key.sign(f'mt1.{body}'.encode()))}"


def refusal(token: str | None, revoked: Revocations | None = None, now: float = NOW + 10) -> str:
    with pytest.raises(AccessDenied) as denied:
        verify(token, KEY, revoked, now=now)
    assert denied.value.status == 401
    return denied.value.reason


def test_a_customer_token_verifies_with_its_scope() -> None:
    token, claims = issue(KEY, scope="customer", customer="acme", meters=["tokens", "api_calls"], ttl_s=3600, now=NOW)
    got = verify(token, KEY, now=NOW + 10)
    assert got == claims and got.customer == "acme" and got.meters == ("api_calls", "tokens")
    assert got.may_read_customer("acme") and not got.may_read_customer("globex")
    assert got.allowed_meters(["tokens", "gpu_seconds"]) == ["tokens"]
    with pytest.raises(AccessDenied) as denied:
        got.require_customer("globex")
    assert (denied.value.reason, denied.value.status) == ("wrong_customer", 403)
    with pytest.raises(AccessDenied, match="operator token") as denied:
        got.require_operator("the customer list")
    assert denied.value.status == 403


def test_an_operator_token_reads_everyone() -> None:
    token, _ = issue(KEY, scope="operator", ttl_s=3600, now=NOW)
    claims = verify(token, KEY, now=NOW + 1)
    claims.require_operator("dead letters")
    claims.require_customer("anyone")
    assert claims.allowed_meters(["a", "b"]) == ["a", "b"]


def test_no_token_and_malformed_tokens_are_refused() -> None:
    token, _ = issue(KEY, scope="customer", customer="acme", ttl_s=3600, now=NOW)
    prefix, body, signature = token.split(".")
    assert refusal(None) == "missing_token" and refusal("") == "missing_token"
    for bad in [
        "Bearer " + token,
        token + ".x",
        f"mt2.{body}.{signature}",
        f"{prefix}.{body}",
        f"{prefix}.{body}.{signature}=",  # padding: a second spelling
        f"{prefix}.{body}==.{signature}",
        f"{prefix}.{body}.{signature[:-1]}",
        f"{prefix}.{body}!.{signature}",
        "mt1.' OR 1=1 --.x",
        "mt1.../../etc/passwd",
        "x" * (MAX_TOKEN_CHARS + 1),
    ]:
        assert refusal(bad) in ("malformed_token", "bad_signature"), bad


def test_a_forged_or_altered_token_is_refused() -> None:
    token, _ = issue(KEY, scope="customer", customer="acme", ttl_s=3600, now=NOW)
    _, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    altered = b64(json.dumps({**claims, "customer": "globex"}).encode())
    assert refusal(f"mt1.{altered}.{signature}") == "bad_signature"
    assert refusal(signed({**claims, "scope": "operator"}, OTHER_KEY)) == "bad_signature"
    forged, _ = issue(OTHER_KEY, scope="operator", ttl_s=3600, now=NOW)
    assert refusal(forged) == "bad_signature"


def test_signed_claims_are_still_held_to_their_form() -> None:
    good = {"v": 1, "jti": "a" * 24, "scope": "customer", "customer": "acme", "iat": NOW, "exp": NOW + 60}
    verify(signed(good), KEY, now=NOW)
    for bad in [
        {**good, "v": 2},
        {**good, "scope": "admin"},
        {**good, "extra": 1},
        {**good, "customer": None},
        {**good, "customer": "bad\u0000id"},
        {**good, "meters": []},
        {**good, "meters": ["Not A Meter"]},
        {**good, "exp": "tomorrow"},
        {**good, "exp": True},
        {**good, "jti": "short"},
        {**good, "scope": "operator"},  # an operator token names no customer
    ]:
        assert refusal(signed(bad), now=NOW) == "malformed_token", bad
    assert refusal(signed([1, 2]), now=NOW) == "malformed_token"  # type: ignore[arg-type]


def test_an_expired_token_is_refused_from_its_expiry_on() -> None:
    token, claims = issue(KEY, scope="customer", customer="acme", ttl_s=60, now=NOW)
    verify(token, KEY, now=claims.expires_at - 1)
    assert refusal(token, now=claims.expires_at) == "expired_token"


def test_a_revoked_token_is_refused_without_a_restart(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "access")
    token, claims = issue(KEY, scope="customer", customer="acme", ttl_s=3600, now=NOW)
    store.record(claims)
    revocations = store.revocations  # one long-lived reader, as a server keeps it
    verify(token, KEY, revocations, now=NOW + 1)
    assert TokenStore(tmp_path / "access").revoke(claims.jti)  # another process revokes
    assert refusal(token, revocations, now=NOW + 2) == "revoked_token"
    assert not store.revoke("n" * 24)  # never issued here: nothing written
    assert [(e.claims.jti, e.revoked) for e in store.issued()] == [(claims.jti, True)]
    assert (tmp_path / "access" / "revoked.txt").stat().st_mode & 0o077 == 0


def test_issue_refuses_what_no_token_should_grant() -> None:
    with pytest.raises(AccessError, match="customer id"):
        issue(KEY, scope="customer", customer="", ttl_s=3600)
    with pytest.raises(AccessError, match="--ttl"):
        issue(KEY, scope="customer", customer="acme", ttl_s=10)
    with pytest.raises(AccessError, match="no --customer"):
        issue(KEY, scope="operator", customer="acme", ttl_s=3600)
    with pytest.raises(AccessError, match="meter name"):
        issue(KEY, scope="customer", customer="acme", meters=["x y"], ttl_s=3600)
    with pytest.raises(AccessError, match="at least 32"):
        SigningKey("short")
    assert "k" * 32 not in repr(KEY)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_no_text_but_an_issued_token_verifies(text: str) -> None:
    with pytest.raises(AccessDenied):
        verify(text, KEY, now=NOW)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=7))
def test_any_single_changed_character_is_refused(position: int, bit: int) -> None:
    token, _ = issue(KEY, scope="customer", customer="acme", ttl_s=3600, now=NOW)
    index = position % len(token)
    changed = token[:index] + chr(ord(token[index]) ^ (1 << bit)) + token[index + 1 :]
    if changed != token:
        with pytest.raises(AccessDenied):
            verify(changed, KEY, now=NOW + 1)


def test_the_signing_key_comes_from_the_environment_and_is_checked() -> None:
    config = load_config(None, {"METERING__ACCESS__SIGNING_KEY": "s" * 40}, require_meters=False)
    assert config.access.key().secret == "s" * 40 and "s" * 40 not in repr(config)
    with pytest.raises(ConfigError, match=r"access\.signing_key: at least 32 characters"):
        load_config(None, {"METERING__ACCESS__SIGNING_KEY": "short"}, require_meters=False)
    with pytest.raises(AccessError, match="METERING__ACCESS__SIGNING_KEY"):
        load_config(None, {}, require_meters=False).access.key()


def test_the_command_line_creates_lists_and_revokes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERING__ACCESS__STORE", str(tmp_path / "access"))
    assert main(["token", "create", "--customer", "acme"]) == EXIT_USAGE  # no key: exit 2 naming it
    assert "METERING__ACCESS__SIGNING_KEY" in capsys.readouterr().err
    monkeypatch.setenv("METERING__ACCESS__SIGNING_KEY", "z" * 32)
    assert main(["token", "create", "--customer", "acme", "--ttl", "2h", "--meters", "tokens,api_calls"]) == EXIT_OK
    out = capsys.readouterr()
    token = out.out.strip()
    claims = verify(token, SigningKey("z" * 32))
    assert claims.customer == "acme" and claims.meters == ("api_calls", "tokens")
    assert claims.expires_at - claims.issued_at == 7200 and claims.jti in out.err
    assert main(["token", "list", "--format", "json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [(t["id"], t["revoked"]) for t in listed] == [(claims.jti, False)] and token not in json.dumps(listed)
    assert main(["token", "revoke", claims.jti]) == EXIT_OK
    assert main(["token", "revoke", "n" * 24]) == EXIT_FAILURE
    with pytest.raises(AccessDenied, match="revoked"):
        verify(token, SigningKey("z" * 32), TokenStore(tmp_path / "access").revocations)
    assert main(["token", "create", "--customer", "acme", "--ttl", "soon"]) == EXIT_USAGE


def test_every_named_query_has_an_access_rule() -> None:
    from clickhouse.access import QUERY_ACCESS
    from infra.settings import PROJECT_ROOT

    names = {path.stem for path in (PROJECT_ROOT / "clickhouse" / "queries").glob("*.sql")}
    assert set(QUERY_ACCESS) == names, "give the new query its rule in clickhouse/access.py, QUERY_ACCESS"


def test_a_customer_token_runs_its_own_customer_queries_only() -> None:
    from clickhouse.access import authorize_query, visible_rows

    token, _ = issue(KEY, scope="customer", customer="acme", meters=["tokens"], ttl_s=3600, now=NOW)
    claims = verify(token, KEY, now=NOW)
    authorize_query(claims, "customer_usage", {"customer": "acme", "meter": "tokens"})
    authorize_query(claims, "customer_usage", {"customer": "acme", "meter": ""})
    authorize_query(claims, "alerts", {"customer": "acme", "meter": "tokens"})
    authorize_query(claims, "stream_cost", {"customer": "acme", "meter": "tokens"})
    refused: list[tuple[str, dict[str, object], str]] = [
        ("customer_usage", {"customer": "globex", "meter": ""}, "wrong_customer"),
        ("usage", {"customer": ""}, "wrong_customer"),  # '' means everyone
        ("dead_letters", {"customer": ""}, "wrong_customer"),
        ("dead_letters", {"customer": "globex"}, "wrong_customer"),
        ("alerts", {"customer": "", "meter": ""}, "wrong_customer"),
        ("alerts", {"customer": "globex", "meter": ""}, "wrong_customer"),
        ("alerts", {"customer": "acme", "meter": "api_calls"}, "meter_not_allowed"),
        ("stream_cost", {"customer": "", "meter": ""}, "wrong_customer"),
        ("stream_cost", {"customer": "globex", "meter": ""}, "wrong_customer"),
        ("stream_cost", {"customer": "acme", "meter": "api_calls"}, "meter_not_allowed"),
        ("amendments", {"customer": ""}, "wrong_customer"),
        ("amendments", {"customer": "globex"}, "wrong_customer"),
        ("customer_usage", {"customer": "acme", "meter": "api_calls"}, "meter_not_allowed"),
        ("customers", {}, "operator_only"),
        ("health", {}, "operator_only"),
        ("replay_examine", {"customers": ["acme"]}, "operator_only"),
        ("no_such_query", {"customer": "acme"}, "operator_only"),
        ("customer_usage", {"customer": ["acme"]}, "wrong_customer"),
    ]
    for name, parameters, reason in refused:
        with pytest.raises(AccessDenied) as denied:
            authorize_query(claims, name, parameters)
        assert (denied.value.reason, denied.value.status) == (reason, 403), name
    rows = [
        {"customer_id": "acme", "meter": "tokens"},
        {"customer_id": "acme", "meter": "api_calls"},
        {"customer_id": "globex", "meter": "tokens"},
    ]
    assert visible_rows(claims, rows) == [rows[0]]
    operator = verify(issue(KEY, scope="operator", ttl_s=3600, now=NOW)[0], KEY, now=NOW)
    authorize_query(operator, "customers", {})
    assert visible_rows(operator, rows) == rows
