"""Prepaid credits: the ledger (grant, void, list) and the balances ``metering credits refresh`` writes.

The ledger's source of truth is the ledger topic: :func:`grant` and :func:`void` check a new row
against the ledger as recorded there and publish it; the loader copies each record into
``credit_ledger`` (jobs/loader/loader.py ``credit_ledger_row``), which every read uses.
Reads go through a :class:`~clickhouse.queries.Reader` and named queries (``credit_ledger``,
``credits``, ``customer_periods``, ``customer_finals``, ``customer_corrections``), so a gateway
applies its access rule (clickhouse/access.py) as for every other question. Writes (a grant, a
void, the balances on an open :class:`~clickhouse.client.Storage`) are operator actions:
:func:`require_operator` refuses a customer token. The burn-down is udfs/credits.py; the cost it
burns is each period's invoice (udfs/invoicing.py) priced by the customer's rate cards.
"""

from __future__ import annotations

import getpass
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse.access import AccessDenied, AccessError, AccessSettings, verify
from clickhouse.client import Storage
from clickhouse.queries import EARLIEST, LATEST, QueryError, Reader, _ch_time, plain
from clickhouse.tables import BALANCE_COLUMNS
from schemas.validate import string_rule
from udfs.credits import (
    MAX_PRIORITY,
    Balance,
    CostLine,
    CreditSettings,
    Grant,
    Policy,
    Rollover,
    Void,
    customer_balance,
    period_cost_lines,
)
from udfs.invoicing import CorrectionRecord, FinalTotal
from udfs.periods import BillingCycle, Period, as_utc, from_epoch_millis
from udfs.pricing import Rating

_GRANT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")
#: The largest single grant: far above any contract, far inside Decimal(38, 9).
MAX_AMOUNT = Decimal("1000000000000")


class CreditError(ValueError):
    """A credit action that cannot be done as asked (the message names the option and the fix)."""


def require_operator(access: AccessSettings, what: str) -> str:
    """Who acts: refuse (:class:`AccessDenied`) a presented token that is not an operator's; ``token:<id>`` or
    ``local:<user>`` (the operating-system user who runs the command).

    Writes go to the ledger topic (grant, void) or the storage itself (refresh, as ``metering replay``):
    nothing crosses a gateway. A token in
    ``METERING__ACCESS__TOKEN`` is checked all the same, so a customer's token never grants or voids.
    """
    if not access.token:
        try:
            return f"local:{getpass.getuser()}"
        except (KeyError, OSError):  # no user name for this uid (a bare container)
            return "local"
    try:
        key = access.key()
    except AccessError as exc:
        raise AccessDenied("unverifiable_token", f"{what}: a token is presented but cannot be checked: {exc}") from None
    claims = verify(access.token, key, access.tokens().revocations)
    claims.require_operator(what)
    return f"token:{claims.jti}"


def _time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def currency_of(rating: Rating, customer: str) -> tuple[str, int]:
    """The currency and minor-unit digits of the customer's plan; :class:`CreditError` without a plan."""
    name = rating.plan_of(customer)
    plan = rating.plans.get(name) if name is not None else None
    if plan is None:
        raise CreditError(
            f"customer {customer!r} has no rating plan, so credit has no currency: set rating.default_plan or "
            f"rating.customers.{customer}.plan (docs/pricing.md)"
        )
    return plan.money.currency, plan.money.minor_units


