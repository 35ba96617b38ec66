"""Prepaid credits on real chDB and a real broker: the real `metering credits` and `metering query credits` commands.

The database is test_invoice_cost.py's (UTC monthly billing, acme's February to April final with
corrections loaded in March and April, a provisional May; globex's March and May). Its invoices,
priced by hand there, are the cost here: February 9.00, March 99.41, April 9.00 settled, May's
28.00 pending (3,000 calls 26.00 + 1,000,000 tokens 2.00). The ledger's source of truth is the
ledger topic (this module's own broker): grant and void publish to it without opening the storage,
and a loader copies it into ``credit_ledger``. Storage writes (refresh, the loader) run in this
process (chDB allows one process per directory, and the engine is process-wide); grants from
another process while the loader owns the directory, and reads by another customer's token
through the gateway, run in subprocesses, as users run them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from clickhouse.access import AccessSettings, issue
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.credits import LedgerRow, ledger
from clickhouse.gateway import QueryGateway
from clickhouse.migrate import migrate
from clickhouse.queries import StorageReader
from infra.kafka import KafkaBroker
from infra.settings import PROJECT_ROOT
from jobs.cli import main
from jobs.config import load_config
from jobs.loader.kafka_consumer import ConfluentConsumer
from jobs.loader.loader import Loader
from tests.integration.test_invoice_cost import METERS, RATING, seed

KEY = "c" * 40
D = Decimal
AT = "2026-05-11T00:00:00Z"
CREDITS = {
    "exhaustion": "overage",
    "customers": {"acme": {"exhaustion": "grace_pct", "grace_pct": "10"}, "globex": {"exhaustion": "block"}},
}
GRANTS = [  # id, customer, amount, extra options
    ("g1", "acme", "50.00", ["--effective", "2026-01-15T00:00:00Z"]),
    ("g2", "acme", "80.00", ["--effective", "2026-02-10T00:00:00Z", "--priority", "5", "--expires", "2026-04-15T00:00:00Z"]),
    ("g3", "acme", "30.00", ["--effective", "2026-03-05T00:00:00Z", "--rollover", "period"]),
    ("g4", "acme", "20.00", ["--effective", "2026-01-20T00:00:00Z"]),
    ("x1", "globex", "5.00", ["--effective", "2026-01-01T00:00:00Z"]),
]


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A `metering` command in this process, with ``env`` set: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("METERING__")]:
            patch.delenv(name)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory) -> AccessSettings:
    return AccessSettings(signing_key=KEY, store=tmp_path_factory.mktemp("access"))


@pytest.fixture(scope="module")
def settings(chdb_path: Path) -> Iterator[StorageSettings]:
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_credits_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as opened:
        migrate(opened)
        seed(opened)
    yield settings
    with open_storage(settings, create_database=False) as opened:
        opened.drop_database()


@pytest.fixture(scope="module")
def config(settings: StorageSettings, spare_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "metering.yaml"
    storage = {"backend": "chdb", "path": str(settings.path), "database": settings.database}
    kafka = {
        "bootstrap_servers": spare_broker.settings.bootstrap_servers,
        "topics": {"events": f"credits-{uuid.uuid4().hex[:8]}"},
    }
    document = {"storage": storage, "kafka": kafka, "meters": METERS, "rating": RATING, "credits": CREDITS}
    path.write_text(yaml.safe_dump(document))
    return path


@contextlib.contextmanager
def storage_untouched() -> Iterator[None]:
    """Fail any attempt to open the storage: grant and void record on the ledger topic only."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("grant and void must not open the storage")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("clickhouse.client.open_storage", refuse)
        yield


def loaded_ledger(storage: Storage) -> list[LedgerRow]:
    """``credit_ledger`` as every reader sees it (the named query, FINAL)."""
    return ledger(StorageReader(storage))


