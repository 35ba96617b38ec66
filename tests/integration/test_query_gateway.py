"""Reads through the process that owns the chDB directory (clickhouse/gateway.py), over real chDB.

In-process tests start a QueryGateway on an open storage and compare GatewayReader with
StorageReader. The "directory is locked" paths need a second process: chDB allows one process per
directory and the owner lock is an flock, so the owner runs in a subprocess (OWNER below) and the
test process calls open_reader.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clickhouse import queries
from clickhouse.client import Storage, StorageError, StorageLockedError, StorageSettings, open_storage
from clickhouse.gateway import GATEWAY_FILE, GatewayReader, QueryGateway, gateway_file, open_reader
from clickhouse.migrate import migrate
from clickhouse.queries import QueryError, Reader, Scope, StorageReader
from infra.settings import PROJECT_ROOT
from tests.integration.dashboard_data import LOOKALIKES, seed
from tests.integration.dashboard_tokens import bearer, make_client, make_token

MARCH_1 = {"start": datetime(2026, 3, 1, tzinfo=UTC), "end": datetime(2026, 3, 2, tzinfo=UTC)}
SERIES_PARAMETERS = {"customer": "acme", "meter": "", "from": "2026-03-01 00:00:00.000", "to": "2026-03-02 00:00:00.000"}


@pytest.fixture(scope="class")
def storage(chdb_path: Path) -> Iterator[Storage]:
    """One seeded database for the in-process tests (they only read); the directory is free again after them."""
    settings = StorageSettings(backend="chdb", path=chdb_path, database=f"test_gateway_{uuid.uuid4().hex[:8]}")
    with open_storage(settings) as opened:
        migrate(opened)
        seed(opened)
        try:
            yield opened
        finally:
            opened.drop_database()


@pytest.fixture(scope="class")
def gateway(storage: Storage) -> Iterator[QueryGateway]:
    with QueryGateway(storage) as serving:
        yield serving


def every_question(reader: Reader) -> dict[str, Any]:
    """Every dashboard question, for every customer (and two that do not exist), plus the operator ones."""
    answers: dict[str, Any] = {"health": queries.health(reader), "customers": queries.customers(reader)}
    answers["usage:everyone"] = queries.usage(reader, Scope())
    answers["finals:everyone"] = queries.finals(reader, Scope())
    for customer in ["acme", *LOOKALIKES[:4], "nobody", "x' OR '1'='1' --"]:
        answers[f"usage:{customer}"] = queries.usage(reader, Scope(customer=customer))
        answers[f"periods:{customer}"] = queries.periods(reader, Scope(customer=customer))
        answers[f"finals:{customer}"] = queries.finals(reader, Scope(customer=customer))
        for granularity in ("minute", "hour"):
            answers[f"{granularity}:{customer}"] = queries.series(
                reader, Scope(customer=customer, granularity=granularity, start=MARCH_1["start"], end=MARCH_1["end"])
            )
        answers[f"day:{customer}"] = queries.series(reader, Scope(customer=customer, granularity="day"))  # default range
    return answers


def owner_reader(gateway: QueryGateway) -> GatewayReader:
    """A reader with the gateway's secret, as open_reader makes it from the gateway file."""
    return GatewayReader(gateway.url, credential=gateway.secret)


