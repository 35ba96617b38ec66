"""Who may ask the dashboard what: every request's checks, as plain functions the Flask app calls.

The rules of who reads which rows are not here: they are :mod:`clickhouse.access` (``verify``,
``authorize_query``, ``visible_rows``), applied to every named query the dashboard runs by
:class:`AuthorizedReader`. This module adds what is particular to HTTP:

- the token comes from ``Authorization: Bearer <token>`` and nowhere else (never a URL, which
  ends up in logs and histories);
- the request's parameters are each given once, known, and of the form the data allows
  (a customer id by the event schema, a meter name by the configuration's rule): anything else is
  400 before a query runs; a customer token's missing ``customer`` is its own;
- the ``Host`` header names this dashboard (DNS rebinding: a page of another site whose name
  resolves to 127.0.0.1 sends its own name);
- the response headers (content security policy, framing, no caching of data);
- binding beyond loopback is an explicit decision (``--public``).

Every endpoint but :data:`PUBLIC_ENDPOINTS` (the HTML shell and its static assets, which hold no
data) is refused without a valid token, before its view function runs.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse.access import AccessDenied, Claims, Revocations, SigningKey, authorize_query, verify, visible_rows
from clickhouse.queries import QueryError, Reader
from schemas.validate import string_rule
from udfs.meters import NAME as METER_NAME

#: Endpoints served without a token: the page shell and its scripts/styles (no data in them).
PUBLIC_ENDPOINTS = frozenset({"index", "static"})
#: The query parameters of the JSON API; each endpoint takes some of them, any other is refused (400).
PARAMETERS = ("customer", "meter", "from", "to", "granularity")
#: The longest parameter value accepted (a customer id is at most 128 characters).
MAX_PARAMETER_CHARS = 256
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_HOST_NAME = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]+\]$")
_ORIGIN = re.compile(r"^https?://(?:\*\.)?[a-z0-9.-]+(?::[0-9]{1,5})?$")


class HostRefused(ValueError):
    """A request whose ``Host`` is not one this dashboard answers to."""


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is no header.

    Another scheme, or a value that is not one token, is refused as malformed (401).
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise AccessDenied("malformed_token", "send the token as `Authorization: Bearer <token>`")
    return token


def checked_parameters(claims: Claims, args: Mapping[str, Sequence[str]], accepted: Sequence[str] = PARAMETERS) -> dict[str, str]:
    """The request's parameters, each ``accepted``, given once and well-formed (else :class:`QueryError`: 400).

    ``customer`` (when accepted): a customer token's own when absent or empty; another customer's
    is refused (403). Whether the token may run each query with them is decided per query by
    :class:`AuthorizedReader`.
    """
    out: dict[str, str] = {}
    for name, values in args.items():
        if name in ("token", "access_token"):
            raise QueryError(f"{name}: a token is never accepted in the URL; send `Authorization: Bearer <token>`")
        if name not in accepted:
            raise QueryError(f"{name[:40]!r}: not a parameter of this endpoint (have: {', '.join(accepted) or 'none'})")
        if len(values) != 1:
            raise QueryError(f"{name}: given {len(values)} times; give it once")
        value = values[0]
        if len(value) > MAX_PARAMETER_CHARS:
            raise QueryError(f"{name}: longer than {MAX_PARAMETER_CHARS} characters")
        out[name] = value
    customer = out.get("customer", "")
    if customer:
        if string_rule("customer_id").problem(customer) is not None:
            raise QueryError(f"customer={customer!r}: not a customer id (schemas/usage_event.v1.json, customer_id)")
        claims.require_customer(customer)
    elif claims.scope == "customer" and claims.customer is not None and "customer" in accepted:
        out["customer"] = claims.customer
    meter = out.get("meter", "")
    if meter and not METER_NAME.match(meter):
        raise QueryError(f"meter={meter!r}: not a meter name (lowercase letters, digits and _)")
    return out


class AuthorizedReader:
    """A :class:`~clickhouse.queries.Reader` that runs only what ``claims`` may run, and returns only the rows it may see.

    Each named query is held to :data:`clickhouse.access.QUERY_ACCESS` before it runs
    (``authorize_query``: 403), and its rows to ``visible_rows`` after.
    """

    def __init__(self, reader: Reader, claims: Claims) -> None:
        self.reader = reader
        self.claims = claims

    def run(self, name: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        authorize_query(self.claims, name, parameters)
        return visible_rows(self.claims, self.reader.run(name, parameters))


# --- Host header -------------------------------------------------------------------------------------


def _split_host(host: str) -> tuple[str, int | None]:
    """``name[:port]`` (``[v6]:port`` for IPv6), lowercased; :class:`ValueError` when it is neither."""
    text = host.strip().lower()
    name, port = text, None
    if text.startswith("["):
        end = text.find("]")
        name, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or not _IPV6.match(name) or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            raise ValueError(f"not a host: {host!r}")
        port = int(rest[1:]) if rest else None
    elif ":" in text:
        name, _, digits = text.rpartition(":")
        if not re.fullmatch(r"[0-9]{1,5}", digits):
            raise ValueError(f"not a host: {host!r}")
        port = int(digits)
    if not (_IPV6.match(name) or _HOST_NAME.match(name)):
        raise ValueError(f"not a host: {host!r}")
    return name, port


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host.strip("[]")).version == 6 else host
    except ValueError:
        return host


@dataclass(frozen=True)
class HostAllowlist:
    """The ``Host`` values the dashboard answers: name → its port (None: any port, for names added by ``--allow-host``)."""

    names: Mapping[str, int | None]

    @classmethod
    def of(cls, bind: str, port: int, extra: Iterable[str] = ()) -> HostAllowlist:
        """The loopback names and the bound address with ``port``, and ``extra`` names (``NAME`` any port, ``NAME:PORT``)."""
        names: dict[str, int | None] = {name: port for name in LOOPBACK_NAMES}
        if not is_wildcard(bind):
            names.setdefault(_bracketed(bind.lower()), port)
        for entry in extra:
            try:
                name, entry_port = _split_host(_bracketed(entry))
            except ValueError:
                raise ValueError(f"--allow-host {entry!r}: give a host name or address, optionally with :PORT") from None
            names[name] = entry_port
        return cls(names)

    def allows(self, host: str | None) -> bool:
        """Whether a request's ``Host`` header is one of these (no header: no)."""
        if not host:
            return False
        try:
            name, port = _split_host(host)
        except ValueError:
            return False
        if name not in self.names:
            return False
        wanted = self.names[name]
        return wanted is None or port == wanted or (port is None and wanted == 80)

    def describe(self) -> str:
        return ", ".join(f"{n}:{p}" if p is not None else f"{n} (any port)" for n, p in self.names.items())