class RunningLoader:
    """The loader on its own thread, owning the module's chDB database (the directory's lock) until the block ends."""

    def __init__(self, settings: StorageSettings, config: Path, group: str = "credits-loader") -> None:
        self.settings, self.config, self.group = settings, load_config(config), group
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self._storage: contextlib.AbstractContextManager[Storage] | None = None
        self.storage: Storage | None = None

    def _consumer(self, topics: Sequence[str], settings: Any) -> ConfluentConsumer:
        stop = self.stop

        class Stoppable(ConfluentConsumer):
            def consume(self, max_records: int, timeout_s: float) -> Any:
                if stop.is_set():
                    raise KeyboardInterrupt  # how `metering load` ends
                return super().consume(max_records, timeout_s)

        return Stoppable(topics, settings)

    def _run(self, loader: Loader) -> None:
        try:
            loader.run()
        except KeyboardInterrupt:
            pass
        except BaseException as exc:  # reported by wait_for and at the end
            self.failure = exc

    def __enter__(self) -> RunningLoader:
        from jobs.alerts.service import ensure_ledger_topic

        ensure_ledger_topic(self.config)  # as `metering load` does
        self._storage = open_storage(self.settings, create_database=False)
        self.storage = self._storage.__enter__()
        loader = Loader(self.config, self.storage, group_id=self.group, load_raw=False, consumer_factory=self._consumer)
        self.thread = threading.Thread(target=self._run, args=(loader,), daemon=True)
        self.thread.start()
        return self

    def wait_for(self, done: Callable[[list[LedgerRow]], bool], timeout_s: float = 60.0) -> list[LedgerRow]:
        """The loaded ledger once ``done`` holds for it."""
        assert self.storage is not None
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.failure is None, self.failure
            rows = loaded_ledger(self.storage)
            if done(rows):
                return rows
            assert time.monotonic() < deadline, f"the loader did not load the ledger in {timeout_s:.0f} s: {rows}"
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert self._storage is not None
        self._storage.__exit__(None, None, None)
        assert self.failure is None, self.failure


def load_until_idle(settings: StorageSettings, config: Path, group: str = "credits-loader") -> int:
    """A bounded loader run (the directory must be free): the ledger topic's new records into ``credit_ledger``;
    returns the rows it stored there."""
    from jobs.alerts.service import ensure_ledger_topic

    loaded = load_config(config)
    ensure_ledger_topic(loaded)
    with open_storage(settings, create_database=False) as storage:
        stats = Loader(loaded, storage, group_id=group, load_raw=False).run(until_idle=True, idle_s=1.0)
    return stats.rows["credit_ledger"]


@pytest.fixture(scope="module")
def granted(settings: StorageSettings, config: Path, access: AccessSettings) -> dict[str, dict[str, Any]]:
    """The grants and the void of g4 from 20 April, recorded while the loader runs (on the ledger topic only, without
    opening the storage), then, the loader stopped, a refresh as of 11 May; the balances as `query credits` prints them."""
    with RunningLoader(settings, config) as loader, storage_untouched():
        for gid, customer, amount, extra in GRANTS:
            code, out, err = run(
                "credits",
                "grant",
                "--customer",
                customer,
                "--amount",
                amount,
                "--grant-id",
                gid,
                "--reason",
                "prepaid contract",
                *extra,
                "--config",
                str(config),
            )
            assert code == 0 and out.startswith(f"granted {gid}: {amount} USD to {customer}"), err
        code, out, err = run(
            "credits", "void", "g4", "--reason", "granted by mistake", "--at", "2026-04-20T00:00:00Z", "--config", str(config)
        )
        assert code == 0 and "voided g4 of acme" in out, err
        loader.wait_for(lambda rows: len(rows) == 6)
    code, out, err = run("credits", "refresh", "--at", AT, "--config", str(config))
    assert code == 0, err
    assert out.splitlines() == [
        "2026-05-11T00:00:00.000Z acme: remaining 13 USD (settled 41), grace_pct 10%, within",
        "2026-05-11T00:00:00.000Z globex: remaining 0 USD (settled 0), block, OVER",
    ]
    code, out, err = run("query", "credits", "--format", "json", "--config", str(config))
    assert code == 0, err
    return {row["customer_id"]: row for row in json.loads(out)}