def post(url: str, body: bytes, credential: str) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
    request = urllib.request.Request(f"{url}/query", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str, credential: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {credential}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- in this process ------------------------------------------------------------------------------


class TestInProcess:
    """A gateway over a storage opened by this process."""

    def test_the_gateway_answers_every_question_like_the_storage(self, storage: Storage, gateway: QueryGateway) -> None:
        direct, remote = every_question(StorageReader(storage)), every_question(owner_reader(gateway))
        assert remote == direct
        assert [r["total"] for r in direct["finals:acme"]] == ["15"] and direct["minute:acme'"][0]["customer_id"] == "acme'"
        assert direct["usage:nobody"] == [] and direct["hour:x' OR '1'='1' --"] == []

    @pytest.mark.parametrize(
        "name", ["no_such_query", "../migrations/0001_raw_events", "", "health.sql", "health; DROP TABLE raw_events"]
    )
    def test_only_named_queries_cross_the_gateway(self, gateway: QueryGateway, name: str) -> None:
        with pytest.raises(QueryError, match="no query named"):
            owner_reader(gateway).run(name, {})

    @pytest.mark.parametrize(
        ("parameters", "reason"),
        [
            ({**SERIES_PARAMETERS, "from": "not a time"}, "Cannot parse DateTime"),
            ({"customer": "acme"}, "Substitution `from` is not set"),
        ],
    )
    def test_a_bad_parameter_is_refused_with_clickhouses_reason_and_the_gateway_keeps_serving(
        self, gateway: QueryGateway, parameters: dict[str, Any], reason: str
    ) -> None:
        reader = owner_reader(gateway)
        with pytest.raises((QueryError, StorageError), match=reason):
            reader.run("series_hour", parameters)
        assert reader.run("series_hour", SERIES_PARAMETERS)[0]["customer_id"] == "acme"

    def test_parameters_are_bound_as_values_not_sql(self, gateway: QueryGateway) -> None:
        reader = owner_reader(gateway)
        for customer in ["acme' OR '1'='1", "acme'--", "{customer:String}", ["acme", "acme2"]]:
            assert reader.run("series_hour", {**SERIES_PARAMETERS, "customer": customer}) == [], customer
        with pytest.raises(QueryError, match=r"parameters\.customer: must be text, a number"):
            reader.run("series_hour", {**SERIES_PARAMETERS, "customer": {"customer_id": "acme"}})

    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            (b"not json", 400, "Expecting value"),
            (b'{"parameters": {}}', 400, "name"),
            (b'{"name": 1}', 400, "expected {'name': str, 'parameters': object}"),
            (b'{"name": "health", "parameters": ["x"]}', 400, "expected {'name': str"),
            (b'{"name": "health"}', 200, ""),
        ],
    )
    def test_malformed_requests_are_400(self, gateway: QueryGateway, body: bytes, status: int, message: str) -> None:
        code, answer = post(gateway.url, body, gateway.secret)
        assert code == status, answer
        if status == 400:
            assert message in answer["error"]
        else:
            assert answer["rows"][0]["dead_letters"] == 3

    def test_only_post_query_and_get_health_are_served(self, storage: Storage, gateway: QueryGateway) -> None:
        health = (200, {"owner_pid": os.getpid(), "database": storage.settings.database})
        assert get(f"{gateway.url}/health", gateway.secret) == health
        assert get(f"{gateway.url}/query", gateway.secret)[0] == 404
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {gateway.secret}"}
        request = urllib.request.Request(f"{gateway.url}/sql", data=b"SELECT 1", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        assert error.value.code == 404

    def test_concurrent_reads_through_the_gateway(self, storage: Storage, gateway: QueryGateway) -> None:
        direct = StorageReader(storage)
        asked = [
            ("series_hour", SERIES_PARAMETERS),
            ("customer_usage", {"customer": "acme", "meter": "", "since": "1970-01-01 00:00:00.000"}),
            ("customers", {}),
            ("dead_letter_reasons", {}),
        ]
        expected = {name: direct.run(name, parameters) for name, parameters in asked}
        remote = owner_reader(gateway)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: (asked[i % 4][0], remote.run(*asked[i % 4])), range(48)))
        assert all(rows == expected[name] for name, rows in answers)

    def test_the_gateway_file_says_where_and_is_removed_on_exit(self, storage: Storage) -> None:
        storage_settings = storage.settings
        path = gateway_file(storage_settings)
        assert path == storage_settings.path.resolve() / GATEWAY_FILE
        with QueryGateway(storage) as serving:  # (replaces the class's gateway's file: same process)
            assert json.loads(path.read_text()) == {
                "pid": os.getpid(),
                "url": serving.url,
                "database": storage_settings.database,
                "secret": serving.secret,
            }
            assert serving.url.startswith("http://127.0.0.1:")
            assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
            url, secret = serving.url, serving.secret
        assert not path.exists()
        with pytest.raises(StorageError, match="is unreachable"):
            GatewayReader(url, timeout_s=2, credential=secret).run("health", {})

    def test_a_gateway_leaves_another_processs_gateway_file_alone(self, storage: Storage) -> None:
        storage_settings = storage.settings
        path = gateway_file(storage_settings)
        try:
            with QueryGateway(storage):
                path.write_text(json.dumps({"pid": 1, "url": "http://127.0.0.1:9", "database": "other"}))
            assert json.loads(path.read_text())["pid"] == 1
        finally:
            path.unlink(missing_ok=True)


