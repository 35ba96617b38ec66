"""Who may read what: signed, expiring access tokens for the operator and for one customer.

A token is ``mt1.<claims>.<signature>``: the claims are compact JSON in unpadded base64url, the
signature HMAC-SHA256 of ``mt1.<claims>`` under the signing key (``access.signing_key``, from the
environment, never from the repository). The claims say who the holder is:

- ``scope: operator`` reads everything: all customers, health, dead letters, replays;
- ``scope: customer`` reads one customer's rows (``customer``) and, when ``meters`` is given,
  only those meters — the model of OpenMeter's portal tokens.

Every token has an id (``jti``), an issue time and an expiry. Revoking writes the id to the
revocation list (a file next to the register of issued tokens, re-read whenever it changes), so a
revocation takes effect at the next request of every process, without a restart.

:func:`verify` is strict: the exact prefix, canonical base64url, a signature compared in constant
time before anything of the claims is trusted, known claims only, an expiry in the future, no
revoked id. Each refusal is an :class:`AccessDenied` with a stable ``reason`` and an HTTP status
(401: no valid token; 403: a valid token that may not read this).

Why one module: the token's form, its verification and the one rule of who may run which named
query (:data:`QUERY_ACCESS`) must agree; every surface imports them from here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.validate import string_rule
from udfs.meters import NAME as METER_NAME

Scope = Literal["operator", "customer"]

PREFIX = "mt1"
#: A token longer than this is refused before it is decoded (a header is no place for megabytes).
MAX_TOKEN_CHARS = 4096
#: The shortest signing key accepted: 32 bytes of entropy, as text.
MIN_KEY_CHARS = 32
#: The longest lifetime a token may be given.
MAX_TTL_S = 366 * 24 * 3600
_METER = METER_NAME  # a meter name, as the configuration allows it
_JTI = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_CLAIMS = {"v", "jti", "scope", "customer", "meters", "iat", "exp"}

REGISTER = "tokens.jsonl"
REVOKED = "revoked.txt"


class AccessDenied(Exception):
    """A request without the right to what it asks; ``reason`` is stable, ``status`` its HTTP status."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class AccessError(ValueError):
    """Access cannot be set up as asked (no signing key, a bad customer id or lifetime)."""


@dataclass(frozen=True)
class Claims:
    """What a token grants: its id, scope, customer and meters, and when it was issued and expires (epoch s)."""

    jti: str
    scope: Scope
    issued_at: int
    expires_at: int
    customer: str | None = None
    meters: tuple[str, ...] | None = None

    def may_read_customer(self, customer: str) -> bool:
        return self.scope == "operator" or self.customer == customer

    def require_customer(self, customer: str) -> None:
        """Refuse (403) a customer token asking for another customer's rows."""
        if not self.may_read_customer(customer):
            raise AccessDenied("wrong_customer", "this token reads another customer's data", 403)

    def require_operator(self, what: str) -> None:
        """Refuse (403) a customer token asking for what only the operator reads (all customers, dead letters …)."""
        if self.scope != "operator":
            raise AccessDenied("operator_only", f"{what} needs an operator token", 403)

    def allowed_meters(self, meters: Iterable[str]) -> list[str]:
        """Of ``meters``, those this token may read."""
        return [m for m in meters if self.meters is None or m in self.meters]