def test_balances_burn_down_exactly_as_priced_by_hand(granted: dict[str, dict[str, Any]]) -> None:
    acme = granted["acme"]
    # February 9.00 at 1 March: g2 (priority 5). March 99.41 at 1 April: g2's other 71.00, then g3 (ends 1 April,
    # earliest end) 28.41. April 9.00 at 1 May: g2 expired, g3 lapsed, g4 voided: g1. May 28.00 pending: g1.
    assert {
        k: D(acme[k])
        for k in (
            "granted",
            "consumed_settled",
            "consumed_pending",
            "remaining_settled",
            "remaining",
            "expired",
            "voided",
            "uncovered_settled",
            "uncovered_pending",
        )
    } == {
        "granted": D("180.00"),
        "consumed_settled": D("117.41"),
        "consumed_pending": D("28.00"),
        "remaining_settled": D("41.00"),
        "remaining": D("13.00"),
        "expired": D("1.59"),
        "voided": D("20.00"),
        "uncovered_settled": D(0),
        "uncovered_pending": D(0),
    }
    assert D(acme["granted"]) == sum(
        D(acme[k]) for k in ("remaining", "consumed_settled", "consumed_pending", "expired", "voided")
    )
    assert (acme["exhaustion"], acme["grace_pct"], acme["over_limit"], acme["currency"]) == ("grace_pct", "10", 0, "USD")
    assert (acme["live_grants"], acme["next_expiry"], acme["settled_through"], acme["as_of"]) == (
        1,
        None,
        "2026-05-01T00:00:00.000Z",
        "2026-05-11T00:00:00.000Z",
    )


def test_show_prints_the_worked_example_of_the_docs(granted: dict[str, dict[str, Any]], config: Path) -> None:
    page = (PROJECT_ROOT / "docs" / "pricing.md").read_text()
    block = re.search(r"```text\n\$ metering credits show --customer acme --at 2026-05-11T00:00:00Z\n(.*?)```", page, re.S)
    assert block is not None
    code, out, err = run("credits", "show", "--customer", "acme", "--at", AT, "--config", str(config))
    assert code == 0 and out == block.group(1), err


def test_block_policy_is_over_once_pending_cost_finds_no_credit(granted: dict[str, dict[str, Any]]) -> None:
    globex = granted["globex"]
    # March: 777 calls 7.77 + a correction of +5,000 to a February without a final, 42.00: 49.77, 5.00 covered
    assert (D(globex["consumed_settled"]), D(globex["uncovered_settled"])) == (D("5.00"), D("44.77"))
    assert (D(globex["uncovered_pending"]), globex["exhaustion"], globex["over_limit"]) == (D("0.04"), "block", 1)


def test_the_ledger_is_append_only_and_refuses_a_second_void(granted: dict[str, dict[str, Any]], config: Path) -> None:
    code, out, err = run("credits", "list", "--customer", "acme", "--format", "json", "--config", str(config))
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["grant_id"], r["action"], r["amount"]) for r in rows if r["grant_id"] == "g4"] == [
        ("g4", "grant", "20"),
        ("g4", "void", "0"),
    ]
    assert {r["customer_id"] for r in rows} == {"acme"} and len(rows) == 5
    code, _, err = run("credits", "void", "g4", "--reason", "again", "--config", str(config))
    assert code == 2 and "already voided" in err
    code, _, err = run("credits", "grant", "--customer", "acme", "--amount", "1.001", "--reason", "x", "--config", str(config))
    assert code == 2 and "USD has 2 minor-unit digit(s)" in err
    code, _, err = run(
        "credits", "grant", "--customer", "acme", "--amount", "1", "--grant-id", "g1", "--reason", "x", "--config", str(config)
    )
    assert code == 2 and "a grant of that id exists" in err


# --- who may do what -------------------------------------------------------------------------------------


def token(access: AccessSettings, customer: str | None = None) -> str:
    text, claims = issue(access.key(), scope="customer" if customer else "operator", customer=customer, ttl_s=3600)
    access.tokens().record(claims)
    return text