def test_open_reader_reads_directly_when_the_directory_is_free(storage_settings: StorageSettings) -> None:
    with open_storage(storage_settings) as storage:
        migrate(storage)
        seed(storage)
    with open_reader(storage_settings) as reader:
        assert isinstance(reader, StorageReader)
        assert not gateway_file(storage_settings).exists()
        assert queries.finals(reader, Scope(customer="acme"))[0]["total"] == "15"
    with open_reader(storage_settings, serve=True) as reader:
        assert isinstance(reader, StorageReader)
        info = json.loads(gateway_file(storage_settings).read_text())
        assert info["database"] == storage_settings.database
        remote: list[Any] = []
        gateway = GatewayReader(info["url"], credential=info["secret"])
        reading = threading.Thread(target=lambda: remote.append(gateway.run("customers", {})))
        reading.start()
        reading.join(10)
        assert remote == [reader.run("customers", {})]
    assert not gateway_file(storage_settings).exists()


# --- the owner in another process -----------------------------------------------------------------

OWNER = """
import sys
from pathlib import Path
from clickhouse.client import StorageSettings, open_storage
from clickhouse.gateway import QueryGateway
from clickhouse.migrate import migrate
from tests.integration.dashboard_data import seed

settings = StorageSettings(backend="chdb", path=Path(sys.argv[1]), database=sys.argv[2])
with open_storage(settings) as storage:
    if sys.argv[4] == "seed":
        migrate(storage)
        seed(storage)
    if sys.argv[3] == "serve":
        with QueryGateway(storage):
            print("ready", flush=True)
            sys.stdin.read()  # until the test closes stdin
    else:
        print("ready", flush=True)
        sys.stdin.read()
"""