@dataclass(frozen=True)
class SigningKey:
    """The HMAC key; never shown (``repr`` hides it)."""

    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_CHARS:
            raise AccessError(
                f"access.signing_key: at least {MIN_KEY_CHARS} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
                "set through METERING__ACCESS__SIGNING_KEY"
            )

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self.secret.encode(), message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Canonical unpadded base64url only: a second spelling of the same bytes is refused."""
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def issue(
    key: SigningKey,
    *,
    scope: Scope,
    ttl_s: int,
    customer: str | None = None,
    meters: Sequence[str] | None = None,
    now: float | None = None,
) -> tuple[str, Claims]:
    """A new token and its claims."""
    if not 60 <= ttl_s <= MAX_TTL_S:
        raise AccessError(f"--ttl: from 1m to 366d, got {ttl_s}s")
    if scope == "customer":
        if customer is None or string_rule("customer_id").problem(customer) is not None:
            raise AccessError(f"--customer: {customer!r} is not a customer id the event schema allows")
        for meter in meters or ():
            if not _METER.match(meter):
                raise AccessError(f"--meters: {meter!r} is not a meter name")
    elif customer is not None or meters:
        raise AccessError("an operator token reads every customer and meter: no --customer or --meters")
    issued = int(time.time() if now is None else now)
    claims = Claims(
        jti=secrets.token_urlsafe(18),
        scope=scope,
        issued_at=issued,
        expires_at=issued + ttl_s,
        customer=customer,
        meters=tuple(sorted(set(meters))) if meters else None,
    )
    body = {"v": 1, "jti": claims.jti, "scope": scope, "iat": claims.issued_at, "exp": claims.expires_at}
    if customer is not None:
        body["customer"] = customer
    if claims.meters is not None:
        body["meters"] = list(claims.meters)
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{PREFIX}.{payload}"
    return f"{signed}.{_b64(key.sign(signed.encode()))}", claims


def verify(token: str | None, key: SigningKey, revoked: Revocations | None = None, now: float | None = None) -> Claims:
    """The claims of a valid token; :class:`AccessDenied` (401) for any other."""
    if not token:
        raise AccessDenied("missing_token", "a token is required (Authorization: Bearer <token>)")
    if len(token) > MAX_TOKEN_CHARS:
        raise AccessDenied("malformed_token", "the token is not one this service issues")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AccessDenied("malformed_token", "the token is not one this service issues")
    try:
        signature = _unb64(parts[2])
        payload = _unb64(parts[1])
    except ValueError:
        raise AccessDenied("malformed_token", "the token is not one this service issues") from None
    if not hmac.compare_digest(signature, key.sign(f"{parts[0]}.{parts[1]}".encode())):
        raise AccessDenied("bad_signature", "the token's signature does not match")
    claims = _claims(payload)
    moment = time.time() if now is None else now
    if moment >= claims.expires_at:
        raise AccessDenied("expired_token", "the token has expired")
    if revoked is not None and revoked.contains(claims.jti):
        raise AccessDenied("revoked_token", "the token has been revoked")
    return claims


def _claims(payload: bytes) -> Claims:
    """Claims of a signed payload, held to their form all the same (a key may have signed a bad one)."""
    bad = AccessDenied("malformed_token", "the token's claims are not valid")
    try:
        body = json.loads(payload)
    except ValueError:
        raise bad from None
    if not isinstance(body, dict) or set(body) - _CLAIMS or body.get("v") != 1:
        raise bad
    jti, scope, iat, exp = body.get("jti"), body.get("scope"), body.get("iat"), body.get("exp")
    customer, meters = body.get("customer"), body.get("meters")
    if not isinstance(jti, str) or not _JTI.match(jti):
        raise bad
    if not (isinstance(iat, int) and isinstance(exp, int)) or isinstance(iat, bool) or isinstance(exp, bool) or iat < 0:
        raise bad
    if scope == "operator":
        if customer is not None or meters is not None:
            raise bad
    elif scope == "customer":
        if not isinstance(customer, str) or string_rule("customer_id").problem(customer) is not None:
            raise bad
        if meters is not None and (
            not isinstance(meters, list) or not meters or not all(isinstance(m, str) and _METER.match(m) for m in meters)
        ):
            raise bad
    else:
        raise bad
    return Claims(jti, scope, iat, exp, customer, tuple(meters) if meters is not None else None)


class Revocations:
    """The revoked token ids: a file of one id per line, re-read when it changes (one ``stat`` per check)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._ids: frozenset[str] = frozenset()

    def contains(self, jti: str) -> bool:
        return jti in self.ids()

    def ids(self) -> frozenset[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._ids = None, frozenset()
            return self._ids
        version = (stat.st_mtime_ns, stat.st_size)
        if version != self._seen:
            self._ids = frozenset(line.strip() for line in self.path.read_text().splitlines() if line.strip())
            self._seen = version
        return self._ids


def append_private(path: Path, line: str) -> None:
    """Append a line to a file only its owner reads, synced: credential registers (tokens, jobs/ingest/keys.py's API keys)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class Issued:
    """A line of the register: a token's claims (never the token itself), and whether it is revoked."""

    claims: Claims
    revoked: bool


class TokenStore:
    """The register of issued tokens and the revocation list, in one folder (``access.store``).

    The register keeps claims only: a token cannot be recovered from it, only revoked.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.revocations = Revocations(folder / REVOKED)

    def record(self, claims: Claims) -> None:
        entry = {
            "jti": claims.jti,
            "scope": claims.scope,
            "customer": claims.customer,
            "meters": list(claims.meters) if claims.meters is not None else None,
            "issued_at": claims.issued_at,
            "expires_at": claims.expires_at,
        }
        append_private(self.folder / REGISTER, json.dumps(entry, sort_keys=True))

    def issued(self) -> list[Issued]:
        path = self.folder / REGISTER
        if not path.exists():
            return []
        revoked = self.revocations.ids()
        out = []
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                meters = tuple(d["meters"]) if d.get("meters") is not None else None
                claims = Claims(d["jti"], d["scope"], d["issued_at"], d["expires_at"], d.get("customer"), meters)
                out.append(Issued(claims, claims.jti in revoked))
        return out

    def revoke(self, jti: str) -> bool:
        """Revoke a token by id; False when no token of that id was issued here (nothing is written)."""
        if not any(entry.claims.jti == jti for entry in self.issued()):
            return False
        if not self.revocations.contains(jti):
            append_private(self.folder / REVOKED, jti)
        return True


@dataclass(frozen=True)
class AccessSettings:
    """``access``: the signing key (a secret: set ``METERING__ACCESS__SIGNING_KEY``), the token store's folder, and
    ``token``, the access token this process presents to a remote query gateway (``METERING__ACCESS__TOKEN``; a secret)."""

    signing_key: str = field(default="", repr=False)
    store: Path = Path(".metering/access")
    token: str = field(default="", repr=False)

    def key(self) -> SigningKey:
        """The signing key; :class:`AccessError` naming the setting when there is none."""
        if not self.signing_key:
            raise AccessError(
                "access.signing_key is not set: tokens cannot be issued or checked. Fix: set "
                "METERING__ACCESS__SIGNING_KEY to a secret of at least 32 characters (e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), the same for every process"
            )
        return SigningKey(self.signing_key)

    def tokens(self) -> TokenStore:
        return TokenStore(self.store)


#: Who may run each named query (clickhouse/queries/<name>.sql). ``customer``: a query whose
#: ``customer`` parameter selects one customer's rows: a customer token may run it for its own
#: customer, never with ``''`` (which means everyone). ``operator``: everything else (all
#: customers, health, checks, replays). A query missing here is refused to every token
#: (tests/unit/test_access.py holds this table to the folder).
QUERY_ACCESS: dict[str, Scope] = {
    "customer_usage": "customer",
    "customer_periods": "customer",
    "customer_finals": "customer",
    "customer_extent": "customer",
    "series_minute": "customer",
    "series_hour": "customer",
    "series_day": "customer",
    "usage": "customer",
    "finals": "customer",
    "corrections": "customer",
    "customer_corrections": "customer",
    "dead_letters": "customer",
    "alerts": "customer",
    "stream_cost": "customer",
    "amendments": "customer",
    "credits": "customer",
    "credit_ledger": "customer",
    "customers": "operator",
    "health": "operator",
    "dead_letter_reasons": "operator",
    "check_customers": "operator",
    "check_finals": "operator",
    "check_operations": "operator",
    "check_raw_duplicates": "operator",
    "check_raw_events": "operator",
    "check_recompute": "operator",
    "check_rollups": "operator",
    "replay_examine": "operator",
    "replay_minutes": "operator",
    "replay_scope_live": "operator",
    "replay_superseded": "operator",
}


#: Customer queries whose rows sum every meter (a credit balance burns all of a customer's cost): a
#: meter-scoped token may not run them, as their rows cannot be cut down to its meters.
ALL_METERS = frozenset({"credits", "credit_ledger"})


def authorize_query(claims: Claims, name: str, parameters: Mapping[str, Any]) -> None:
    """Refuse (403) a named query this token may not run with these parameters."""
    needed = QUERY_ACCESS.get(name)
    if needed is None:
        raise AccessDenied("operator_only", f"query {name!r} is not open to tokens", 403)
    if claims.scope == "operator":
        return
    if needed == "operator":
        raise AccessDenied("operator_only", f"query {name!r} needs an operator token", 403)
    customer = parameters.get("customer")
    if not isinstance(customer, str) or not customer:
        raise AccessDenied("wrong_customer", "a customer token reads its own customer only: give customer", 403)
    claims.require_customer(customer)
    if claims.meters is not None and name in ALL_METERS:
        raise AccessDenied("meter_not_allowed", f"query {name!r} covers every meter: a meter-scoped token may not run it", 403)
    meter = parameters.get("meter")
    if claims.meters is not None and isinstance(meter, str) and meter and meter not in claims.meters:
        raise AccessDenied("meter_not_allowed", f"this token does not read meter {meter!r}", 403)


def visible_rows(claims: Claims, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of a query's rows, those the token may see: its customer's, and only its meters when it names some."""
    if claims.scope == "operator":
        return rows
    return [
        row
        for row in rows
        if row.get("customer_id", claims.customer) == claims.customer
        and (claims.meters is None or "meter" not in row or row["meter"] in claims.meters)
    ]
