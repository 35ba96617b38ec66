"""The dashboard in a real browser, over a real pipeline run, checked against the input file.

generate -> produce -> bounded metering job (MiniCluster) -> `metering load` (following, owns the
chDB directory and serves its read gateway) -> `metering dashboard` (reads through that gateway) ->
headless Chromium. The page's numbers are compared with an independent recomputation from the
generated events: the usage table's finals, and the chart's points at day and hour granularity
after clicking the granularity switch. Then more events are produced while the page stays open,
and its health panel must show them without a reload (auto-refresh). That is the operator's view
(an operator token in the URL fragment). Then the customer's: with a customer token only, the page
shows that customer and nothing of anyone else (no picker, no health panel), the token leaves the
address bar, and a bad token gets a clear message. No page logs a Content-Security-Policy
violation. Screenshots are saved to the test artifacts folder (tests/e2e/browser.py).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clickhouse.access import SigningKey, TokenStore, issue
from clickhouse.gateway import GatewayReader, gateway_file
from clickhouse.queries import health
from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import Config
from jobs.demo import accepted, recompute
from jobs.produce import make_producer
from schemas.validate import raw_event_line
from tests.e2e.browser import artifacts_dir, chromium
from tests.e2e.harness import run_bounded_job
from udfs.periods import Period, epoch_millis, local_midnight, zone

SUM_METER = "credits"  # a sum meter without group-by: one line per chart
SIGNING_KEY = "e2e-dashboard-browser-signing-key-000"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def background() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `metering` subcommands in the background; stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(log: Path, *args: str) -> subprocess.Popen[str]:
        handle = log.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
        started.append((process, log))
        return process

    yield start
    for process, _ in reversed(started):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def expected_buckets(events: Path, config: Config, customer: str, granularity: str) -> dict[str, Decimal]:
    """The SUM_METER's total per bucket (UTC hour, or the customer's local day), from the input file."""
    tz = zone(config.billing.policy_for(customer).cycle.timezone)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for counted in accepted(events, config):
        if counted.event.customer_id != customer or counted.meter.name != SUM_METER:
            continue
        moment = counted.event.timestamp.astimezone(UTC)
        if granularity == "hour":
            bucket = moment.replace(minute=0, second=0, microsecond=0)
        else:
            bucket = local_midnight(moment.astimezone(tz).date(), tz).astimezone(UTC)
        label = bucket.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        totals[label] += counted.sign * Decimal(str(counted.value))  # an amendment's retraction counts -1
    return totals


def chart_points(browser: Any, meter: str) -> dict[str, Decimal]:
    """The exact values behind the meter's chart, by bucket (null points, i.e. empty buckets, left out)."""
    drawn = browser.execute_script(
        """
        const chart = Chart.getChart(`chart-${arguments[0]}`);
        return {labels: chart.data.labels.length,
                datasets: chart.data.datasets.map((d) => ({buckets: d.buckets, exact: d.exactValues, numbers: d.data}))};
        """,
        meter,
    )
    assert len(drawn["datasets"]) == 1, drawn
    line = drawn["datasets"][0]
    assert len(line["buckets"]) == len(line["exact"]) == len(line["numbers"]) == drawn["labels"]
    points: dict[str, Decimal] = {}
    for bucket, exact, number in zip(line["buckets"], line["exact"], line["numbers"], strict=True):
        if exact is None:
            assert number == 0, (bucket, number)  # an hour without usage is drawn at 0 for a sum meter
        else:
            assert float(number) == float(exact), (bucket, number, exact)
            points[bucket] = Decimal(exact)
    return points


