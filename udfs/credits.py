"""Prepaid credits: grants burned down by invoiced cost, exactly (docs/pricing.md, "Prepaid credits").

The ledger is append-only: a :class:`Grant` adds credit, a :class:`Void` ends a grant at an
instant (what it had not covered by then is ``voided``). Cost arrives as :class:`CostLine`\\ s, one
per billing period: the period's invoice total (udfs/invoicing.py: its final totals plus the
corrections loaded while it ran), ``settled`` once the period is final, else ``pending`` (the
provisional cost of a period still running or in its grace window, which can still change).

Rules (each has a test in tests/unit/test_credits.py):

- **Instant of consumption**: a period's cost consumes credit at the period's end, the instant its
  invoice is cut. A grant covers it when ``effective_at < at <= end`` with ``end`` the earliest of
  its ``expires_at``, its void and, for ``rollover: period``, the end of the billing period it took
  effect in.
- **Rollover**: ``carry`` (the default): unused credit carries into the next periods until the
  grant expires or is voided; ``period``: unused credit lapses at the end of the billing period in
  which the grant took effect.
- **Order of burning**: settled lines first, then pending ones, each in order of their instant;
  per line the live grants in order of priority (smaller first), then earliest end (none last),
  then oldest ``effective_at``, then grant id. A grant never goes below zero; cost beyond the live
  credit is ``uncovered`` (invoiced as overage). A line's amount at or below zero consumes nothing.
- **As of** ``now``: grants effective after ``now`` and voids after ``now`` are not seen yet. A
  grant whose end is at or before ``now`` contributes its unused credit to ``expired`` (or
  ``voided``), never to ``remaining``.

So, per customer and exactly: ``granted == remaining + consumed + expired + voided`` (with
``consumed = consumed_settled + consumed_pending``; without voids the first law reads
``granted = remaining + consumed + expired``). Amounts are the invoices' rounded totals, so
balances stay in the currency's minor unit. Pure Python, no Flink imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from udfs.invoicing import CorrectionRecord, FinalTotal, build_invoice
from udfs.periods import BillingCycle, Period, as_utc, billing_period, from_epoch_millis, rfc3339_millis
from udfs.pricing import EXACT, ZERO, Rating

#: The priority a grant gets when none is given: smaller numbers burn first.
DEFAULT_PRIORITY = 10
MAX_PRIORITY = 65535
_HUNDRED = Decimal(100)


class Rollover(StrEnum):
    CARRY = "carry"  # unused credit carries into the next periods until it expires
    PERIOD = "period"  # unused credit lapses at the end of the billing period the grant took effect in


class Exhaustion(StrEnum):
    BLOCK = "block"  # over as soon as pending cost exceeds the credit
    OVERAGE = "overage"  # never over: cost beyond the credit is invoiced
    GRACE_PCT = "grace_pct"  # over when pending cost exceeds the credit by more than grace_pct percent of it


@dataclass(frozen=True)
class Grant:
    """A credit grant as the ledger holds it (amount in the currency of the customer's plan)."""

    grant_id: str
    customer: str
    amount: Decimal
    currency: str
    effective_at: datetime
    expires_at: datetime | None = None
    priority: int = DEFAULT_PRIORITY
    rollover: Rollover = Rollover.CARRY


@dataclass(frozen=True)
class Void:
    """A grant voided at an instant: it covers no consumption from then on."""

    grant_id: str
    voided_at: datetime


@dataclass(frozen=True)
class CostLine:
    """One period's invoiced cost (rounded total), consumed at ``at`` (the period's end); ``settled`` when final."""

    label: str
    at: datetime
    amount: Decimal
    settled: bool


@dataclass(frozen=True)
class GrantBalance:
    """What became of one grant as of ``now``: consumed (settled, pending), remaining, expired or voided."""

    grant: Grant
    end: datetime | None
    voided_at: datetime | None
    consumed_settled: Decimal
    consumed_pending: Decimal
    remaining: Decimal
    expired: Decimal
    voided: Decimal


@dataclass(frozen=True)
class Policy:
    """What happens when the credit runs out: ``block``, ``overage`` or ``grace_pct`` with ``percent``."""

    exhaustion: Exhaustion = Exhaustion.OVERAGE
    percent: Decimal | None = None

    def allowance(self, credit: Decimal) -> Decimal | None:
        """How much pending cost may go uncovered before the customer is over (None: no limit)."""
        if self.exhaustion is Exhaustion.OVERAGE:
            return None
        if self.exhaustion is Exhaustion.BLOCK:
            return ZERO
        return EXACT.divide(EXACT.multiply(credit, self.percent or ZERO), _HUNDRED)


@dataclass(frozen=True)
class Balance:
    """A customer's credit as of ``now`` (module docstring); ``remaining_settled`` ignores pending cost."""

    now: datetime
    granted: Decimal
    consumed_settled: Decimal
    consumed_pending: Decimal
    remaining_settled: Decimal
    remaining: Decimal
    expired: Decimal
    voided: Decimal
    uncovered_settled: Decimal
    uncovered_pending: Decimal
    grants: tuple[GrantBalance, ...]

    @property
    def consumed(self) -> Decimal:
        return EXACT.add(self.consumed_settled, self.consumed_pending)

    def over(self, policy: Policy) -> bool:
        """Whether the pending cost went beyond what ``policy`` allows over the credit left after settled cost."""
        allowance = policy.allowance(self.remaining_settled)
        return allowance is not None and self.uncovered_pending > allowance


def grant_end(grant: Grant, cycle: BillingCycle, voided_at: datetime | None = None) -> datetime | None:
    """The instant from which ``grant`` covers nothing: its expiry, its rollover period's end or its void."""
    ends = [as_utc(grant.expires_at)] if grant.expires_at is not None else []
    if grant.rollover is Rollover.PERIOD:
        ends.append(billing_period(grant.effective_at, cycle).end)
    if voided_at is not None:
        ends.append(as_utc(voided_at))
    return min(ends) if ends else None


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for value in values:
        total = EXACT.add(total, value)
    return total


def burn(
    grants: Sequence[Grant], voids: Sequence[Void], lines: Sequence[CostLine], cycle: BillingCycle, now: datetime
) -> Balance:
    """Apply ``lines`` to ``grants`` (module docstring): the balance as of ``now``, exactly.

    The result does not depend on the order in which ``grants``, ``voids`` or ``lines`` are given.
    :class:`ValueError` when two grants share an id (the ledger keeps ids unique).
    """
    now = as_utc(now)
    if len({g.grant_id for g in grants}) != len(grants):
        raise ValueError("two grants share an id: a grant id names one grant")
    seen = [g for g in grants if as_utc(g.effective_at) <= now]
    void_at: dict[str, datetime] = {}
    for void in voids:
        at = as_utc(void.voided_at)
        if at <= now and (void.grant_id not in void_at or at < void_at[void.grant_id]):
            void_at[void.grant_id] = at
    ends = {g.grant_id: grant_end(g, cycle, void_at.get(g.grant_id)) for g in seen}
    left = {g.grant_id: g.amount for g in seen}
    used = {(g.grant_id, s): ZERO for g in seen for s in (True, False)}
    uncovered = {True: ZERO, False: ZERO}
    far = datetime.max.replace(tzinfo=now.tzinfo)
    burn_order = sorted(
        seen,
        key=lambda g: (g.priority, ends[g.grant_id] or far, as_utc(g.effective_at), g.grant_id),
    )
    for line in sorted(lines, key=lambda x: (not x.settled, as_utc(x.at), x.label, x.amount)):
        need = line.amount
        if need <= ZERO:
            continue
        at = as_utc(line.at)
        for grant in burn_order:
            end = ends[grant.grant_id]
            if need <= ZERO or not (as_utc(grant.effective_at) < at and (end is None or at <= end)):
                continue
            take = min(need, left[grant.grant_id])
            if take > ZERO:
                left[grant.grant_id] = EXACT.subtract(left[grant.grant_id], take)
                used[grant.grant_id, line.settled] = EXACT.add(used[grant.grant_id, line.settled], take)
                need = EXACT.subtract(need, take)
        uncovered[line.settled] = EXACT.add(uncovered[line.settled], need)
    out: list[GrantBalance] = []
    for grant in sorted(seen, key=lambda g: g.grant_id):
        end, rest = ends[grant.grant_id], left[grant.grant_id]
        ended = end is not None and end <= now
        voided = grant.grant_id in void_at and ended and end == void_at[grant.grant_id]
        out.append(
            GrantBalance(
                grant,
                end,
                void_at.get(grant.grant_id),
                used[grant.grant_id, True],
                used[grant.grant_id, False],
                ZERO if ended else rest,
                rest if ended and not voided else ZERO,
                rest if voided else ZERO,
            )
        )
    settled_left = _settled_remaining(out, now)
    return Balance(
        now=now,
        granted=_sum(g.amount for g in seen),
        consumed_settled=_sum(b.consumed_settled for b in out),
        consumed_pending=_sum(b.consumed_pending for b in out),
        remaining_settled=settled_left,
        remaining=_sum(b.remaining for b in out),
        expired=_sum(b.expired for b in out),
        voided=_sum(b.voided for b in out),
        uncovered_settled=uncovered[True],
        uncovered_pending=uncovered[False],
        grants=tuple(out),
    )


def _settled_remaining(balances: Sequence[GrantBalance], now: datetime) -> Decimal:
    """The credit of the live grants with only settled cost taken off (pending cost given back)."""
    return _sum(EXACT.add(b.remaining, b.consumed_pending) for b in balances if b.end is None or b.end > now)


def customer_balance(
    grants: Sequence[Grant],
    voids: Sequence[Void],
    lines: Sequence[CostLine],
    cycle: BillingCycle,
    now: datetime,
    currency: str,
) -> Balance:
    """:func:`burn` of the grants in ``currency`` (the plan's): credit of another currency pays none of its invoices."""
    return burn([g for g in grants if g.currency == currency], voids, lines, cycle, now)


def period_cost_lines(
    customer: str,
    finals: Sequence[FinalTotal],
    running: Sequence[FinalTotal],
    corrections: Sequence[CorrectionRecord],
    rating: Rating,
    cycle: BillingCycle,
    now: datetime,
) -> list[CostLine]:
    """Per billing period of ``customer``, its invoice total (rounded), settled when every total is final and it ended.

    A period's cost is what udfs/invoicing.py invoices for it: its ``finals``, else the provisional
    ``running`` totals (one whose (meter, group, period) has a final is left out), and the
    ``corrections`` loaded while it ran (up to ``now``). A period with corrections loaded but no
    usage of its own counts too. Lines a card cannot price add nothing. The one rule both the
    store's balances (clickhouse/credits.py) and the alert evaluator's (jobs/alerts/) use.
    """
    now = as_utc(now)
    done = {(f.meter, f.group, f.period.start) for f in finals}
    own_running = [t for t in running if (t.meter, t.group, t.period.start) not in done]
    loaded = [c for c in corrections if as_utc(c.loaded_at) <= now]
    totals: dict[Period, list[tuple[FinalTotal, bool]]] = {}
    for total in finals:
        totals.setdefault(total.period, []).append((total, True))
    for total in own_running:
        totals.setdefault(total.period, []).append((total, False))
    for record in loaded:
        totals.setdefault(billing_period(record.loaded_at, cycle), [])
    lines = []
    for period, items in sorted(totals.items(), key=lambda kv: kv[0].start):
        settled = all(final for _, final in items) and now >= period.end
        own = [t for t, final in items if not final]
        invoice = build_invoice(customer, period, [*finals, *own], loaded, rating, as_of=now, is_final=settled)
        lines.append(CostLine(rfc3339_millis(period.start), period.end, invoice.rounded, settled))
    return lines


def ledger_entries(records: Iterable[Mapping[str, object]]) -> tuple[list[Grant], list[Void]]:
    """The grants and voids of ledger records (schemas/records.py ``CREDIT_LEDGER``): the topic's form of the ledger."""
    grants: list[Grant] = []
    voids: list[Void] = []
    for r in records:
        if r["action"] == "grant":
            expires = r.get("expires_at_ms")
            grants.append(
                Grant(
                    str(r["grant_id"]),
                    str(r["customer_id"]),
                    Decimal(str(r["amount"])),
                    str(r["currency"]),
                    from_epoch_millis(int(str(r["effective_at_ms"]))),
                    None if expires is None else from_epoch_millis(int(str(expires))),
                    int(str(r["priority"])),
                    Rollover(str(r["rollover"])),
                )
            )
        elif r["action"] == "void":
            voids.append(Void(str(r["grant_id"]), from_epoch_millis(int(str(r["effective_at_ms"])))))
    return grants, voids


@dataclass(frozen=True)
class CreditSettings:
    """``credits`` of the configuration: the exhaustion policy by default and per customer, the refresh cadence."""

    default: Policy = Policy()
    customers: Mapping[str, Policy] = field(default_factory=dict)
    #: How often ``metering credits refresh --every`` recomputes the balances by default.
    refresh_every: timedelta = timedelta(minutes=5)

    def policy_for(self, customer: str) -> Policy:
        return self.customers.get(customer, self.default)


def policy_problems(exhaustion: str, percent: Decimal | None) -> list[tuple[str, str]]:
    """What is wrong with an exhaustion policy as written, as (key, message) pairs; none when it is valid."""
    names = ", ".join(e.value for e in Exhaustion)
    if exhaustion not in {e.value for e in Exhaustion}:
        return [("exhaustion", f"{exhaustion!r} must be one of {names}")]
    if exhaustion == Exhaustion.GRACE_PCT:
        if percent is None:
            return [("grace_pct", "required with exhaustion: grace_pct (the percent of the credit usage may exceed it by)")]
        if not ZERO < percent <= _HUNDRED:
            return [("grace_pct", f"{percent:f} must be above 0 and at most 100 (a percent of the remaining credit)")]
    elif percent is not None:
        return [("grace_pct", f"applies to exhaustion: grace_pct only, not {exhaustion}")]
    return []


def explain(balance: Balance, currency: str, policy: Policy, minor_units: int = 2) -> str:
    """The balance as text (docs/pricing.md shows one): a line per grant in burn order, the totals and the policy.

    Amounts show the currency's ``minor_units`` digits (exactly: credit and invoiced totals have no finer digits).
    """
    from udfs.periods import rfc3339_millis

    unit = Decimal(1).scaleb(-minor_units)

    def money(value: Decimal) -> str:
        return f"{value.quantize(unit, context=EXACT):f}"

    far = datetime.max.replace(tzinfo=balance.now.tzinfo)
    rows: list[tuple[str, ...]] = [("grant", "priority", "ends", "settled", "pending", "remaining", "expired", "voided")]
    ordered = sorted(
        balance.grants, key=lambda b: (b.grant.priority, b.end or far, as_utc(b.grant.effective_at), b.grant.grant_id)
    )
    for b in ordered:
        ends = "" if b.end is None else rfc3339_millis(b.end) + (" (void)" if b.voided_at == b.end else "")
        amounts = (b.consumed_settled, b.consumed_pending, b.remaining, b.expired, b.voided)
        rows.append((b.grant.grant_id, str(b.grant.priority), ends, *(money(a) for a in amounts)))
    totals = (balance.consumed_settled, balance.consumed_pending, balance.remaining, balance.expired, balance.voided)
    rows.append(("total", "", "", *(money(a) for a in totals)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"credit as of {rfc3339_millis(balance.now)}: {money(balance.granted)} {currency} granted"]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in (0, 1, 2)] + [row[i].rjust(widths[i]) for i in range(3, len(row))]
        lines.append(("  " + "  ".join(cells)).rstrip())
    rule = policy.exhaustion.value + (f" {policy.percent:f}%" if policy.percent is not None else "")
    lines.append(
        f"remaining {money(balance.remaining_settled)} settled, {money(balance.remaining)} with pending cost; uncovered "
        f"{money(balance.uncovered_settled)} settled, {money(balance.uncovered_pending)} pending; {rule}: "
        + ("OVER" if balance.over(policy) else "within")
    )
    return "\n".join(lines) + "\n"
