"""udfs/credits.py: burn-down order, the instant of consumption, rollover, voids, and the laws it keeps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.credits import Balance, CostLine, Exhaustion, Grant, Policy, Rollover, Void, burn
from udfs.periods import BillingCycle

D = Decimal
Z = Decimal(0)
UTCM = BillingCycle()  # calendar months in UTC


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def grant(
    gid: str, amount: str, effective: str, *, expires: str | None = None, priority: int = 10, rollover: str = "carry"
) -> Grant:
    return Grant(gid, "acme", D(amount), "USD", t(effective), t(expires) if expires else None, priority, Rollover(rollover))


def line(month: str, amount: str, settled: bool = True) -> CostLine:
    """A month's cost, consumed at the month's end."""
    start = t(f"{month}-01")
    end = (start + timedelta(days=32)).replace(day=1)
    return CostLine(month, end, D(amount), settled)


def by_id(balance: Balance) -> dict[str, tuple[Decimal, Decimal, Decimal, Decimal, Decimal]]:
    return {b.grant.grant_id: (b.consumed_settled, b.consumed_pending, b.remaining, b.expired, b.voided) for b in balance.grants}


def conserved(balance: Balance) -> bool:
    return balance.granted == balance.remaining + balance.consumed + balance.expired + balance.voided


# --- the rules, by example ------------------------------------------------------------------------------


def test_priority_then_earliest_expiry_then_oldest_burns_first() -> None:
    grants = [
        grant("a-old", "10.00", "2026-01-01"),
        grant("b-new", "10.00", "2026-01-15"),
        grant("c-expiring", "10.00", "2026-01-20", expires="2026-06-01"),
        grant("d-urgent", "5.00", "2026-01-25", priority=1),
    ]
    balance = burn(grants, [], [line("2026-02", "22.00")], UTCM, t("2026-03-02"))
    # priority 1 first (5), then the one that expires (10), then the oldest of the rest (7 of 10)
    assert by_id(balance) == {
        "d-urgent": (D("5.00"), Z, Z, Z, Z),
        "c-expiring": (D("10.00"), Z, Z, Z, Z),
        "a-old": (D("7.00"), Z, D("3.00"), Z, Z),
        "b-new": (Z, Z, D("10.00"), Z, Z),
    }
    assert (balance.remaining, balance.uncovered_settled) == (D("13.00"), Z)


def test_a_grant_covers_the_periods_that_end_after_it_takes_effect() -> None:
    balance = burn(
        [grant("g", "50.00", "2026-03-10")], [], [line("2026-02", "20.00"), line("2026-03", "30.00")], UTCM, t("2026-04-02")
    )
    # February's invoice was cut on 1 March, before the grant: overage; March's is covered
    assert (balance.uncovered_settled, balance.consumed_settled, balance.remaining) == (D("20.00"), D("30.00"), D("20.00"))


def test_settled_and_pending_split_and_the_policy() -> None:
    grants = [grant("g", "100.00", "2026-01-01")]
    lines = [line("2026-02", "60.00"), line("2026-03", "45.00", settled=False)]
    balance = burn(grants, [], lines, UTCM, t("2026-03-20"))
    assert (balance.consumed_settled, balance.consumed_pending) == (D("60.00"), D("40.00"))
    assert (balance.remaining_settled, balance.remaining, balance.uncovered_pending) == (D("40.00"), Z, D("5.00"))
    assert balance.over(Policy(Exhaustion.BLOCK))
    assert not balance.over(Policy(Exhaustion.OVERAGE))
    assert not balance.over(Policy(Exhaustion.GRACE_PCT, D("12.5")))  # 5.00 == 12.5% of 40.00: not beyond it
    assert balance.over(Policy(Exhaustion.GRACE_PCT, D("12.4")))


def test_a_grant_voided_after_partial_use() -> None:
    grants = [grant("g", "100.00", "2026-01-01"), grant("h", "10.00", "2026-01-02")]
    voids = [Void("g", t("2026-03-10"))]
    lines = [line("2026-02", "30.00"), line("2026-03", "25.00", settled=False)]
    balance = burn(grants, voids, lines, UTCM, t("2026-03-20"))
    # February took 30 of g; g is voided before March's end: March's pending cost goes to h, 15 uncovered
    assert by_id(balance) == {"g": (D("30.00"), Z, Z, Z, D("70.00")), "h": (Z, D("10.00"), Z, Z, Z)}
    assert (balance.uncovered_pending, balance.voided) == (D("15.00"), D("70.00"))
    before = burn(grants, voids, lines, UTCM, t("2026-03-09"))  # the void is not in the ledger yet
    assert by_id(before)["g"] == (D("30.00"), D("25.00"), D("45.00"), Z, Z)
    assert conserved(balance) and conserved(before)


def test_expiry_inside_a_period() -> None:
    grants = [grant("short", "40.00", "2026-01-01", expires="2026-03-15"), grant("long", "40.00", "2026-01-01")]
    lines = [line("2026-02", "10.00"), line("2026-03", "20.00")]
    balance = burn(grants, [], lines, UTCM, t("2026-04-02"))
    # February (cut 1 March) burns the earlier-expiring grant; it expires before March's invoice is cut
    assert by_id(balance) == {"short": (D("10.00"), Z, Z, D("30.00"), Z), "long": (D("20.00"), Z, D("20.00"), Z, Z)}
    assert conserved(balance)


def test_rollover_period_lapses_at_the_end_of_its_period() -> None:
    grants = [grant("monthly", "25.00", "2026-03-05", rollover="period"), grant("carry", "25.00", "2026-03-05")]
    lines = [line("2026-03", "10.00"), line("2026-04", "10.00")]
    balance = burn(grants, [], lines, UTCM, t("2026-05-02"))
    # the monthly grant ends with March (same end as March's invoice: it covers it), then lapses
    assert by_id(balance) == {"monthly": (D("10.00"), Z, Z, D("15.00"), Z), "carry": (D("10.00"), Z, D("15.00"), Z, Z)}


def test_negative_cost_consumes_nothing_and_future_grants_are_not_seen() -> None:
    grants = [grant("g", "10.00", "2026-01-01"), grant("later", "99.00", "2026-06-01")]
    balance = burn(grants, [], [line("2026-02", "-3.00")], UTCM, t("2026-03-02"))
    assert (balance.granted, balance.remaining, balance.consumed) == (D("10.00"), D("10.00"), Z)


# --- the laws, for any ledger and any cost ----------------------------------------------------------------

MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]
cents = st.integers(min_value=0, max_value=50_000).map(lambda c: D(c).scaleb(-2))
days = st.integers(min_value=0, max_value=360)
BASE = t("2026-01-01")


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[list[Grant], list[Void], list[CostLine], datetime]:
    grants, voids = [], []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        effective = BASE + timedelta(days=draw(days))
        lasts = draw(st.none() | days)
        expires = None if lasts is None else effective + timedelta(days=lasts + 1)
        grants.append(
            Grant(
                f"g{i}",
                "acme",
                draw(cents),
                "USD",
                effective,
                expires,
                draw(st.integers(min_value=0, max_value=3)),
                draw(st.sampled_from(list(Rollover))),
            )
        )
        if draw(st.booleans()):
            voids.append(Void(f"g{i}", effective + timedelta(days=draw(days))))
    settled_until = draw(st.integers(min_value=0, max_value=12))
    lines = [line(m, str(draw(cents)), settled=i < settled_until) for i, m in enumerate(MONTHS) if draw(st.booleans())]
    now = BASE + timedelta(days=draw(days))
    return grants, voids, lines, now


@settings(max_examples=300, deadline=None)
@given(ledgers())
def test_conservation_and_never_below_zero(ledger: tuple[list[Grant], list[Void], list[CostLine], datetime]) -> None:
    grants, voids, lines, now = ledger
    balance = burn(grants, voids, lines, UTCM, now)
    assert conserved(balance)
    for b in balance.grants:
        parts = (b.consumed_settled, b.consumed_pending, b.remaining, b.expired, b.voided)
        assert all(p >= 0 for p in parts) and sum(parts) == b.grant.amount
    cost = sum((x.amount for x in lines if x.amount > 0), D(0))
    assert balance.consumed + balance.uncovered_settled + balance.uncovered_pending == cost
    assert balance.remaining_settled >= balance.remaining


@settings(max_examples=200, deadline=None)
@given(ledgers(), st.randoms(use_true_random=False))
def test_the_order_of_the_inputs_does_not_matter(
    ledger: tuple[list[Grant], list[Void], list[CostLine], datetime], shuffler: random.Random
) -> None:
    grants, voids, lines, now = ledger
    first = burn(grants, voids, lines, UTCM, now)
    for items in (grants, voids, lines):
        shuffler.shuffle(items)
    assert burn(grants, voids, lines, UTCM, now) == first


@settings(max_examples=200, deadline=None)
@given(ledgers(), st.integers(min_value=0, max_value=11), cents)
def test_more_usage_never_raises_a_balance(
    ledger: tuple[list[Grant], list[Void], list[CostLine], datetime], month: int, extra: Decimal
) -> None:
    grants, voids, lines, now = ledger
    before = burn(grants, voids, lines, UTCM, now)
    grown = [x if x.label != MONTHS[month] else CostLine(x.label, x.at, x.amount + extra, x.settled) for x in lines]
    if all(x.label != MONTHS[month] for x in lines):
        grown.append(line(MONTHS[month], str(extra), settled=False))
    after = burn(grants, voids, grown, UTCM, now)
    assert after.remaining <= before.remaining and after.remaining_settled <= before.remaining_settled
    assert all(a.remaining <= b.remaining for a, b in zip(after.grants, before.grants, strict=True))
    assert after.uncovered_settled + after.uncovered_pending >= before.uncovered_settled + before.uncovered_pending


# --- the worked example of docs/pricing.md ---------------------------------------------------------------


def test_the_worked_example_of_the_docs() -> None:
    """The grants and invoices of docs/pricing.md's "Prepaid credits" (the invoices of its worked example)."""
    import re

    from infra.settings import PROJECT_ROOT
    from udfs.credits import explain

    grants = [
        grant("g1", "50.00", "2026-01-15"),
        grant("g2", "80.00", "2026-02-10", expires="2026-04-15", priority=5),
        grant("g3", "30.00", "2026-03-05", rollover="period"),
        grant("g4", "20.00", "2026-01-20"),
    ]
    lines = [line("2026-02", "9.00"), line("2026-03", "99.41"), line("2026-04", "9.00"), line("2026-05", "28.00", False)]
    balance = burn(grants, [Void("g4", t("2026-04-20"))], lines, UTCM, t("2026-05-11"))
    page = (PROJECT_ROOT / "docs" / "pricing.md").read_text()
    block = re.search(r"```text\n\$ metering credits show --customer acme --at 2026-05-11T00:00:00Z\n(.*?)```", page, re.S)
    assert block is not None
    assert explain(balance, "USD", Policy(Exhaustion.GRACE_PCT, D("10"))) == block.group(1)
    assert conserved(balance)


