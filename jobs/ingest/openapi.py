"""The OpenAPI 3 document of the ingestion API, served at ``/openapi.json``.

tests/unit/test_ingest_app.py holds it to the application: the same paths and methods as its
routes, and every status a route answers with documented for it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jobs.ingest.amend import ACTIONS, ID_PREFIX, MAX_BODY_BYTES, NOTE, REQUESTED_BY_PREFIX
from jobs.ingest.bodies import API_REASONS, CLOUDEVENT_FIELDS, FORMATS
from schemas.amendments import MAX_REASON
from schemas.validate import REASONS, schema_v1


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
    return response


@cache
def document() -> dict[str, Any]:
    event = {k: v for k, v in schema_v1().items() if k not in ("$schema", "$id")}
    cloudevent = {
        "type": "object",
        "description": "A CloudEvent 1.0 (structured mode). Mapping: "
        + ", ".join(f"{a} -> {f}" for a, f in CLOUDEVENT_FIELDS.items())
        + "; data (an object) holds quantity and the event's other fields.",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string"},
            "subject": {"type": "string"},
            "time": {"type": "string"},
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object"},
        },
    }
    json_body = {
        "oneOf": [
            {"$ref": "#/components/schemas/UsageEvent"},
            {"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/UsageEvent"}},
        ]
    }
    content = {
        "application/json": {"schema": json_body},
        "application/x-ndjson": {"schema": {"type": "string", "description": "one usage event per line"}},
        "application/jsonl": {"schema": {"type": "string", "description": "one usage event per line"}},
        "application/cloudevents+json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
        "application/cloudevents-batch+json": {
            "schema": {"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/CloudEvent"}}
        },
    }
    assert set(content) == set(FORMATS)
    result = {
        "type": "object",
        "required": ["index", "status"],
        "properties": {
            "index": {"type": "integer", "description": "the event's position in the request, from 0"},
            "status": {"enum": ["accepted", "rejected", "failed"]},
            "reason": {"enum": [*REASONS, *API_REASONS], "description": "with rejected: the dead letters' reason code"},
            "message": {"type": "string"},
        },
    }
    verdicts = {
        "type": "object",
        "required": ["accepted", "rejected", "failed", "results"],
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "failed": {"type": "integer"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
            "error": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    status = {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "kafka": {"enum": ["reachable", "unreachable", "unknown"], "description": "/healthz: Kafka as last seen"},
            "kafka_problem": {"type": "string"},
            "kafka_since": {"type": "number", "description": "Unix seconds"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metering ingestion API",
            "version": "1",
            "description": "Send usage events over HTTP (docs/ingest.md). Every request may be retried: the job drops "
            "duplicates (same customer_id and event_id) within its dedup retention.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "`metering keys create`"}},
            "schemas": {
                "UsageEvent": event,
                "CloudEvent": cloudevent,
                "Result": result,
                "Verdicts": verdicts,
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Status": status,
                **_amendment_schemas(),
            },
        },
        "paths": {
            **{f"/v1/events/{{event_id}}/{action}": _amendment_path(action) for action in ACTIONS},
            "/v1/events": {
                "post": {
                    "summary": "Send one event or a batch; each event's verdict in request order",
                    "security": [{"apiKey": []}],
                    "parameters": [
                        {"name": "Content-Encoding", "in": "header", "schema": {"enum": ["gzip", "identity"]}},
                    ],
                    "requestBody": {"required": True, "content": content},
                    "responses": {
                        "200": {
                            "description": "every event judged; the accepted ones are acknowledged by Kafka",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Verdicts"}}},
                        },
                        "400": _error("the body is not what its Content-Type says, bad gzip, or no event"),
                        "401": _error("no valid API key (missing, unknown or revoked)"),
                        "413": _error("more events or bytes than the limits"),
                        "415": _error("a Content-Type or Content-Encoding the API does not take"),
                        "429": _error("this key's rate limit is exceeded", retry_after=True),
                        "503": {
                            "description": "Kafka did not acknowledge every accepted event, or the service is overloaded "
                            "(ingest.max_in_flight) or shutting down, or its producer failed (`producer_failed`: the process "
                            "must be restarted): send the whole request again after Retry-After",
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Verdicts"},
                                            {"$ref": "#/components/schemas/Error"},
                                        ]
                                    }
                                }
                            },
                        },
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "the process is up and its Kafka producer can write (Kafka itself: /readyz)",
                    "responses": {
                        "200": {
                            "description": "up; `kafka` says how Kafka was last seen",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                        },
                        "503": {
                            "description": "the producer failed for good (a fatal error, or closed): restart the process",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                        },
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Kafka is reachable and the service takes events",
                    "responses": {
                        "200": {
                            "description": "ready",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                        },
                        "503": {
                            "description": "Kafka unreachable, or shutting down",
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {
                        "200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}
                    },
                }
            },
        },
    }


def _amendment_schemas() -> dict[str, Any]:
    """The request and answer bodies of ``POST /v1/events/{event_id}/void`` and ``/amend`` (jobs/ingest/amend.py)."""
    customer = {"type": "string", "description": "the event's customer_id (the key must send for it)"}
    reason = {"type": "string", "maxLength": MAX_REASON, "description": "why (kept in the record's audit trail)"}
    quantity = {
        "oneOf": [{"type": "string"}, {"type": "number"}],
        "description": "the event's new quantity, an exact decimal as events carry it (a string, or a JSON number "
        "written without an exponent); it replaces what the event counted",
    }
    return {
        "VoidRequest": {
            "type": "object",
            "required": ["customer_id"],
            "additionalProperties": False,
            "properties": {"customer_id": customer, "reason": reason},
        },
        "AmendRequest": {
            "type": "object",
            "required": ["customer_id", "quantity"],
            "additionalProperties": False,
            "properties": {"customer_id": customer, "quantity": quantity, "reason": reason},
        },
        "AmendmentAccepted": {
            "type": "object",
            "required": ["status", "action", "amendment_id", "event_id", "customer_id", "requested_at", "requested_by"],
            "properties": {
                "status": {"const": "accepted"},
                "action": {"enum": list(ACTIONS)},
                "amendment_id": {"type": "string", "description": f"the Idempotency-Key, or a new {ID_PREFIX}… id"},
                "event_id": {"type": "string"},
                "customer_id": {"type": "string"},
                "requested_at": {"type": "string", "format": "date-time", "description": "the service's clock"},
                "requested_by": {"type": "string", "description": f"{REQUESTED_BY_PREFIX} and the API key's id"},
                "note": {"type": "string"},
            },
        },
        "AmendmentRejected": {
            "type": "object",
            "required": ["error", "status", "reason", "message"],
            "properties": {
                "error": {"type": "string", "description": "the reason code, as reason"},
                "status": {"const": "rejected"},
                "reason": {
                    "type": "string",
                    "description": "the dead letters' reason code of an amendment (schemas/amendments.py), or "
                    "customer_not_allowed",
                },
                "message": {"type": "string"},
            },
        },
    }


def _amendment_path(action: str) -> dict[str, Any]:
    """The operation of one action: every status it answers with."""
    rejected = {"application/json": {"schema": {"$ref": "#/components/schemas/AmendmentRejected"}}}
    body = "VoidRequest" if action == "void" else "AmendRequest"
    what = "Void an event: take back what it counted" if action == "void" else "Amend an event's quantity"
    return {
        "post": {
            "summary": f"{what} (an amendment record, judged by the job)",
            "description": NOTE,
            "security": [{"apiKey": []}],
            "parameters": [
                {
                    "name": "event_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "description": "the event's event_id, percent-encoded as one path segment (every reserved "
                    "character, / included; . and .. as %2E and %2E%2E)",
                },
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "description": "the amendment_id (an event id's rule); send the same one in every retry",
                },
                {"name": "Content-Encoding", "in": "header", "schema": {"enum": ["gzip", "identity"]}},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
            },
            "responses": {
                "202": {
                    "description": "written to the events topic and acknowledged by Kafka; the job decides the outcome",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AmendmentAccepted"}}},
                },
                "400": _error("the body is not one JSON object, or bad gzip"),
                "401": _error("no valid API key (missing, unknown or revoked)"),
                "403": {"description": "customer_not_allowed: the key sends for other customers", "content": rejected},
                "413": _error(f"a body of more than {MAX_BODY_BYTES} bytes"),
                "415": _error("a Content-Type other than application/json, or a Content-Encoding the API does not take"),
                "422": {
                    "description": "the amendment is not valid (the job would refuse it): the reason code, as its dead "
                    "letter would carry it (missing_field, unknown_field, bad_amendment, bad_event_id, "
                    "bad_customer_id, bad_quantity …)",
                    "content": rejected,
                },
                "429": _error("this key's rate limit is exceeded", retry_after=True),
                "503": _error(
                    "Kafka did not acknowledge the amendment (the body also carries amendment_id), or the service is "
                    "overloaded or shutting down: send it again after Retry-After with the same Idempotency-Key",
                    retry_after=True,
                ),
            },
        }
    }
