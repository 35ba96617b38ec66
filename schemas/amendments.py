"""Amendments: records of the events topic that void an event, or amend its quantity, after it was sent.

An amendment names its target by ``(customer_id, event_id)``, the deduplication key, and carries
who asked for it, when and why (the audit trail)::

    {"amendment":"void","amendment_id":"amd_1","customer_id":"acme","event_id":"evt-9",
     "requested_at":"2026-03-02T08:00:00Z","requested_by":"key:billing-ops","reason":"test traffic"}
    {"amendment":"amend","amendment_id":"amd_2","customer_id":"acme","event_id":"evt-9",
     "quantity":"7.5","requested_at":"2026-03-02T08:01:00Z"}

A record with an ``amendment`` member is judged as an amendment, never as an event. This module
is the definition of a valid one, in the order its reasons apply; the job's Java reader
(``udfs/jvm``, EventRules) follows it and tests/unit/test_event_agreement.py feeds both the same
lines:

1. ``amendment`` is not ``"void"`` or ``"amend"``: ``bad_amendment``;
2. a required member is absent (``amendment_id``, ``customer_id``, ``event_id``, ``requested_at``,
   and ``quantity`` for ``amend``): ``missing_field``;
3. a member that is not in :data:`FIELDS` (or ``quantity`` in a void): ``unknown_field``;
4. ``schema_version`` other than the JSON integer 1: ``bad_schema_version``;
5. ``amendment_id`` (an event id's rule), ``requested_by`` (a string of at most
   :data:`MAX_REQUESTED_BY` code points) or ``reason`` (at most :data:`MAX_REASON`):
   ``bad_amendment``;
6. ``event_id``, ``customer_id``: ``bad_event_id``, ``bad_customer_id`` (the events' rules);
7. ``requested_at``, an event time's rule: ``bad_timestamp``;
8. ``quantity``, an event quantity's rule: ``bad_quantity``.

What the job then does with a valid amendment (apply it, or refuse it with ``unknown_event``,
``not_amendable``, ``already_voided``) is :mod:`udfs.amendments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

#: The member that makes a record an amendment, and its values.
AMENDMENT_FIELD = "amendment"
VOID = "void"
AMEND = "amend"
ACTIONS = (VOID, AMEND)

#: Every member an amendment may have.
FIELDS = (
    "amendment",
    "amendment_id",
    "customer_id",
    "event_id",
    "quantity",
    "requested_at",
    "requested_by",
    "reason",
    "schema_version",
)
REQUIRED = ("amendment_id", "customer_id", "event_id", "requested_at")

MAX_REQUESTED_BY = 128
MAX_REASON = 1024

#: The verdict on a valid amendment: not an event, not a dead letter at this stage.
VERDICT = "amendment"
#: The reason of an amendment that is malformed in a way no event field's reason names.
BAD_AMENDMENT = "bad_amendment"


@dataclass(frozen=True)
class Amendment:
    """A valid amendment. ``quantity`` (exact) and ``quantity_text`` (as written) are None for a void."""

    action: str
    amendment_id: str
    customer_id: str
    event_id: str
    requested_at: datetime
    quantity: Decimal | None = None
    quantity_text: str | None = None
    requested_by: str = ""
    reason: str = ""


def is_amendment(document: Any) -> bool:
    """Whether a decoded record is judged as an amendment: an object with an ``amendment`` member."""
    return isinstance(document, dict) and AMENDMENT_FIELD in document


def judge(document: dict[str, Any]) -> tuple[str | None, str, Amendment | None]:
    """(reason, message, amendment) of a decoded record for which :func:`is_amendment` holds; reason None when valid."""
    from schemas.validate import _QUANTITY, _number_text, event_time, string_rule

    action = document[AMENDMENT_FIELD]
    if action not in ACTIONS:
        return BAD_AMENDMENT, f"amendment must be one of {', '.join(ACTIONS)}, got {action!r}", None
    required = REQUIRED + (("quantity",) if action == AMEND else ())
    if missing := [name for name in required if name not in document]:
        return "missing_field", f"an amendment ({action}) needs {', '.join(missing)}", None
    allowed = FIELDS if action == AMEND else tuple(f for f in FIELDS if f != "quantity")
    if unknown := [name for name in document if name not in allowed]:
        return "unknown_field", f"an amendment ({action}) has no member {', '.join(unknown)}", None
    if "schema_version" in document and _number_text(document["schema_version"]) != "1":
        return "bad_schema_version", "schema_version must be the JSON integer 1", None
    amendment_id = document["amendment_id"]
    if not isinstance(amendment_id, str) or string_rule("event_id").problem(amendment_id) is not None:
        return BAD_AMENDMENT, "amendment_id follows an event id's rule: 1-128 characters, no control character", None
    requested_by = document.get("requested_by", "")
    if not isinstance(requested_by, str) or len(requested_by) > MAX_REQUESTED_BY:
        return BAD_AMENDMENT, f"requested_by is a string of at most {MAX_REQUESTED_BY} characters", None
    reason = document.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        return BAD_AMENDMENT, f"reason is a string of at most {MAX_REASON} characters", None
    event_id = document["event_id"]
    problem = string_rule("event_id").problem(event_id) if isinstance(event_id, str) else "event_id is a string"
    if problem is not None:
        return "bad_event_id", problem, None
    customer_id = document["customer_id"]
    problem = string_rule("customer_id").problem(customer_id) if isinstance(customer_id, str) else "customer_id is a string"
    if problem is not None:
        return "bad_customer_id", problem, None
    requested_at = document["requested_at"]
    try:
        when = event_time(requested_at if isinstance(requested_at, str) else "")
    except ValueError as exc:
        return "bad_timestamp", f"requested_at {requested_at!r} is not an event time: {exc}", None
    quantity_text: str | None = None
    if action == AMEND:
        quantity = document["quantity"]
        quantity_text = quantity if isinstance(quantity, str) else _number_text(quantity)
        if quantity_text is None or _QUANTITY.fullmatch(quantity_text) is None:
            return "bad_quantity", f"quantity {quantity!r} is not an exact decimal an event may carry", None
    return (
        None,
        "",
        Amendment(
            action=action,
            amendment_id=amendment_id,
            customer_id=customer_id,
            event_id=event_id,
            requested_at=when,
            quantity=Decimal(quantity_text) if quantity_text is not None else None,
            quantity_text=quantity_text,
            requested_by=requested_by,
            reason=reason,
        ),
    )