# --- who may read a balance ------------------------------------------------------------------------------


def test_the_credit_queries_are_customer_scoped_and_refuse_meter_scoped_tokens() -> None:
    import pytest

    from clickhouse.access import AccessDenied, Claims, authorize_query

    acme = Claims("j" * 16, "customer", 0, 10**10, customer="acme")
    acme_tokens = Claims("k" * 16, "customer", 0, 10**10, customer="acme", meters=("tokens",))
    operator = Claims("o" * 16, "operator", 0, 10**10)
    for name in ("credits", "credit_ledger"):
        authorize_query(acme, name, {"customer": "acme"})
        authorize_query(operator, name, {"customer": ""})
        for claims, parameters, reason in (
            (acme, {"customer": "globex"}, "wrong_customer"),
            (acme, {"customer": ""}, "wrong_customer"),
            (acme_tokens, {"customer": "acme"}, "meter_not_allowed"),
        ):
            with pytest.raises(AccessDenied) as refused:
                authorize_query(claims, name, parameters)
            assert (refused.value.reason, refused.value.status) == (reason, 403)


def test_a_grant_amount_is_written_out_positive_and_in_minor_units() -> None:
    import pytest

    from clickhouse.credits import CreditError, parse_amount

    assert f"{parse_amount('25', 2, 'USD'):f}" == "25.00"
    assert parse_amount("1000", 0, "JPY") == D(1000)
    for text, minor_units in (("1e3", 2), ("0", 2), ("0.00", 2), ("-1", 2), ("1.001", 2), ("100.5", 0), ("", 2), ("1" * 20, 2)):
        with pytest.raises(CreditError):
            parse_amount(text, minor_units, "USD")