def parse_amount(text: str, minor_units: int, currency: str) -> Decimal:
    """A grant's amount: written out, above 0, at most the currency's minor-unit digits."""
    if not _AMOUNT.fullmatch(text.strip()):
        raise CreditError(f"--amount={text!r}: a positive amount written out, e.g. 250.00")
    amount = Decimal(text.strip())
    if amount <= 0 or amount > MAX_AMOUNT:
        raise CreditError(f"--amount={text!r}: must be above 0 and at most {MAX_AMOUNT:f}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > minor_units:
        raise CreditError(f"--amount={text!r}: {currency} has {minor_units} minor-unit digit(s); no finer amounts")
    return amount.quantize(Decimal(1).scaleb(-minor_units))  # exact (no finer digits): 25 is shown 25.00


@dataclass(frozen=True)
class LedgerRow:
    """One row of ``credit_ledger``."""

    customer: str
    grant_id: str
    action: str
    amount: Decimal
    currency: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    rollover: str
    recorded_at: datetime
    recorded_by: str
    reason: str

    def values(self) -> list[Any]:
        """The row's values in ``LEDGER_COLUMNS`` order (the fields' order)."""
        return [getattr(self, f.name) for f in fields(self)]

    def record(self) -> dict[str, Any]:
        """The row as the ledger topic carries it (schemas/records.py ``CREDIT_LEDGER``)."""
        return {
            "customer_id": self.customer,
            "grant_id": self.grant_id,
            "action": self.action,
            "amount": f"{self.amount:f}",
            "currency": self.currency,
            "priority": self.priority,
            "effective_at_ms": _millis(self.effective_at),
            "expires_at_ms": None if self.expires_at is None else _millis(self.expires_at),
            "rollover": self.rollover,
            "recorded_at_ms": _millis(self.recorded_at),
            "recorded_by": self.recorded_by,
            "reason": self.reason,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LedgerRow:
        """A row from its ledger topic record (the inverse of :meth:`record`)."""
        expires = record.get("expires_at_ms")
        return cls(
            str(record["customer_id"]),
            str(record["grant_id"]),
            str(record["action"]),
            Decimal(str(record["amount"])),
            str(record["currency"]),
            int(record["priority"]),
            from_epoch_millis(int(record["effective_at_ms"])),
            None if expires is None else from_epoch_millis(int(expires)),
            str(record["rollover"]),
            from_epoch_millis(int(record["recorded_at_ms"])),
            str(record.get("recorded_by") or ""),
            str(record.get("reason") or ""),
        )


def _millis(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Records a ledger row on the ledger topic, the ledger's source of truth (the CLI's: acknowledged by every
#: in-sync replica before it returns; the loader copies it into ``credit_ledger``).
Publish = Callable[["LedgerRow"], None]


def _row(raw: dict[str, Any]) -> LedgerRow:
    effective = _time(raw["effective_at"])
    recorded = _time(raw["recorded_at"])
    assert effective is not None and recorded is not None
    return LedgerRow(
        raw["customer_id"],
        raw["grant_id"],
        raw["action"],
        Decimal(raw["amount"]),
        raw["currency"],
        int(raw["priority"]),
        effective,
        _time(raw["expires_at"]),
        raw["rollover"],
        recorded,
        raw["recorded_by"],
        raw["reason"],
    )


def ledger(reader: Reader, customer: str = "") -> list[LedgerRow]:
    """The ledger's rows (one customer's, or with ``''`` everyone's), oldest first."""
    return [_row(r) for r in reader.run("credit_ledger", {"customer": customer})]


def grants_of(rows: Sequence[LedgerRow]) -> tuple[list[Grant], list[Void]]:
    """The grants and voids of ledger rows, as udfs/credits.py takes them."""
    grants = [
        Grant(r.grant_id, r.customer, r.amount, r.currency, r.effective_at, r.expires_at, r.priority, Rollover(r.rollover))
        for r in rows
        if r.action == "grant"
    ]
    voids = [Void(r.grant_id, r.effective_at) for r in rows if r.action == "void"]
    return grants, voids


def _insert(storage: Storage, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
    storage.client.insert(table, [list(r) for r in rows], column_names=columns)


def new_grant_id() -> str:
    """A random grant id (``cr_`` and 16 hex digits)."""
    return f"cr_{secrets.token_hex(8)}"


def grant(
    rating: Rating,
    recorded: Sequence[LedgerRow],
    *,
    customer: str,
    amount: str,
    priority: int,
    effective_at: datetime,
    expires_at: datetime | None,
    rollover: Rollover,
    reason: str,
    recorded_by: str,
    now: datetime,
    publish: Publish,
    grant_id: str | None = None,
) -> LedgerRow:
    """Record a grant: one ledger row, published; :class:`CreditError` for a grant that cannot be made as asked.

    ``recorded``: the ledger as it is (the CLI reads the ledger topic to its end), where the grant id must be new.
    """
    problem = string_rule("customer_id").problem(customer)
    if problem is not None:
        raise CreditError(f"--customer={customer!r}: {problem}")
    currency, minor_units = currency_of(rating, customer)
    value = parse_amount(amount, minor_units, currency)
    if not 0 <= priority <= MAX_PRIORITY:
        raise CreditError(f"--priority={priority}: from 0 (burns first) to {MAX_PRIORITY}")
    if expires_at is not None and expires_at <= effective_at:
        raise CreditError(f"--expires={plain(expires_at)}: must be after the grant takes effect ({plain(effective_at)})")
    if not reason.strip():
        raise CreditError("--reason: say why the credit is granted (recorded in the ledger)")
    gid = grant_id or new_grant_id()
    if not _GRANT_ID.match(gid):
        raise CreditError(f"--grant-id={gid!r}: 1 to 64 letters, digits, '_', '.', ':' or '-'")
    if any(r.grant_id == gid for r in recorded):  # unique across customers: a void names the id alone
        raise CreditError(f"--grant-id={gid!r}: a grant of that id exists (`metering credits list`)")
    row = LedgerRow(
        customer, gid, "grant", value, currency, priority, effective_at, expires_at, rollover.value, now, recorded_by, reason
    )
    publish(row)
    return row


def void(
    recorded: Sequence[LedgerRow], *, grant_id: str, reason: str, at: datetime, recorded_by: str, now: datetime, publish: Publish
) -> LedgerRow:
    """Void a grant from ``at`` on: a new ledger row, published; :class:`CreditError` for a grant ``recorded`` (the
    ledger as it is) does not hold or holds voided already."""
    if not reason.strip():
        raise CreditError("--reason: say why the grant is voided (recorded in the ledger)")
    rows = [r for r in recorded if r.grant_id == grant_id]
    granted = [r for r in rows if r.action == "grant"]
    if not granted:
        raise CreditError(f"no grant {grant_id!r} in the ledger (`metering credits list` shows them)")
    if any(r.action == "void" for r in rows):
        raise CreditError(f"grant {grant_id!r} is already voided")
    if at < granted[0].effective_at:
        raise CreditError(f"--at={plain(at)}: before the grant took effect ({plain(granted[0].effective_at)})")
    g = granted[0]
    row = LedgerRow(
        g.customer, grant_id, "void", Decimal(0), g.currency, g.priority, at, None, g.rollover, now, recorded_by, reason
    )
    publish(row)
    return row


# --- the cost that burns the credit -----------------------------------------------------------------------


def cost_lines(reader: Reader, rating: Rating, cycle: BillingCycle, customer: str, now: datetime) -> list[CostLine]:
    """Per billing period of ``customer``, its invoice total (rounded), settled when every total is final and it ended.

    The store's totals and corrections, costed by :func:`udfs.credits.period_cost_lines` (the rule
    the alert evaluator applies to its own period states too).
    """
    window = {"customer": customer, "meter": "", "from": _ch_time(EARLIEST), "to": _ch_time(LATEST)}
    finals = [_total(r) for r in reader.run("customer_finals", window)]
    running = [_total(r) for r in reader.run("customer_periods", window) if r["status"] != "final"]
    records = [
        CorrectionRecord(
            r["meter"],
            r["group_key"],
            r["aggregation"],
            Period(_need(r["period_start"]), _need(r["period_end"])),
            int(r["sign"]),
            Decimal(r["value"]),
            _need(r["loaded_at"]),
        )
        for r in reader.run(
            "customer_corrections",
            {"customer": customer, "meter": "", "loaded_before": _ch_time(now + timedelta(milliseconds=1))},
        )
    ]
    return period_cost_lines(customer, finals, running, records, rating, cycle, now)


def _total(row: dict[str, Any]) -> FinalTotal:
    period = Period(_need(row["period_start"]), _need(row["period_end"]))
    return FinalTotal(row["meter"], row["group_key"], row["aggregation"], period, Decimal(row["total"]))


def _need(text: str) -> datetime:
    moment = _time(text)
    assert moment is not None
    return moment


def balance_of(
    reader: Reader, rating: Rating, cycle: BillingCycle, customer: str, now: datetime
) -> tuple[str, Balance, list[CostLine]]:
    """The customer's currency, credit balance as of ``now`` and the cost lines it burned (``cycle``: its billing periods)."""
    currency, _ = currency_of(rating, customer)
    grants, voids = grants_of(ledger(reader, customer))
    lines = cost_lines(reader, rating, cycle, customer, now)
    return currency, customer_balance(grants, voids, lines, cycle, now, currency), lines


def balance_row(
    customer: str, currency: str, balance: Balance, lines: Sequence[CostLine], policy: Policy, now: datetime
) -> list[Any]:
    """The ``credit_balances`` row of a balance (BALANCE_COLUMNS)."""
    live = [b for b in balance.grants if b.end is None or b.end > balance.now]
    ends = [b.end for b in live if b.end is not None and b.remaining > 0]
    settled = [x.at for x in lines if x.settled]
    return [
        customer,
        currency,
        balance.now,
        balance.granted,
        balance.consumed_settled,
        balance.consumed_pending,
        balance.remaining_settled,
        balance.remaining,
        balance.expired,
        balance.voided,
        balance.uncovered_settled,
        balance.uncovered_pending,
        policy.exhaustion.value,
        policy.percent,
        1 if balance.over(policy) else 0,
        len(live),
        min(ends) if ends else None,
        max(settled) if settled else None,
        now,
    ]


def refresh(
    storage: Storage,
    rating: Rating,
    cycle_of: Callable[[str], BillingCycle],
    settings: CreditSettings,
    *,
    at: datetime,
    customers: Sequence[str] = (),
    now: datetime,
) -> list[list[Any]]:
    """Compute and write the balances as of ``at``: of ``customers``, else of every customer in the ledger or in
    ``credits.customers``. Returns the rows written (BALANCE_COLUMNS)."""
    from clickhouse.queries import StorageReader

    reader = StorageReader(storage)
    names = list(customers) or sorted({r.customer for r in ledger(reader)} | set(settings.customers))
    out = []
    for customer in names:
        try:
            currency, balance, lines = balance_of(reader, rating, cycle_of(customer), customer, at)
        except CreditError as exc:
            raise QueryError(str(exc)) from None
        out.append(balance_row(customer, currency, balance, lines, settings.policy_for(customer), now))
    if out:
        _insert(storage, "credit_balances", out, BALANCE_COLUMNS)
    return out