class Owner:
    """A process that owns a chDB directory (and serves its gateway, or not) until stopped."""

    def __init__(self, path: Path, database: str, *, serve: bool, seed_data: bool = True) -> None:
        argv = [sys.executable, "-c", OWNER, str(path), database, "serve" if serve else "hold", "seed" if seed_data else "-"]
        self.process = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        # poll, not select: select() refuses descriptors above 1024, which a long session reaches
        waiting = select.poll()
        waiting.register(self.process.stdout, select.POLLIN)
        ready = waiting.poll(60_000)
        line = self.process.stdout.readline().strip() if ready else ""
        if line != "ready":
            self.kill()
            pytest.fail(f"the owner process did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Ends the owner normally (it removes its gateway file)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)

    def kill(self) -> None:
        """Ends the owner abruptly (a crash: the gateway file stays)."""
        self.process.kill()
        self.process.wait(30)


@pytest.fixture
def owners() -> Iterator[Callable[..., Owner]]:
    started: list[Owner] = []

    def start(path: Path, database: str, *, serve: bool, seed_data: bool = True) -> Owner:
        owner = Owner(path, database, serve=serve, seed_data=seed_data)
        started.append(owner)
        return owner

    yield start
    for owner in started:
        if owner.process.poll() is None:
            owner.kill()


def test_a_second_process_reads_through_the_owners_gateway(tmp_path: Path, owners: Callable[..., Owner]) -> None:
    path = tmp_path / "chdb"
    owner = owners(path, "owned", serve=True)
    settings = StorageSettings(backend="chdb", path=path, database="owned")
    with pytest.raises(StorageLockedError, match=f"in use by process {owner.pid}"), open_storage(settings):
        pass
    with open_reader(settings) as reader:
        assert isinstance(reader, GatewayReader)
        assert reader.url == json.loads(gateway_file(settings).read_text())["url"]
        secret = json.loads(gateway_file(settings).read_text())["secret"]
        assert get(f"{reader.url}/health", secret)[1] == {"owner_pid": owner.pid, "database": "owned"}
        assert [(r["meter"], r["total"], r["revision"]) for r in queries.finals(reader, Scope(customer="acme"))] == [
            ("tokens", "15", 2)
        ]
        assert queries.health(reader)["dead_letter_reasons"][0]["reason"] == "malformed_json"
        with pytest.raises(QueryError, match="a customer is required"):
            queries.series(reader, Scope())
        # the dashboard over the gateway answers as over the storage
        client, store = make_client(reader, tmp_path / "access", storage_label="via gateway")
        token, _ = make_token(store, "customer", "acme")
        usage = client.get("/api/usage?meter=tokens", headers=bearer(token)).json
        assert usage is not None
        assert [(r["total"], r["status"], r["group_by"]) for r in usage["rows"]] == [("4", "provisional", {"model": "l"})]
        assert client.get("/api/series?customer=acme&granularity=week", headers=bearer(token)).status_code == 400
        assert client.get("/api/usage?customer=acme2", headers=bearer(token)).status_code == 403
    with (
        pytest.raises(StorageLockedError, match="its gateway serves database 'owned', not 'other'"),
        open_reader(StorageSettings(backend="chdb", path=path, database="other")),
    ):
        pass
    owner.stop()
    assert not gateway_file(settings).exists()
    with open_reader(settings) as reader:  # the owner is gone: direct again
        assert isinstance(reader, StorageReader)
        assert queries.finals(reader, Scope(customer="acme"))[0]["total"] == "15"


def test_a_locked_directory_without_a_gateway_says_so(tmp_path: Path, owners: Callable[..., Owner]) -> None:
    path = tmp_path / "chdb"
    owner = owners(path, "owned", serve=False)
    settings = StorageSettings(backend="chdb", path=path, database="owned")
    with pytest.raises(StorageLockedError) as error, open_reader(settings):
        pass
    message = str(error.value)
    assert f"in use by process {owner.pid}" in message
    assert f"(that process serves no read gateway: no {path.resolve() / GATEWAY_FILE})" in message
    assert "METERING__STORAGE__URL" in message  # the ways out


def test_a_gateway_file_left_by_a_crashed_owner_is_not_trusted(tmp_path: Path, owners: Callable[..., Owner]) -> None:
    path = tmp_path / "chdb"
    crashed = owners(path, "owned", serve=True)
    crashed.kill()
    settings = StorageSettings(backend="chdb", path=path, database="owned")
    assert json.loads(gateway_file(settings).read_text())["pid"] == crashed.pid  # left behind
    owners(path, "owned", serve=False, seed_data=False)
    with pytest.raises(StorageLockedError, match="serves no read gateway"), open_reader(settings) as reader:
        reader.run("health", {})  # today: StorageError "... is unreachable"


def test_an_unknown_database_in_a_free_directory_is_a_clear_error(tmp_path: Path) -> None:
    settings = StorageSettings(backend="chdb", path=tmp_path / "chdb", database=f"missing_{uuid.uuid4().hex[:6]}")
    with pytest.raises(StorageError, match=r"does not exist.*metering migrate"), open_reader(settings):
        pass
