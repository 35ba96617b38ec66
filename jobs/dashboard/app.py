"""The local web dashboard: a JSON API over the dashboard questions, and one page that charts it.

Every answer comes from :mod:`clickhouse.queries` through a :class:`~clickhouse.queries.Reader`, so
the page shows exactly what ``metering query`` prints. Who may read what is decided by the
request's bearer token (:mod:`jobs.dashboard.guard`, on the rules of :mod:`clickhouse.access`):

- before anything, the ``Host`` header must name this dashboard (400 otherwise);
- every endpoint but the page shell and its static files needs a valid token (401), checked
  before the view runs, so an endpoint added later is closed until it says otherwise;
- every named query runs through an :class:`~jobs.dashboard.guard.AuthorizedReader`: a customer
  token runs only its own customer's queries (403 otherwise) and sees only its meters' rows.

The API is documented in docs/dashboards.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request

from clickhouse import billing, queries
from clickhouse.access import AccessDenied, Claims
from clickhouse.client import StorageError
from clickhouse.queries import QueryError, Reader, Scope
from jobs.dashboard.guard import PUBLIC_ENDPOINTS, AuthorizedReader, Guard, HostRefused, checked_parameters
from udfs.alerting import AlertRule, combine, entitlement_of, quantize
from udfs.pricing import Rating

DEFAULT_REFRESH_S = 10
Answer = Response | tuple[Response, int]
RANGE = ("customer", "meter", "from", "to")


def _scope(parameters: Mapping[str, str]) -> Scope:
    return Scope(
        customer=parameters.get("customer", ""),
        meter=parameters.get("meter", ""),
        start=queries.parse_time(parameters["from"], "from") if parameters.get("from") else None,
        end=queries.parse_time(parameters["to"], "to") if parameters.get("to") else None,
        granularity=parameters.get("granularity", "hour"),
    )


def _customer_scope(parameters: Mapping[str, str], endpoint: str) -> Scope:
    scope = _scope(parameters)
    scope.require_customer(endpoint)
    return scope


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [queries.with_group_by(r) for r in rows]


def series_payload(reader: Reader, scope: Scope) -> dict[str, Any]:
    """Series grouped per (meter, group): points as [bucket, value] with values as exact decimal strings."""
    start, end = queries.series_range(reader, scope)
    rows = queries.series(reader, Scope(scope.customer, scope.meter, start, end, scope.granularity))
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["meter"], row["group_key"])
        if key not in lines:
            group_by = json.loads(row["group_key"] or "{}")
            lines[key] = {"meter": row["meter"], "group_by": group_by, "aggregation": row["aggregation"], "points": []}
        line = lines[key]
        line["points"].append([row["bucket"], row["value"], row["event_count"]])
    return {
        "customer": scope.customer,
        "granularity": scope.granularity,
        "from": queries.plain(start),
        "to": queries.plain(end),
        "series": list(lines.values()),
    }


def cost_payload(reader: Reader, scope: Scope, rating: Rating, rules: Sequence[AlertRule], at: datetime) -> dict[str, Any]:
    """The customer's current periods priced (as `metering query cost`), and each meter's use against its limit.

    A meter's limit is the entitlement of the ``entitlement_pct`` alert rules that watch it for the
    customer (the smallest); its use is its groups' quantities combined by the meter's aggregation.
    """
    if not rating.plans:
        return {"customer": scope.customer, "priced": False, "rows": [], "limits": []}
    rows = billing.cost(reader, rating, customer=scope.customer, meter=scope.meter, at=at)
    meters: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        meters.setdefault((row["meter"], row["period_start"]), []).append(row)
    limits = []
    for (meter, start), items in sorted(meters.items()):
        limit = entitlement_of(rules, scope.customer, meter)
        if limit is None:
            continue
        used = combine(items[0]["aggregation"], (Decimal(r["quantity"]) for r in items)) or Decimal(0)
        limits.append(
            {
                "meter": meter,
                "period_start": start,
                "period_end": items[0]["period_end"],
                "used": queries.plain(used),
                "limit": queries.plain(limit),
                "used_pct": f"{quantize(used * 100 / limit):f}",
                "is_final": all(r["is_final"] for r in items),
            }
        )
    return {"customer": scope.customer, "priced": True, "rows": _rows(rows), "limits": limits}


def _refusal(status: int, reason: str, message: str) -> tuple[Response, int]:
    response = jsonify({"error": message, "reason": reason})
    if status == 401:  # RFC 6750: no error code when the request had no token at all
        challenge = 'Bearer realm="metering"'
        if reason != "missing_token":
            challenge += f', error="invalid_token", error_description="{reason}"'
        response.headers["WWW-Authenticate"] = challenge
    return response, status


def create_app(
    reader: Reader,
    *,
    guard: Guard,
    refresh_s: int = DEFAULT_REFRESH_S,
    storage_label: str = "",
    rating: Rating | None = None,
    rules: Sequence[AlertRule] = (),
) -> Flask:
    """The dashboard app over ``reader``, its requests checked by ``guard`` (refresh_s: how often the page reloads its data;
    ``rating`` prices the cost panel, ``rules``' entitlements are its limits)."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.before_request
    def check_request() -> Answer | None:
        """The Host first (no answer at all to a foreign name), then a token for everything but the shell."""
        try:
            guard.check_host(request.headers.get("Host"))
        except HostRefused as exc:
            return _refusal(400, "unknown_host", str(exc))
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        try:
            g.claims = guard.claims(request.headers.get("Authorization"))
        except AccessDenied as exc:
            return _refusal(exc.status, exc.reason, str(exc))
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(guard.headers())
        if request.endpoint != "static" or response.status_code >= 400:  # data, refusals and the shell: never cached
            response.headers["Cache-Control"] = "no-store"
        return response

    def answer(produce: Callable[[Claims, Reader, dict[str, str]], Any], accepted: tuple[str, ...] = ()) -> Answer:
        """``produce``'s answer for the request's token and parameters (``accepted``: the ones it takes)."""
        claims: Claims = g.claims
        try:
            parameters = checked_parameters(claims, {k: request.args.getlist(k) for k in request.args}, accepted)
            return jsonify(produce(claims, AuthorizedReader(reader, claims), parameters))
        except AccessDenied as exc:
            return _refusal(exc.status, exc.reason, str(exc))
        except QueryError as exc:
            return _refusal(400, "bad_parameter", str(exc))
        except StorageError as exc:
            # The operator may see where the storage is; a customer is not told about the infrastructure.
            detail = str(exc) if claims.scope == "operator" else "the usage storage is unavailable; try again shortly"
            return _refusal(503, "storage_unavailable", detail)

    def customer_rows(question: Callable[[Reader, Scope], list[dict[str, Any]]], endpoint: str) -> Callable[..., Any]:
        def produce(claims: Claims, reader: Reader, parameters: dict[str, str]) -> dict[str, Any]:
            scope = _customer_scope(parameters, endpoint)
            return {"customer": scope.customer, "rows": _rows(question(reader, scope))}

        return produce

    def config_payload(claims: Claims, reader: Reader, parameters: dict[str, str]) -> dict[str, Any]:
        return {
            "refresh_s": refresh_s,
            "granularities": list(queries.GRANULARITIES),
            "storage": storage_label if claims.scope == "operator" else "",
            "access": {
                "scope": claims.scope,
                "customer": claims.customer,
                "meters": list(claims.meters) if claims.meters is not None else None,
                "expires_at": claims.expires_at,
            },
        }

    @app.get("/")
    def index() -> str:
        return render_template("index.html", refresh_s=refresh_s)

    @app.get("/api/config")
    def config() -> Answer:
        return answer(config_payload)

    @app.get("/api/customers")
    def customers() -> Answer:
        return answer(lambda claims, reader, parameters: {"customers": queries.customers(reader)})

    @app.get("/api/usage")
    def usage() -> Answer:
        return answer(customer_rows(queries.usage, "usage"), ("customer", "meter", "from"))

    @app.get("/api/periods")
    def periods() -> Answer:
        return answer(customer_rows(queries.periods, "periods"), RANGE)

    @app.get("/api/finals")
    def finals() -> Answer:
        return answer(customer_rows(queries.finals, "finals"), RANGE)

    @app.get("/api/series")
    def series() -> Answer:
        return answer(
            lambda claims, reader, parameters: series_payload(reader, _customer_scope(parameters, "series")),
            (*RANGE, "granularity"),
        )

    @app.get("/api/cost")
    def cost() -> Answer:
        return answer(
            lambda claims, reader, parameters: cost_payload(
                reader, _customer_scope(parameters, "cost"), rating or Rating(), rules, datetime.now(UTC)
            ),
            ("customer", "meter"),
        )

    @app.get("/api/health")
    def health() -> Answer:
        return answer(lambda claims, reader, parameters: queries.health(reader))

    return app
