"""`metering invoice` and `metering query cost` on real chDB, through the owner's gateway, with real tokens.

A seeded database (UTC monthly billing): ``acme`` has finals for February, March and April 2026,
corrections to February loaded in March and April, and a provisional May; ``globex`` has its own
finals, corrections and usage, never to be seen by an ``acme`` token. The commands run in
subprocesses as users run them, and every number is checked against udfs/pricing.py applied by
hand. docs/pricing.md's worked invoice is the March one: the table printed here must be the one
the page shows.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from clickhouse.access import AccessSettings, issue
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.gateway import QueryGateway
from clickhouse.migrate import migrate
from clickhouse.tables import COLUMNS
from infra.settings import PROJECT_ROOT
from jobs.config import load_config
from tests.integration.dashboard_data import segment
from udfs.periods import Period
from udfs.pricing import Rating

KEY = "k" * 40
D = Decimal
UTCZ = ZoneInfo("UTC")
FEB = Period(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
MARCH = Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
APRIL = Period(datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
MAY = Period(datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC))
RATING = {
    "currency": "USD",
    "default_plan": "standard",
    "plans": {
        "standard": {
            "meters": {
                "api_calls": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "model": "graduated",
                        "tiers": [
                            {"up_to": "1000", "unit_price": "0.01"},
                            {"up_to": "10000", "unit_price": "0.008"},
                            {"unit_price": "0.005"},
                        ],
                    }
                ],
                "tokens": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "0.000002"}],
            }
        }
    },
}
METERS = [
    {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_type": "tokens", "aggregation": "sum", "group_by": ["model"]},
]


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def seed(storage: Storage) -> None:
    def final(customer: str, meter: str, group: str, aggregation: str, period: Period, value: str) -> list[Any]:
        return [customer, meter, group, aggregation, period.start, period.end, D(value), 1, period.end]

    finals = [
        final("acme", "api_calls", "{}", "count", FEB, "900"),
        final("acme", "api_calls", "{}", "count", MARCH, "12500"),
        final("acme", "tokens", '{"model":"large"}', "sum", MARCH, "1234567"),
        final("acme", "api_calls", "{}", "count", APRIL, "100"),
        final("globex", "api_calls", "{}", "count", MARCH, "777"),
    ]
    storage.client.insert("period_finals", finals, column_names=COLUMNS["period_finals"])

    def correction(customer: str, value: str, sign: int, offset: int, loaded: str) -> list[Any]:
        return [
            customer,
            "api_calls",
            "{}",
            "count",
            FEB.start,
            FEB.end,
            t("2026-02-27 10:00"),
            sign,
            D(value),
            1,
            "",
            0,
            offset,
            t(loaded),
        ]

    corrections = [
        correction("acme", "300", 1, 1, "2026-03-03 12:00"),
        correction("acme", "20", -1, 2, "2026-03-30 00:00"),
        correction("acme", "1000", 1, 3, "2026-04-02 00:00"),
        correction("globex", "5000", 1, 4, "2026-03-04 00:00"),
    ]
    storage.client.insert("corrections", corrections, column_names=[*COLUMNS["corrections"], "loaded_at"])
    segments = [
        segment("acme", "api_calls", "count", "2026-05-10 10:00", n=3000, zone=UTCZ),
        segment("acme", "tokens", "sum", "2026-05-10 09:00", n=10, total="1000000", group_key='{"model":"large"}', zone=UTCZ),
        segment("acme", "api_calls", "count", "2026-03-10 10:00", n=12500, zone=UTCZ),
        segment("globex", "api_calls", "count", "2026-05-10 10:00", n=4, zone=UTCZ),
    ]
    storage.client.insert("aggregate_segments", segments, column_names=COLUMNS["aggregate_segments"])


@pytest.fixture(scope="module")
def database(chdb_path: Path) -> Iterator[Storage]:
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_invoice_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as opened:
        migrate(opened)
        seed(opened)
        try:
            yield opened
        finally:
            opened.drop_database()


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory) -> AccessSettings:
    return AccessSettings(signing_key=KEY, store=tmp_path_factory.mktemp("access"))


@pytest.fixture(scope="module")
def gateway(database: Storage, access: AccessSettings) -> Iterator[QueryGateway]:
    with QueryGateway(database, access=access) as serving:
        yield serving


@pytest.fixture(scope="module")
def config_file(database: Storage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "metering.yaml"
    storage = {"backend": "chdb", "path": str(database.settings.path), "database": database.settings.database}
    path.write_text(yaml.safe_dump({"storage": storage, "meters": METERS, "rating": RATING}))
    return path


def token(access: AccessSettings, customer: str | None = None, meters: list[str] | None = None) -> str:
    text, claims = issue(access.key(), scope="customer" if customer else "operator", customer=customer, meters=meters, ttl_s=3600)
    access.tokens().record(claims)
    return text


def metering(*args: str, config: Path, token_text: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING__")}
    env["METERING__STACK__HOME"] = str(config.parent / "stack")
    if token_text is not None:
        env["METERING__ACCESS__TOKEN"] = token_text
    command = [sys.executable, "-m", "jobs.cli", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120, check=False)


@functools.cache
def rating() -> Rating:
    """The rating section as the configuration loads it (the commands' own path)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metering.yaml"
        path.write_text(yaml.safe_dump({"meters": METERS, "rating": RATING}))
        return load_config(path).rating


def by_hand(meter: str, period: Period, quantity: str) -> tuple[Decimal, Decimal]:
    """udfs.pricing applied by hand: (exact, rounded) of acme's card for ``quantity``."""
    charge = rating().price("acme", meter, period, D(quantity))
    assert charge is not None
    return charge.amount, charge.rounded


# --- the invoice ----------------------------------------------------------------------------------------


def test_the_march_invoice_prices_finals_and_carries_the_corrections_loaded_in_march(
    gateway: QueryGateway, config_file: Path
) -> None:
    """Read as the owner (through the gateway's secret file, as every process of the loader's user)."""
    done = metering(
        "invoice",
        "--customer",
        "acme",
        "--period",
        "2026-03",
        "--format",
        "json",
        "--at",
        "2026-04-05T00:00:00Z",
        config=config_file,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    usage = [
        (x["meter"], x["description"], D(x["amount"]), D(x["rounded"])) for x in document["lines"] if x["section"] == "usage"
    ]
    fixes = [x for x in document["lines"] if x["section"] == "correction"]
    calls, tokens = by_hand("api_calls", MARCH, "12500"), by_hand("tokens", MARCH, "1234567")
    # February: 900 final; corrections loaded in March: +300 −20
    before, after = by_hand("api_calls", FEB, "900"), by_hand("api_calls", FEB, "1180")
    assert (
        sum(a for m, _, a, _ in usage if m == "api_calls") == calls[0]
        and sum(a for m, _, a, _ in usage if m == "tokens") == tokens[0]
    )
    assert sum(D(x["amount"]) for x in fixes) == after[0] - before[0] == D("2.440")
    assert sum(D(x["rounded"]) for x in fixes) == after[1] - before[1]
    assert [(x["tier_after"], x["tier_up_to"], x["quantity"], x["unit_price"], x["period_start"]) for x in fixes] == [
        (None, "1000", "100", "0.01", "2026-02-01T00:00:00.000Z"),
        ("1000", "10000", "180", "0.008", "2026-02-01T00:00:00.000Z"),
    ]
    assert D(document["amount"]) == calls[0] + tokens[0] + after[0] - before[0] == D("99.409134")
    assert D(document["rounded"]) == sum(D(x["rounded"]) for x in document["lines"]) == D("99.41")
    assert document["meters"] == [
        {"meter": "api_calls", "amount": "96.940", "rounded": "96.94"},
        {"meter": "tokens", "amount": "2.469134", "rounded": "2.47"},
    ]
    assert (document["currency"], document["is_final"], document["as_of"]) == ("USD", True, "2026-04-05T00:00:00.000Z")
    assert "globex" not in done.stdout


def test_the_april_invoice_prices_april_corrections_on_top_of_marchs(gateway: QueryGateway, config_file: Path) -> None:
    done = metering(
        "invoice",
        "--customer",
        "acme",
        "--period",
        "2026-04-01T00:00:00.000Z",
        "--format",
        "csv",
        "--at",
        "2026-05-05T00:00:00Z",
        config=config_file,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    fixes = [r for r in rows if r["section"] == "correction"]
    before, after = by_hand("api_calls", FEB, "1180"), by_hand("api_calls", FEB, "2180")
    assert [(r["quantity"], r["unit_price"], r["amount"]) for r in fixes] == [("1000", "0.008", "8.000")]
    assert D(fixes[0]["amount"]) == after[0] - before[0]
    total = [r for r in rows if r["section"] == "total"]
    assert [(r["amount"], r["rounded"], r["currency"], r["is_final"]) for r in total] == [("9.000", "9.00", "USD", "True")]


def test_the_worked_example_of_the_docs_is_what_the_command_prints(gateway: QueryGateway, config_file: Path) -> None:
    page = (PROJECT_ROOT / "docs" / "pricing.md").read_text()
    block = re.search(r"```text\n\$ metering invoice --customer acme --period 2026-03\n(.*?)```", page, re.S)
    assert block is not None
    done = metering("invoice", "--customer", "acme", "--period", "2026-03", "--at", "2026-04-05T00:00:00Z", config=config_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout == block.group(1)


@pytest.mark.parametrize(
    ("period", "code", "message"),
    [
        ("2026-05", 1, "not final yet: 2 of 2 totals are provisional"),
        ("2026-07", 1, "no usage in the period"),
        ("2026-03-15T00:00:00Z", 2, "the period containing it starts at 2026-03-01T00:00:00.000Z"),
        ("2026-13", 2, "not a month"),
    ],
)
def test_a_period_without_an_invoice_is_refused(
    gateway: QueryGateway, config_file: Path, period: str, code: int, message: str
) -> None:
    done = metering("invoice", "--customer", "acme", "--period", period, "--at", "2026-08-05T00:00:00Z", config=config_file)
    assert done.returncode == code and message in done.stderr and done.stdout == "", done.stderr


# --- the cost so far --------------------------------------------------------------------------------------


def test_cost_so_far_with_projection_and_lag(gateway: QueryGateway, config_file: Path) -> None:
    done = metering("query", "cost", "--customer", "acme", "--format", "json", "--at", "2026-05-11T00:00:00Z", config=config_file)
    assert done.returncode == 0, done.stderr
    rows = {r["meter"]: r for r in json.loads(done.stdout)}
    calls, tokens = rows["api_calls"], rows["tokens"]
    # api_calls: 3,000 so far, 10 of May's 31 days elapsed -> 9,300 projected, priced through the tiers
    assert (calls["quantity"], calls["is_final"], calls["projection"], calls["projected_quantity"]) == (
        "3000",
        False,
        "linear",
        "9300",
    )
    assert (D(calls["cost"]), D(calls["cost_exact"])) == by_hand("api_calls", MAY, "3000")[::-1] == (D("26.00"), D("26.000"))
    assert D(calls["projected_cost"]) == by_hand("api_calls", MAY, "9300")[1] == D("76.40")
    assert calls["as_of"] == "2026-05-10T10:00:00.000Z" and calls["lag_seconds"] == 13 * 3600 + 59 * 60
    assert (D(tokens["cost"]), D(tokens["projected_cost"])) == (D("2.00"), D("6.20")) and tokens["group_by"] == {"model": "large"}
    assert all(r["customer_id"] == "acme" and r["currency"] == "USD" for r in rows.values())


# --- who may read it ------------------------------------------------------------------------------------


def test_a_customer_token_reads_its_own_invoice_and_cost_only(
    gateway: QueryGateway, access: AccessSettings, config_file: Path
) -> None:
    acme = token(access, "acme")
    at = ("--at", "2026-05-11T00:00:00Z", "--gateway", gateway.url)
    own = metering(
        "invoice", "--customer", "acme", "--period", "2026-03", "--format", "json", *at, config=config_file, token_text=acme
    )
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["rounded"] == "99.41"
    for argv in (
        ["invoice", "--customer", "globex", "--period", "2026-03"],
        ["query", "cost", "--customer", "globex"],
        ["query", "cost"],  # everyone's
    ):
        refused = metering(*argv, *at, config=config_file, token_text=acme)
        assert refused.returncode == 1, refused.stderr
        assert "refused (403 wrong_customer)" in refused.stderr and refused.stdout == ""
        # nothing of globex's (its total, 777 calls) nor the token leaks into the message
        assert not re.search(r"(?<![\d.:])777(?![\d])", refused.stderr) and acme not in refused.stderr
    cost = metering("query", "cost", "--customer", "acme", "--format", "json", *at, config=config_file, token_text=acme)
    assert cost.returncode == 0 and {r["customer_id"] for r in json.loads(cost.stdout)} == {"acme"}


def test_a_meter_scoped_token_sees_only_its_meters(gateway: QueryGateway, access: AccessSettings, config_file: Path) -> None:
    scoped = token(access, "acme", meters=["tokens"])
    at = ("--at", "2026-05-11T00:00:00Z", "--gateway", gateway.url, "--format", "json")
    cost = metering("query", "cost", "--customer", "acme", *at, config=config_file, token_text=scoped)
    assert cost.returncode == 0, cost.stderr
    assert [r["meter"] for r in json.loads(cost.stdout)] == ["tokens"]
    invoice = metering("invoice", "--customer", "acme", "--period", "2026-03", *at, config=config_file, token_text=scoped)
    assert invoice.returncode == 0, invoice.stderr
    document = json.loads(invoice.stdout)
    assert {x["meter"] for x in document["lines"]} == {"tokens"} and document["rounded"] == "2.47"
    other = metering(
        "invoice", "--customer", "acme", "--period", "2026-03", "--meter", "api_calls", *at, config=config_file, token_text=scoped
    )
    assert other.returncode == 1 and "meter_not_allowed" in other.stderr and other.stdout == ""


def test_the_operator_reads_everyones_cost(gateway: QueryGateway, access: AccessSettings, config_file: Path) -> None:
    done = metering(
        "query",
        "cost",
        "--format",
        "json",
        "--at",
        "2026-05-11T00:00:00Z",
        "--gateway",
        gateway.url,
        config=config_file,
        token_text=token(access),
    )
    assert done.returncode == 0, done.stderr
    assert sorted((r["customer_id"], r["meter"]) for r in json.loads(done.stdout)) == [
        ("acme", "api_calls"),
        ("acme", "tokens"),
        ("globex", "api_calls"),
    ]


# --- the explain view -----------------------------------------------------------------------------------


def test_explain_shows_the_stored_rows_and_the_tiers_behind_each_charge(gateway: QueryGateway, config_file: Path) -> None:
    at = ("--at", "2026-04-05T00:00:00Z")
    done = metering(
        "invoice", "--customer", "acme", "--period", "2026-03", "--explain", "--format", "json", *at, config=config_file
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    plain = json.loads(
        metering("invoice", "--customer", "acme", "--period", "2026-03", "--format", "json", *at, config=config_file).stdout
    )
    assert {k: v for k, v in document.items() if k != "items"} == plain  # the invoice itself, unchanged
    items = {(i["section"], i["meter"]): i for i in document["items"]}
    calls = items[("usage", "api_calls")]
    assert [(r["table"], r["value"], r["revision"]) for r in calls["rows"]] == [("period_finals", "12500", 1)]
    assert [(t["tier"], t["quantity"], t["rounded"]) for t in calls["charge"]["tiers"]] == [
        ("tier 1 (0 to 1000)", "1000", "10.00"),
        ("tier 2 (over 1000 to 10000)", "9000", "72.00"),
        ("tier 3 (over 10000)", "2500", "12.50"),
    ]
    assert items[("usage", "tokens")]["group_by"] == {"model": "large"}
    fix = items[("correction", "api_calls")]
    # February's final and the corrections loaded before March's end; April's is not read
    assert [(r["table"], r.get("sign"), r["value"], r.get("loaded_at"), r.get("on_this_invoice")) for r in fix["rows"]] == [
        ("period_finals", None, "900", None, None),
        ("corrections", 1, "300", "2026-03-03T12:00:00.000Z", True),
        ("corrections", -1, "20", "2026-03-30T00:00:00.000Z", True),
    ]
    assert (fix["before"]["quantity"], fix["charge"]["quantity"]) == ("900", "1180")
    assert (D(fix["amount"]), D(fix["rounded"])) == (D("2.440"), D("2.44"))
    assert "globex" not in done.stdout
    table = metering("invoice", "--customer", "acme", "--period", "2026-03", "--explain", *at, config=config_file)
    assert table.returncode == 0, table.stderr
    assert "stored rows" in table.stdout and "loaded 2026-03-30T00:00:00.000Z" in table.stdout
    assert "with them: quantity 1180" in table.stdout and table.stdout.rstrip().endswith("total 99.409134 (99.41 rounded)")


def test_explain_goes_through_the_same_access_rule(gateway: QueryGateway, access: AccessSettings, config_file: Path) -> None:
    acme = token(access, "acme")
    at = ("--at", "2026-05-11T00:00:00Z", "--gateway", gateway.url, "--explain", "--format", "json")
    own = metering("invoice", "--customer", "acme", "--period", "2026-03", *at, config=config_file, token_text=acme)
    assert own.returncode == 0, own.stderr
    assert [i["section"] for i in json.loads(own.stdout)["items"]] == ["usage", "usage", "correction"]
    refused = metering("invoice", "--customer", "globex", "--period", "2026-03", *at, config=config_file, token_text=acme)
    assert refused.returncode == 1 and "refused (403 wrong_customer)" in refused.stderr and refused.stdout == ""
    tokens_only = token(access, "acme", meters=["tokens"])
    scoped = metering(
        "invoice",
        "--customer",
        "acme",
        "--period",
        "2026-03",
        "--meter",
        "tokens",
        *at,
        config=config_file,
        token_text=tokens_only,
    )
    assert scoped.returncode == 0, scoped.stderr
    assert {i["meter"] for i in json.loads(scoped.stdout)["items"]} == {"tokens"}


def test_the_explain_example_of_the_docs_is_what_the_command_prints(gateway: QueryGateway, config_file: Path) -> None:
    page = (PROJECT_ROOT / "docs" / "pricing.md").read_text()
    command = "$ metering invoice --customer acme --period 2026-03 --meter api_calls --explain"
    block = re.search(r"```text\n" + re.escape(command) + r"\n(.*?)```", page, re.S)
    assert block is not None
    argv = command.split()[2:]
    done = metering(*argv, "--at", "2026-04-05T00:00:00Z", config=config_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout == block.group(1)