# --- grant and void check the ledger as recorded on its topic, then only publish -------------------------


def _configured(tmp_path: Path, credits: dict[str, object] | None = None) -> Any:
    import yaml

    from jobs.config import load_config

    price = [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1"}]
    document: dict[str, object] = {
        "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "rating": {"default_plan": "std", "plans": {"std": {"meters": {"api_calls": price}}}},
    }
    if credits is not None:
        document["credits"] = credits
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={})


def test_grant_and_void_check_the_recorded_ledger_and_publish_the_row_they_record(tmp_path: Path) -> None:
    import pytest

    from clickhouse.credits import CreditError, LedgerRow
    from clickhouse.credits import grant as record_grant
    from clickhouse.credits import void as record_void

    config = _configured(tmp_path)
    published: list[LedgerRow] = []
    now = t("2026-03-10")

    def granted(recorded: list[LedgerRow], gid: str, customer: str = "acme") -> LedgerRow:
        return record_grant(
            config.rating,
            recorded,
            customer=customer,
            amount="25",
            priority=10,
            effective_at=t("2026-03-01"),
            expires_at=None,
            rollover=Rollover.CARRY,
            reason="prepaid",
            recorded_by="local:ops",
            now=now,
            grant_id=gid,
            publish=published.append,
        )

    g1 = granted([], "g1")
    assert published == [g1] and (g1.action, g1.amount, g1.currency) == ("grant", D("25.00"), "USD")
    recorded = [LedgerRow.from_record(r.record()) for r in published]  # as read back from the topic
    assert recorded == published
    with pytest.raises(CreditError, match="a grant of that id exists"):
        granted(recorded, "g1", customer="globex")  # unique across customers
    with pytest.raises(CreditError, match="no grant 'g2'"):
        record_void(recorded, grant_id="g2", reason="x", at=now, recorded_by="local:ops", now=now, publish=published.append)
    with pytest.raises(CreditError, match="before the grant took effect"):
        record_void(
            recorded, grant_id="g1", reason="x", at=t("2026-02-01"), recorded_by="local:ops", now=now, publish=published.append
        )
    void = record_void(recorded, grant_id="g1", reason="x", at=now, recorded_by="local:ops", now=now, publish=published.append)
    assert published == [g1, void] and (void.action, void.customer, void.amount) == ("void", "acme", Z)
    with pytest.raises(CreditError, match="already voided"):
        record_void(published, grant_id="g1", reason="x", at=now, recorded_by="local:ops", now=now, publish=published.append)
    assert len(published) == 2  # a refused row is published nowhere


def test_credits_publish_false_is_refused_naming_the_key(tmp_path: Path) -> None:
    import pytest

    from jobs.config import ConfigError

    _configured(tmp_path, {"publish": True})  # accepted: what the ledger does anyway
    with pytest.raises(ConfigError, match=r"credits\.publish: false is no longer possible"):
        _configured(tmp_path, {"publish": False})