def usage_rows(browser: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = browser.execute_script(
        """return [...document.querySelectorAll('#usage tbody tr')].map((tr) => ({meter: tr.dataset.meter,
             group: tr.dataset.group, start: tr.dataset.periodStart, total: tr.querySelector('.total').textContent,
             status: tr.querySelector('.status').textContent}));"""
    )
    return rows


def csp_violations(browser: Any) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


def test_dashboard_shows_the_pipeline_numbers_in_a_real_browser(
    pipeline: tuple[Config, Path, Path],
    stack_settings: StackSettings,
    background: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, config_path, events = pipeline
    # The dashboard (a subprocess) checks tokens with this key and this store's revocation list.
    monkeypatch.setenv("METERING__ACCESS__SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("METERING__ACCESS__STORE", str(tmp_path / "access"))
    store = TokenStore(tmp_path / "access")

    def token(customer: str | None = None) -> str:
        text, claims = issue(SigningKey(SIGNING_KEY), scope="customer" if customer else "operator", customer=customer, ttl_s=3600)
        store.record(claims)
        return text

    operator = token()
    run_bounded_job(config_path, stack_settings, "e2e-dashboard")
    expected = recompute(events, config)

    # The loader follows the topics, owns the chDB directory and serves reads to the dashboard.
    background(tmp_path / "load.log", "load", "--config", str(config_path))
    gateway = wait_for("the loader's gateway", lambda: json.loads(gateway_file(config.storage).read_text()))
    reader = GatewayReader(gateway["url"], credential=gateway["secret"])
    wait_for(
        "the loader to catch up (no records behind, idle for 3 s)",
        lambda: (h := health(reader))["loader_consumer_lag"] == 0 and h["loader_idle_seconds"] >= 3,
        timeout_s=180,
    )

    port = free_port()
    dashboard_args = ["--config", str(config_path), "--port", str(port), "--refresh", "2"]
    dashboard = background(tmp_path / "dashboard.log", "dashboard", *dashboard_args)
    base = f"http://127.0.0.1:{port}"
    config_request = urllib.request.Request(f"{base}/api/config", headers={"Authorization": f"Bearer {operator}"})
    wait_for("the dashboard", lambda: urllib.request.urlopen(config_request, timeout=2).status == 200, timeout_s=60)
    assert dashboard.poll() is None

    customer = max({k[0] for k in expected.finals}, key=lambda c: sum(1 for k in expected.finals if k[0] == c))
    shots = artifacts_dir()
    with chromium() as browser:
        browser.get(f"{base}/?customer={customer}&granularity=day#token={operator}")
        wait_for("the first render", lambda: int(browser.execute_script("return document.body.dataset.refreshes || 0")) >= 1)
        assert browser.find_element("id", "error").get_attribute("hidden") is not None, browser.find_element("id", "error").text
        assert "via its owner's gateway" in browser.page_source
        assert browser.find_element("id", "health-panel").is_displayed()

        # Usage so far: the newest period per meter/group; where final it is the recomputed final, exactly.
        rows = usage_rows(browser)
        assert rows, "the usage table is empty"
        finals_shown = 0
        for row in rows:
            assert row["status"] in ("final", "provisional")
            start_ms = epoch_millis(datetime.fromisoformat(row["start"].replace("Z", "+00:00")))
            key = (customer, row["meter"], json.dumps(json.loads(row["group"]), sort_keys=True), start_ms)
            if row["status"] == "final":
                finals_shown += 1
                assert Decimal(row["total"]) == expected.finals[key][0], (row, expected.finals[key])
        assert finals_shown > 0

        # Cost and limits: a final row's cost is the recomputed final priced by the customer's card;
        # a limit's use is its meter's rows combined against the entitlement rule's quantity.
        assert browser.find_element("id", "cost-panel").is_displayed()
        cost = browser.execute_script("return window.dashboard.data.cost")
        priced = 0
        for row in cost["rows"]:
            if row["is_final"]:
                start, end = (datetime.fromisoformat(row[k].replace("Z", "+00:00")) for k in ("period_start", "period_end"))
                key = (customer, row["meter"], json.dumps(row["group_by"], sort_keys=True), epoch_millis(start))
                charge = config.rating.price(customer, row["meter"], Period(start, end), expected.finals[key][0])
                assert charge is not None and row["cost"] == f"{charge.rounded:f}", (row, charge)
                priced += 1
        assert priced > 0
        assert [limit["meter"] for limit in cost["limits"]] == ["api_calls"]  # the demo's entitlement rule
        (limit,) = cost["limits"]
        used = sum(Decimal(r["quantity"]) for r in cost["rows"] if r["meter"] == "api_calls")
        assert Decimal(limit["used"]) == used and Decimal(limit["used_pct"]) == used * 100 / Decimal(limit["limit"])

        # The chart at day granularity (the customer's local days), then hour after the switch.
        for granularity in ("day", "hour"):
            if granularity == "hour":
                browser.find_element("id", "granularity-hour").click()

            def chart_shows(g: str = granularity) -> Any:
                return browser.execute_script(
                    "const c = Chart.getChart(`chart-${arguments[0]}`); "
                    "return c && c.canvas.dataset.granularity === arguments[1];",
                    SUM_METER,
                    g,
                )

            wait_for(f"the {granularity} chart", chart_shows)
            payload = browser.execute_script("return window.dashboard.data.series")
            shown = chart_points(browser, SUM_METER)
            wanted = {
                b: v
                for b, v in expected_buckets(events, config, customer, granularity).items()
                if payload["from"] <= b < payload["to"]
            }
            assert shown == wanted, (granularity, sorted(set(shown) ^ set(wanted))[:5])
            # Not an empty window that trivially agrees: at least two buckets with usage. How many
            # depends on the generated events (the seed varies per run), so no larger floor.
            assert len(shown) >= 2, (granularity, shown)
            assert "active" in browser.find_element("id", f"granularity-{granularity}").get_attribute("class")
            browser.save_screenshot(str(shots / f"dashboard-{granularity}.png"))

        # Auto-refresh: events produced now reach the health panel without reloading the page.
        before = int(browser.find_element("id", "health-raw-events").text)
        # The job's bounded run is over: write what it would write for them (the loader reads raw rows).
        lines = [
            json.dumps(
                {
                    "event_id": f"late-visitor-{i}",
                    "customer_id": customer,
                    "event_type": "api_call",
                    "timestamp": "2026-03-30T12:00:00Z",
                    "quantity": 1,
                    "properties": {"user": f"visitor-{i}"},
                }
            )
            for i in range(25)
        ]
        producer = make_producer(config.kafka.bootstrap_servers)
        try:
            for offset, line in enumerate(lines, start=10**9):
                raw_key, raw_value = raw_event_line(line.encode(), topic=config.kafka.topics.events, offset=offset) or (b"", b"")
                producer.send(config.kafka.topics.raw, key=raw_key, value=raw_value)
            producer.flush()
        finally:
            producer.close()
        wait_for(
            "the page to show the new raw events",
            lambda: int(browser.find_element("id", "health-raw-events").text) == before + len(lines),
            timeout_s=60,
        )
        browser.save_screenshot(str(shots / "dashboard-refreshed.png"))
        assert csp_violations(browser) == []

        # The customer's view, as a SaaS would embed it: a customer token in the fragment, nothing else.
        browser.get(f"{base}/#token={token(customer)}")
        wait_for(
            "the customer view",
            lambda: browser.execute_script(
                "return document.body.dataset.scope === 'customer' && Number(document.body.dataset.refreshes || 0) >= 1"
            ),
        )
        assert "token=" not in browser.current_url  # out of the address bar (and of any link copied from it)
        assert browser.find_element("id", "error").get_attribute("hidden") is not None, browser.find_element("id", "error").text
        assert not browser.find_element("id", "customer-picker").is_displayed()
        assert not browser.find_element("id", "health-panel").is_displayed()
        assert browser.find_element("id", "customer-name").text == customer
        data = browser.execute_script("return window.dashboard.data")
        assert data["health"] is None and data["usage"]["customer"] == customer
        assert {r["customer_id"] for r in data["usage"]["rows"]} == {customer}
        assert {r["customer_id"] for r in data["finals"]["rows"]} <= {customer}
        others = {k[0] for k in expected.finals} - {customer}
        page = browser.page_source
        assert others and not [other for other in others if other in page], others
        shown_finals = 0
        for row in usage_rows(browser):
            if row["status"] == "final":
                shown_finals += 1
                start_ms = epoch_millis(datetime.fromisoformat(row["start"].replace("Z", "+00:00")))
                key = (customer, row["meter"], json.dumps(json.loads(row["group"]), sort_keys=True), start_ms)
                assert Decimal(row["total"]) == expected.finals[key][0], (row, expected.finals[key])
        assert shown_finals == finals_shown  # the operator's view of this customer, the same numbers
        wait_for(
            "the customer's chart", lambda: browser.execute_script("return !!Chart.getChart(`chart-${arguments[0]}`)", SUM_METER)
        )
        payload = browser.execute_script("return window.dashboard.data.series")
        wanted = {
            b: v for b, v in expected_buckets(events, config, customer, "hour").items() if payload["from"] <= b < payload["to"]
        }
        assert chart_points(browser, SUM_METER) == wanted
        browser.save_screenshot(str(shots / "dashboard-customer.png"))
        assert csp_violations(browser) == []

        # A token that is not one: a clear message, no data.
        browser.get(f"{base}/#token=not-a-token")
        wait_for("the refusal", lambda: browser.find_element("id", "error").get_attribute("hidden") is None)
        assert browser.find_element("id", "error").text.startswith("Not signed in:")
        assert browser.execute_script("return window.dashboard.data.usage") is None
    assert dashboard.poll() is None, (tmp_path / "dashboard.log").read_text()[-3000:]