def test_a_customer_token_never_grants_voids_or_refreshes(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path, access: AccessSettings
) -> None:
    from jobs.alerts.service import read_ledger

    env = {
        "METERING__ACCESS__SIGNING_KEY": KEY,
        "METERING__ACCESS__STORE": str(access.store),
        "METERING__ACCESS__TOKEN": token(access, "acme"),
    }
    for argv in (
        ["credits", "grant", "--customer", "acme", "--amount", "1000.00", "--reason", "free money"],
        ["credits", "void", "x1", "--reason", "hostile"],
        ["credits", "refresh"],
    ):
        code, out, err = run(*argv, "--config", str(config), env=env)
        assert code == 1 and "refused (403 operator_only)" in err and out == "", err
    code, out, _ = run("credits", "list", "--format", "json", "--config", str(config))
    assert len(json.loads(out)) == 6 and len(read_ledger(load_config(config))) == 6  # 5 grants and the void: nothing new
    env["METERING__ACCESS__TOKEN"] = token(access)
    code, out, err = run(
        "credits",
        "grant",
        "--customer",
        "acme",
        "--amount",
        "0.01",
        "--grant-id",
        "op",
        "--reason",
        "operator",
        "--config",
        str(config),
        env=env,
    )
    assert code == 0, err
    load_until_idle(settings, config)
    code, out, _ = run("credits", "list", "--customer", "acme", "--format", "json", "--config", str(config))
    assert next(r["recorded_by"] for r in json.loads(out) if r["grant_id"] == "op").startswith("token:")