# --- binding -------------------------------------------------------------------------------------------


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def binding_problem(host: str, public: bool) -> str | None:
    """Why the dashboard may not bind ``host`` (a non-loopback address without ``--public``), with the fix; None when it may."""
    if is_loopback(host) or public:
        return None
    return (
        f"--host {host} listens beyond this machine: anyone who can reach it may try tokens. "
        f"Fix: add --public to mean it (tokens are required on every data request either way; put TLS in front), "
        f"or keep the default --host 127.0.0.1"
    )


# --- response headers ---------------------------------------------------------------------------------


def frame_ancestors(origins: Iterable[str]) -> tuple[str, ...]:
    """Validated ``frame-ancestors`` sources (``https://app.example.com``, ``https://*.example.com``, ``'self'``)."""
    out = []
    for origin in origins:
        text = origin.strip().lower().rstrip("/")
        if text in ("self", "'self'"):
            out.append("'self'")
        elif _ORIGIN.match(text):
            out.append(text)
        else:
            raise ValueError(
                f"--frame-ancestors {origin!r}: give an origin such as https://app.example.com "
                "(scheme, host, optional port; no path)"
            )
    return tuple(out)


def content_security_policy(ancestors: Sequence[str] = ()) -> str:
    """The page's policy: its own scripts, styles and API only; framed only by ``ancestors`` (none by default)."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors {' '.join(ancestors) or chr(39) + 'none' + chr(39)}",
        ]
    )


def security_headers(ancestors: Sequence[str] = ()) -> dict[str, str]:
    """Headers of every response."""
    headers = {
        "Content-Security-Policy": content_security_policy(ancestors),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if not ancestors:
        headers["X-Frame-Options"] = "DENY"  # for browsers without CSP frame-ancestors
    return headers


# --- the whole -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What the dashboard checks, set up once per process.

    ``revocations`` is one long-lived :class:`~clickhouse.access.Revocations`: it re-reads the
    revocation list when the file changes, so ``metering token revoke`` applies at the next request.
    """

    key: SigningKey
    revocations: Revocations | None
    hosts: HostAllowlist
    ancestors: tuple[str, ...] = ()
    clock: Callable[[], float] = field(default=time.time)

    def claims(self, authorization: str | None) -> Claims:
        """The claims of the request's bearer token; :class:`~clickhouse.access.AccessDenied` (401) otherwise."""
        return verify(bearer(authorization), self.key, self.revocations, now=self.clock())

    def check_host(self, host: str | None) -> None:
        if not self.hosts.allows(host):
            raise HostRefused(
                f"Host {str(host)[:80]!r} is not a name of this dashboard; "
                "its operator can add one with `metering dashboard --allow-host NAME`"
            )

    def headers(self) -> dict[str, str]:
        return security_headers(self.ancestors)
