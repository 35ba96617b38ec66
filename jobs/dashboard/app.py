"""The local web dashboard: a JSON API over the dashboard questions, and one page that charts it.

Every answer comes from :mod:`clickhouse.queries` through a :class:`~clickhouse.queries.Reader`, so
the page shows exactly what ``metering query`` prints. Customer data is only served per customer:
the customer-scoped endpoints require ``customer`` and read views that cannot return another
customer's rows. The API is documented in docs/dashboards.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, render_template, request

from clickhouse import queries
from clickhouse.client import StorageError
from clickhouse.queries import QueryError, Reader, Scope

DEFAULT_REFRESH_S = 10


def _scope() -> Scope:
    args = request.args
    return Scope(
        customer=args.get("customer", ""),
        meter=args.get("meter", ""),
        start=queries.parse_time(args["from"], "from") if args.get("from") else None,
        end=queries.parse_time(args["to"], "to") if args.get("to") else None,
        granularity=args.get("granularity", "hour"),
    )


def _customer_scope(endpoint: str) -> Scope:
    scope = _scope()
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


def create_app(reader: Reader, *, refresh_s: int = DEFAULT_REFRESH_S, storage_label: str = "") -> Flask:
    """The dashboard app over ``reader`` (refresh_s: how often the page reloads its data)."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    def answer(produce: Callable[[], Any]) -> Response | tuple[Response, int]:
        try:
            return jsonify(produce())
        except QueryError as exc:
            return jsonify({"error": str(exc)}), 400
        except StorageError as exc:
            return jsonify({"error": str(exc)}), 503

    def _customer_rows(question: Callable[[Reader, Scope], list[dict[str, Any]]], endpoint: str) -> dict[str, Any]:
        scope = _customer_scope(endpoint)
        return {"customer": scope.customer, "rows": _rows(question(reader, scope))}

    @app.get("/")
    def index() -> str:
        return render_template("index.html", refresh_s=refresh_s, storage_label=storage_label)

    @app.get("/api/config")
    def config() -> Response | tuple[Response, int]:
        return answer(lambda: {"refresh_s": refresh_s, "granularities": list(queries.GRANULARITIES), "storage": storage_label})

    @app.get("/api/customers")
    def customers() -> Response | tuple[Response, int]:
        return answer(lambda: {"customers": queries.customers(reader)})

    @app.get("/api/usage")
    def usage() -> Response | tuple[Response, int]:
        return answer(lambda: _customer_rows(queries.usage, "usage"))

    @app.get("/api/periods")
    def periods() -> Response | tuple[Response, int]:
        return answer(lambda: _customer_rows(queries.periods, "periods"))

    @app.get("/api/finals")
    def finals() -> Response | tuple[Response, int]:
        return answer(lambda: _customer_rows(queries.finals, "finals"))

    @app.get("/api/series")
    def series() -> Response | tuple[Response, int]:
        return answer(lambda: series_payload(reader, _customer_scope("series")))

    @app.get("/api/health")
    def health() -> Response | tuple[Response, int]:
        return answer(lambda: queries.health(reader))

    return app