def cli(*argv: str, config: Path, token_text: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING__")}
    env["METERING__ACCESS__TOKEN"] = token_text
    command = [sys.executable, "-m", "jobs.cli", *argv, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120, check=False)


def test_a_token_for_acme_cannot_read_globexs_balance_or_ledger(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path, access: AccessSettings
) -> None:
    acme = token(access, "acme")
    with open_storage(settings, create_database=False) as storage, QueryGateway(storage, access=access) as gateway:
        own = cli(
            "query", "credits", "--customer", "acme", "--format", "json", "--gateway", gateway.url, config=config, token_text=acme
        )
        assert own.returncode == 0, own.stderr
        assert [(r["customer_id"], r["remaining"]) for r in json.loads(own.stdout)] == [("acme", "13")]
        shown = cli("credits", "show", "--customer", "acme", "--at", AT, "--gateway", gateway.url, config=config, token_text=acme)
        assert shown.returncode == 0 and "remaining 41.00 settled, 13.00 with pending cost" in shown.stdout, shown.stderr
        for argv in (
            ["query", "credits", "--customer", "globex"],
            ["query", "credits"],  # everyone's
            ["credits", "list", "--customer", "globex"],
            ["credits", "list"],
            ["credits", "show", "--customer", "globex"],
        ):
            refused = cli(*argv, "--gateway", gateway.url, config=config, token_text=acme)
            assert refused.returncode == 1, refused.stderr
            assert "refused (403 wrong_customer)" in refused.stderr and refused.stdout == "" and "globex" not in refused.stdout


def test_a_meter_scoped_token_cannot_read_a_balance_that_sums_every_meter(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path, access: AccessSettings
) -> None:
    text, claims = issue(access.key(), scope="customer", customer="acme", meters=["tokens"], ttl_s=3600)
    access.tokens().record(claims)
    with open_storage(settings, create_database=False) as storage, QueryGateway(storage, access=access) as gateway:
        for argv in (
            ["query", "credits", "--customer", "acme"],
            ["credits", "show", "--customer", "acme", "--at", AT],
            ["credits", "list", "--customer", "acme"],
        ):
            refused = cli(*argv, "--gateway", gateway.url, config=config, token_text=text)
            assert refused.returncode == 1 and "refused (403 meter_not_allowed)" in refused.stderr, refused.stderr
            assert refused.stdout == ""


def test_refresh_every_loops_at_the_configured_cadence(granted: dict[str, dict[str, Any]], config: Path) -> None:
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("jobs.cli.credits.time.sleep", sleep)
        code, out, err = run("credits", "refresh", "--every", "--customer", "globex", "--at", AT, "--config", str(config))
    assert code == 0, err
    assert pauses == [300.0, 300.0]  # credits.refresh_every's default, 5m
    assert out.splitlines() == ["2026-05-11T00:00:00.000Z globex: remaining 0 USD (settled 0), block, OVER"] * 2


def test_the_alert_evaluator_burns_the_same_balance_from_the_stream(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path
) -> None:
    """The records the job would have written for the seeded totals, and the ledger rows the commands recorded, fed
    to the alert evaluator: its balance for acme equals ``balance_of``'s from chDB at the same instant."""
    from datetime import UTC, datetime

    from clickhouse.credits import balance_of, ledger
    from clickhouse.queries import StorageReader
    from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, LEDGER, Evaluator
    from jobs.config import load_config
    from udfs.alerting import AlertRule, AlertSettings, RuleKind

    def ms(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)

    def key(meter: str, group: str, aggregation: str, start: str, end: str) -> dict[str, Any]:
        return {
            "customer_id": "acme",
            "meter": meter,
            "group_key": group,
            "aggregation": aggregation,
            "period_start_ms": ms(start),
            "period_end_ms": ms(end),
        }

    def value(n: int, total: str | None = None) -> dict[str, Any]:
        return {
            "value": total or str(n),
            "event_count": n,
            "sum": total or str(n),
            "max": None,
            "min": None,
            "distinct_values": [],
            "latest_ms": None,
            "latest_value": None,
        }

    def minute(
        meter: str, group: str, aggregation: str, period: tuple[str, str], at: str, n: int, total: str | None = None
    ) -> dict[str, Any]:
        head = key(meter, group, aggregation, *period)
        return {
            **head,
            "minute_ms": ms(at),
            "day_start_ms": ms(at[:10]),
            "segment": "on_time",
            "version": ms(at) + 1,
            **value(n, total),
        }

    def final(meter: str, group: str, aggregation: str, period: tuple[str, str], total: str) -> dict[str, Any]:
        return {**key(meter, group, aggregation, *period), "finalized_at_watermark_ms": ms(period[1]), **value(0, total)}

    def correction(n: str, retract: bool) -> dict[str, Any]:
        return {
            **key("api_calls", "{}", "count", *FEB),
            "minute_ms": ms("2026-02-27T10:00"),
            "retract": retract,
            "event_id": "late",
            **value(0, n),
        }

    FEB, MAR, APR, MAY = (
        ("2026-02-01", "2026-03-01"),
        ("2026-03-01", "2026-04-01"),
        ("2026-04-01", "2026-05-01"),
        ("2026-05-01", "2026-06-01"),
    )
    calls, tokens = ("api_calls", "{}", "count"), ("tokens", '{"model":"large"}', "sum")
    # in event-time order; a minute just before each correction's load time brings acme's stream time to it
    stream = [
        (FINAL, final(*calls, FEB, "900")),
        (AGGREGATE, minute(*calls, MAR, "2026-03-03T11:59", 10)),
        (CORRECTION, correction("300", False)),  # loaded 3 March 12:00
        (AGGREGATE, minute(*calls, MAR, "2026-03-29T23:59", 20)),
        (CORRECTION, correction("20", True)),  # loaded 30 March
        (FINAL, final(*calls, MAR, "12500")),
        (FINAL, final(*tokens, MAR, "1234567")),
        (AGGREGATE, minute(*calls, APR, "2026-04-01T23:59", 5)),
        (CORRECTION, correction("1000", False)),  # loaded 2 April
        (FINAL, final(*calls, APR, "100")),
        (AGGREGATE, minute(*tokens, MAY, "2026-05-10T09:00", 10, "1000000")),
        (AGGREGATE, minute(*calls, MAY, "2026-05-10T10:00", 3000)),
    ]
    loaded = load_config(config)
    rule = AlertRule("low", RuleKind.CREDIT_REMAINING, "", (Decimal(0),), frozenset({"acme"}))
    evaluator = Evaluator(AlertSettings((rule,)), loaded.rating, lambda c: loaded.billing.policy_for(c).cycle)
    with open_storage(settings) as storage:
        reader = StorageReader(storage)
        for row in ledger(reader, "acme"):
            evaluator.apply(LEDGER, row.record(), arrival_ms=0, now_ms=0)
        for kind, record in stream:
            evaluator.apply(kind, record, arrival_ms=0, now_ms=0)
        now = datetime(2026, 5, 10, 10, 1, tzinfo=UTC)  # acme's stream time: the end of its newest minute
        assert evaluator.customer_ms("acme") == ms("2026-05-10T10:01")
        _, stored, _ = balance_of(reader, loaded.rating, loaded.billing.policy_for("acme").cycle, "acme", now)
    streamed = evaluator.credit_balance("acme")
    assert streamed == stored
    assert (streamed.remaining, streamed.consumed_pending, streamed.voided) == (
        Decimal("13.00"),
        Decimal("28.00"),
        Decimal("20.00"),
    )


# --- the ledger topic is the source of truth ---------------------------------------------------------------


def subprocess_cli(*argv: str, config: Path) -> subprocess.CompletedProcess[str]:
    """A `metering` command in its own process, as an operator (no token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING__")}
    command = [sys.executable, "-m", "jobs.cli", *argv, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120, check=False)


def test_grant_and_void_run_from_another_process_while_the_loader_owns_the_chdb_directory(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path
) -> None:
    grant = ["credits", "grant", "--customer", "initech", "--amount", "12.50", "--grant-id", "live", "--reason", "trial"]
    with RunningLoader(settings, config) as loader:
        granting = subprocess_cli(*grant, "--effective", "2026-06-01T00:00:00Z", config=config)
        assert granting.returncode == 0 and granting.stdout.startswith("granted live: 12.50 USD to initech"), granting.stderr
        voiding = subprocess_cli(
            "credits", "void", "live", "--reason", "trial over", "--at", "2026-06-15T00:00:00Z", config=config
        )
        assert voiding.returncode == 0 and "voided live of initech" in voiding.stdout, voiding.stderr
        rows = loader.wait_for(lambda rows: sum(r.grant_id == "live" for r in rows) == 2)
        # what still needs the directory: refresh writes credit_balances itself
        refreshing = subprocess_cli("credits", "refresh", "--customer", "initech", config=config)
        assert refreshing.returncode != 0 and "in use by" in refreshing.stderr, refreshing.stderr
    live = [(r.action, r.amount, r.effective_at.isoformat(), r.reason) for r in rows if r.grant_id == "live"]
    assert live == [
        ("grant", D("12.50"), "2026-06-01T00:00:00+00:00", "trial"),
        ("void", D(0), "2026-06-15T00:00:00+00:00", "trial over"),
    ]


def test_a_grant_id_on_the_topic_is_refused_before_the_loader_copied_it(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path
) -> None:
    """No loader runs: the table lacks the new grant, yet the topic's content refuses its id and lets it be voided."""
    grant = ["credits", "grant", "--customer", "initech", "--amount", "3", "--grant-id", "early", "--reason", "x"]
    with storage_untouched():
        code, out, err = run(*grant, "--config", str(config))
        assert code == 0, err
    with open_storage(settings, create_database=False) as storage:
        assert not any(r.grant_id == "early" for r in loaded_ledger(storage))
    with storage_untouched():
        code, _, err = run(*grant, "--config", str(config))
        assert code == 2 and "--grant-id='early': a grant of that id exists" in err, err
        code, out, err = run("credits", "void", "early", "--reason", "x", "--config", str(config))
        assert code == 0 and "voided early of initech" in out, err
        code, _, err = run("credits", "void", "early", "--reason", "again", "--config", str(config))
        assert code == 2 and "already voided" in err, err
    load_until_idle(settings, config)
    with open_storage(settings, create_database=False) as storage:
        assert sorted(r.action for r in loaded_ledger(storage) if r.grant_id == "early") == ["grant", "void"]


def test_a_redelivered_ledger_does_not_double_a_grant_in_the_balances(
    granted: dict[str, dict[str, Any]], settings: StorageSettings, config: Path
) -> None:
    """A loader of a new consumer group reads the whole ledger topic again: every row is inserted a second time, and
    the table's key collapses it (ReplacingMergeTree, read with FINAL): one row per grant and action, the same balance."""
    load_until_idle(settings, config)  # whatever earlier tests published
    with open_storage(settings, create_database=False) as storage:
        before = loaded_ledger(storage)
    assert load_until_idle(settings, config, group=f"credits-redelivery-{uuid.uuid4().hex[:6]}") == len(before)
    with open_storage(settings, create_database=False) as storage:
        after = loaded_ledger(storage)
    assert sorted(map(LedgerRow.values, after), key=str) == sorted(map(LedgerRow.values, before), key=str)
    assert len({(r.grant_id, r.action) for r in after}) == len(after)
    code, out, err = run("credits", "refresh", "--customer", "acme", "--at", AT, "--config", str(config))
    assert code == 0 and out.splitlines() == [
        "2026-05-11T00:00:00.000Z acme: remaining 13 USD (settled 41), grace_pct 10%, within"
    ], err
    code, out, err = run("query", "credits", "--customer", "acme", "--format", "json", "--config", str(config))
    assert code == 0 and D(json.loads(out)[0]["granted"]) == D("180.00"), err
