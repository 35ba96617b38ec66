"""Tokens and a checked app for the dashboard's integration tests (jobs/dashboard/guard.py).

One signing key for the tests; each app gets a token store (register + revocation list) of its own,
whose ``Revocations`` the app keeps for its life, as ``metering dashboard`` does. The allowlist is
the one of a dashboard bound to 127.0.0.1 on port 80, so the Flask test client's default
``Host: localhost`` is accepted (a Host without a port is port 80).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clickhouse.access import Claims, Scope, SigningKey, TokenStore, issue
from clickhouse.queries import Reader
from jobs.dashboard.app import create_app
from jobs.dashboard.guard import Guard, HostAllowlist

KEY = SigningKey("dashboard-tests-signing-key-0123456789")
OTHER_KEY = SigningKey("another-deployments-signing-key-98765")


def make_guard(store: TokenStore, *, ancestors: tuple[str, ...] = (), allow: Sequence[str] = ()) -> Guard:
    return Guard(key=KEY, revocations=store.revocations, hosts=HostAllowlist.of("127.0.0.1", 80, allow), ancestors=ancestors)


def make_token(
    store: TokenStore,
    scope: Scope = "operator",
    customer: str | None = None,
    meters: Sequence[str] | None = None,
    *,
    ttl_s: int = 3600,
    now: float | None = None,
    key: SigningKey = KEY,
) -> tuple[str, Claims]:
    """A token, recorded in ``store`` (so it can be revoked)."""
    token, claims = issue(key, scope=scope, ttl_s=ttl_s, customer=customer, meters=meters, now=now)
    store.record(claims)
    return token, claims


def make_client(reader: Reader, store_dir: Path, **app_options: Any) -> tuple[Any, TokenStore]:
    """A Flask test client of a checked app over ``reader``, and its token store."""
    store = TokenStore(store_dir)
    guard = make_guard(store, ancestors=app_options.pop("ancestors", ()))
    return create_app(reader, guard=guard, **app_options).test_client(), store


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
