"""The Grafana provisioning (infra/grafana): every panel's SQL runs on the real engine and stays within one customer.

The dashboard's queries are expanded the way Grafana and the ClickHouse plugin (grafana-clickhouse-datasource 4.x)
would expand them, then run on a chDB database migrated with the project's migrations and seeded with two customers:

1. Grafana's frontend replaces template variables (``applyTemplateVariables`` -> ``templateSrv.replace`` with the
   plugin's default format, which inserts a single value raw and joins several as ``'a','b'``). ``${var:sqlstring}``
   is Grafana's "SQL string" format: each value quoted with ``'``, ``'`` doubled, ``"`` as ``\\"``, values joined by
   ``,``. Names starting with ``__`` that are not variables are left alone, as Grafana does.
2. The plugin's backend expands its macros (pkg/macros/macros.go): ``$__fromTime_ms`` ->
   ``fromUnixTimestamp64Milli(<ms>)``, ``$__toTime_ms`` likewise; ``$__fromTime`` / ``$__toTime`` ->
   ``toDateTime(<unix seconds>)``.

Only the variables, formats and macros the dashboard uses are implemented; anything else fails the test, so a new
panel that uses something else has to extend the expander (and be checked against the plugin) first.

Customer B is seeded with values of its own; a customer-scoped panel run for customer A must show none of them.
Customer A's id contains both quote characters, so the escaping of the ``sqlstring`` format is exercised too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml

from clickhouse import tables
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.migrate import migrate
from infra.settings import PROJECT_ROOT
from tests.integration.dashboard_data import commit_revision

GRAFANA = PROJECT_ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "metering.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "metering.yaml"
README = GRAFANA / "README.md"

PLUGIN_TYPE = "grafana-clickhouse-datasource"
#: jsonData keys of the plugin (4.20.0): those pkg/plugin/settings.go reads plus the documented provisioning keys
#: (docs/sources/configure.md). A misspelt key would be ignored silently.
PLUGIN_JSONDATA_KEYS = {
    "host", "port", "protocol", "secure", "path", "tlsSkipVerify", "tlsAuth", "tlsAuthWithCACert", "username",
    "defaultDatabase", "dialTimeout", "queryTimeout", "connMaxLifetime", "maxIdleConns", "maxOpenConns",
    "customSettings", "httpHeaders", "forwardGrafanaHeaders", "oauthPassThru", "oauthPassThruAllowFallback",
    "enableRowLimit", "rowCapacityHint", "validateSql", "enableMapKeysDiscovery", "configMode", "signalType",
    "defaultTable", "logs", "traces",
}  # fmt: skip
PLUGIN_SECURE_KEYS = {"password", "tlsCACert", "tlsClientCert", "tlsClientKey"}

# The time picker's range for the test: two UTC days, long enough ago to be before the usage panel's `since`.
RANGE_FROM = datetime(2025, 3, 1, tzinfo=UTC)
RANGE_TO = datetime(2025, 3, 3, tzinfo=UTC)

A = 'o\'brien "eu"'  # both quote characters: the sqlstring format must escape them
B = "globex"
EU = '{"region":"eu"}'
B_GROUP = '{"tenant":"globex-only"}'
#: Every value seeded for customer B; none may appear in a panel run for customer A.
B_VALUES = {Decimal("9000.5"), Decimal("9100.25"), Decimal("9200.75"), Decimal("9300.125"), Decimal("9999.25")}


# --- the expander -----------------------------------------------------------------------------------------------


def sql_string(value: str | list[str]) -> str:
    """Grafana's ``sqlstring`` variable format (sqlStringFormatter in @grafana/scenes / grafana-data)."""

    def one(v: str) -> str:
        return "'" + v.replace("'", "''").replace('"', '\\"') + "'"

    return ",".join(one(v) for v in value) if isinstance(value, list) else one(value)


def plugin_default_format(value: str | list[str]) -> str:
    """The plugin's own format for variables without an explicit one (CHDatasource.format)."""
    return "'" + "','".join(value) + "'" if isinstance(value, list) else value


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_MACRO = re.compile(r"\$__(\w+)")


def interpolate_variables(sql: str, variables: dict[str, str | list[str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        if name not in variables:
            if name.startswith("__"):  # a plugin macro (or a Grafana global the test does not use): left as is
                return match.group(0)
            raise AssertionError(f"the SQL uses ${name}, which is not a dashboard variable")
        if fmt is None:
            return plugin_default_format(variables[name])
        if fmt == "sqlstring":
            return sql_string(variables[name])
        raise AssertionError(f"variable format {fmt!r} is not implemented by the test's expander")

    return _VARIABLE.sub(replace, sql)


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    def ms(moment: datetime) -> int:
        return int(moment.timestamp() * 1000)

    macros: dict[str, Callable[[], str]] = {
        "fromTime_ms": lambda: f"fromUnixTimestamp64Milli({ms(start)})",
        "toTime_ms": lambda: f"fromUnixTimestamp64Milli({ms(end)})",
        "fromTime": lambda: f"toDateTime({int(start.timestamp())})",
        "toTime": lambda: f"toDateTime({int(end.timestamp())})",
    }

    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in macros:
            raise AssertionError(f"macro $__{match.group(1)} is not implemented by the test's expander")
        return macros[match.group(1)]()

    return _MACRO.sub(replace, sql)


def expand(sql: str, variables: dict[str, str | list[str]], start: datetime = RANGE_FROM, end: datetime = RANGE_TO) -> str:
    expanded = expand_macros(interpolate_variables(sql, variables), start, end)
    assert "$" not in expanded, expanded
    return expanded


def test_expander_matches_the_plugin_and_grafana() -> None:
    sql = "SELECT * FROM v(customer = ${customer:sqlstring}, from = $__fromTime_ms, to = $__toTime) WHERE m IN ($meter)"
    assert expand(sql, {"customer": A, "meter": ["x", "y"]}) == (
        "SELECT * FROM v(customer = 'o''brien \\\"eu\\\"', from = fromUnixTimestamp64Milli(1740787200000), "
        "to = toDateTime(1740960000)) WHERE m IN ('x','y')"
    )
    with pytest.raises(AssertionError, match="not a dashboard variable"):
        expand("SELECT ${nope}", {})
    with pytest.raises(AssertionError, match="not implemented"):
        expand("SELECT $__timeFilter(t)", {})


# --- the files ----------------------------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def go_expand_env(value: Any, env: dict[str, str]) -> Any:
    """Grafana's interpolation of provisioning values (Go's os.ExpandEnv: unset -> '', no defaults)."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)
    if isinstance(value, dict):
        return {k: go_expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [go_expand_env(v, env) for v in value]
    return value


def test_datasource_provisioning_uses_the_plugins_keys() -> None:
    config = yaml.safe_load(DATASOURCES.read_text())
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == PLUGIN_TYPE
    assert set(source["jsonData"]) <= PLUGIN_JSONDATA_KEYS, set(source["jsonData"]) - PLUGIN_JSONDATA_KEYS
    assert set(source["secureJsonData"]) <= PLUGIN_SECURE_KEYS
    assert source["jsonData"]["protocol"] in ("http", "native")

    referenced = set(re.findall(r"\$\{(\w+)\}", DATASOURCES.read_text()))
    readme = README.read_text()
    assert referenced, "the data source should take its connection from the environment"
    for name in referenced:
        assert name in readme, f"{name} is not documented in {README.relative_to(PROJECT_ROOT)}"

    env = {
        "CLICKHOUSE_HOST": "clickhouse",
        "CLICKHOUSE_PORT": "8123",
        "CLICKHOUSE_USER": "default",
        "CLICKHOUSE_PASSWORD": "",
        "CLICKHOUSE_DATABASE": "metering",
    }
    expanded = go_expand_env(source, env)
    assert expanded["jsonData"]["host"] == "clickhouse"
    assert int(expanded["jsonData"]["port"]) == 8123  # the plugin parses a string port (strconv.ParseInt)
    assert expanded["jsonData"]["defaultDatabase"] == "metering"


def test_dashboard_provider_points_at_the_dashboards_folder() -> None:
    config = yaml.safe_load(PROVIDERS.read_text())
    [provider] = config["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    readme = README.read_text()
    assert f"infra/grafana/dashboards:{path}" in readme, "the README's mount must put the dashboards where the provider looks"
    assert "infra/grafana/provisioning:/etc/grafana/provisioning" in readme


def test_dashboard_references_the_provisioned_datasource_everywhere() -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    expected = {"type": source["type"], "uid": source["uid"]}
    dashboard = load_dashboard()

    def references(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    found = list(references(dashboard))
    assert found and all(ref == expected for ref in found), [ref for ref in found if ref != expected]

    assert 39 <= dashboard["schemaVersion"] <= 41  # what Grafana 11.x / 12.x write; both load 39 and migrate it
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"customer", "meter"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in query_panels(dashboard):
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["editorType"] == "sql" and target["rawSql"].strip()
            assert target["format"] in (0, 1)  # 0 time series, 1 table (the plugin's Grafana formats)
            assert target["pluginVersion"].startswith("4.")  # below 4.0 the plugin migrates the query as v3
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


# --- the queries, on the real engine --------------------------------------------------------------------------------


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


CURRENT_MONTH = month_start(datetime.now(UTC))
PREVIOUS_MONTH = month_start(CURRENT_MONTH - timedelta(days=1))
NEXT_MONTH = month_start(CURRENT_MONTH + timedelta(days=32))

SEGMENT_COLUMNS = tables.SEGMENT_COLUMNS
FINAL_COLUMNS = tables.REPLAY_FINAL_COLUMNS


def segment(
    customer: str, meter: str, group: str, aggregation: str, minute: datetime, value: str, period: tuple[datetime, datetime]
) -> list[Any]:
    amount = Decimal(value)
    day = minute.replace(hour=0, minute=0, second=0, microsecond=0)
    ms = int(minute.timestamp() * 1000)
    return [
        customer, meter, group, aggregation, minute, day, period[0], period[1], "on-time", 1, amount, 1, amount,
        amount, amount, [], ms, amount,
    ]  # fmt: skip


def final(customer: str, meter: str, group: str, period: tuple[datetime, datetime], value: str, revision: int) -> list[Any]:
    return [customer, meter, group, "sum", period[0], period[1], Decimal(value), 1, period[1] + timedelta(hours=1), revision]


MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
FEBRUARY = (datetime(2025, 2, 1, tzinfo=UTC), MARCH[0])
THIS_PERIOD = (CURRENT_MONTH, NEXT_MONTH)
LAST_PERIOD = (PREVIOUS_MONTH, CURRENT_MONTH)


def seed(storage: Storage) -> None:
    t = RANGE_FROM
    segments = [
        # Customer A: api_calls per minute in the range (and one minute after it), ...
        segment(A, "api_calls", EU, "sum", t, "1", MARCH),
        segment(A, "api_calls", EU, "sum", t + timedelta(minutes=1), "2", MARCH),
        segment(A, "api_calls", EU, "sum", t + timedelta(minutes=90), "5", MARCH),
        segment(A, "api_calls", EU, "sum", t + timedelta(days=1, hours=10), "7", MARCH),
        segment(A, "api_calls", EU, "sum", t + timedelta(hours=47, minutes=30), "0.5", MARCH),  # the range's last hour
        segment(A, "api_calls", EU, "sum", t + timedelta(days=4), "100", MARCH),
        # ... seats in the current month (provisional) and storage_gb in the previous one (final below).
        segment(A, "seats", "{}", "max", CURRENT_MONTH + timedelta(hours=1), "3", THIS_PERIOD),
        segment(A, "storage_gb", "{}", "sum", PREVIOUS_MONTH + timedelta(hours=2), "5.5", LAST_PERIOD),
        # Customer B: the same meter names and times, its own values, group and meter.
        segment(B, "api_calls", B_GROUP, "sum", t, "9000.5", MARCH),
        segment(B, "b_only_meter", B_GROUP, "sum", t + timedelta(hours=2), "9100.25", MARCH),
        segment(B, "seats", B_GROUP, "max", CURRENT_MONTH + timedelta(hours=1), "9200.75", THIS_PERIOD),
        segment(B, "storage_gb", B_GROUP, "sum", PREVIOUS_MONTH + timedelta(hours=2), "9300.125", LAST_PERIOD),
    ]
    finals = [
        final(A, "api_calls", EU, FEBRUARY, "11", 1),  # ends where the range starts: not in the finals panel
        final(A, "api_calls", EU, MARCH, "42", 1),
        final(A, "api_calls", EU, MARCH, "43", 2),  # a replay's higher revision wins
        final(A, "storage_gb", "{}", LAST_PERIOD, "5.5", 1),
        final(B, "api_calls", B_GROUP, MARCH, "9999.25", 1),
        final(B, "storage_gb", B_GROUP, LAST_PERIOD, "9300.125", 1),
    ]
    storage.client.insert("aggregate_segments", segments, column_names=SEGMENT_COLUMNS)
    storage.client.insert("period_finals", finals, column_names=FINAL_COLUMNS)
    commit_revision(storage, A, "api_calls", MARCH[0], 2)  # the replay's commit makes revision 2 visible
    now = datetime.now(UTC)
    storage.client.insert(
        "dead_letters",
        [
            ["schema_invalid", "", B, "e1", "{}", 2, 0, 1, now],
            ["schema_invalid", "", A, "e2", "{}", 2, 0, 2, now],
            ["unknown_meter", "gpu", A, "e3", "{}", 2, 0, 3, now - timedelta(days=3)],
        ],
        column_names=tables.DEAD_LETTER_COLUMNS,
    )
    storage.client.insert(
        "loader_batches",
        [["loader-1", now - timedelta(seconds=5), 10, {"aggregate_segments": 10}, now - timedelta(seconds=30), 4]],
        column_names=["loader_id", "batch_at", "rows", "rows_by_table", "newest_source_time", "consumer_lag"],
    )


@dataclass
class Result:
    columns: list[str]
    rows: list[dict[str, Any]]


@pytest.fixture
def storage(storage_settings: StorageSettings) -> Iterator[Storage]:
    with open_storage(storage_settings) as opened:
        migrate(opened)
        seed(opened)
        yield opened


def run(storage: Storage, sql: str, timezone: str | None = None) -> Result:
    settings = {"session_timezone": timezone} if timezone else None
    result = storage.client.query(sql, settings=settings)
    columns = list(result.column_names)
    return Result(columns, [dict(zip(columns, row, strict=True)) for row in result.result_rows])


def variable_values(storage: Storage, dashboard: dict[str, Any], customer: str) -> dict[str, str | list[str]]:
    """The variables' values as Grafana computes them: customer from its query, meter = All of the customer's meters."""
    by_name = {v["name"]: v for v in dashboard["templating"]["list"]}
    customers = [row[0] for row in storage.query_rows(expand(by_name["customer"]["query"], {}))]
    assert customers == sorted([A, B])
    assert customer in customers
    meters = [row[0] for row in storage.query_rows(expand(by_name["meter"]["query"], {"customer": customer}))]
    return {"customer": customer, "meter": meters}


def panel(dashboard: dict[str, Any], view: str) -> dict[str, Any]:
    [found] = [p for p in query_panels(dashboard) if re.search(rf"\b{view}\b", p["targets"][0]["rawSql"])]
    return found


def is_customer_scoped(p: dict[str, Any]) -> bool:
    return "${customer" in p["targets"][0]["rawSql"]


def cells(result: Result) -> list[Any]:
    return [value for row in result.rows for value in row.values()]


def test_every_panel_query_runs(storage: Storage) -> None:
    dashboard = load_dashboard()
    variables = variable_values(storage, dashboard, A)
    assert variables["meter"] == ["api_calls", "seats", "storage_gb"]
    for p in query_panels(dashboard):
        for target in p["targets"]:
            sql = expand(target["rawSql"], variables)
            try:
                run(storage, sql)
            except Exception as exc:  # the panel's title makes the failure findable
                raise AssertionError(f"panel {p['title']!r} failed:\n{sql}\n{exc}") from exc


def test_customer_panels_show_only_the_selected_customer(storage: Storage) -> None:
    dashboard = load_dashboard()
    scoped = [p for p in query_panels(dashboard) if is_customer_scoped(p)]
    assert len(scoped) == 5
    for customer, other_values, other_marker in ((A, B_VALUES, "globex"), (B, {Decimal("43"), Decimal("7")}, "brien")):
        variables = variable_values(storage, dashboard, customer)
        for p in scoped:
            result = run(storage, expand(p["targets"][0]["rawSql"], variables))
            assert result.rows, f"{p['title']!r} returned nothing for {customer!r}"
            values = cells(result)
            leaked = [v for v in values if isinstance(v, Decimal | float) and Decimal(str(v)) in other_values]
            assert not leaked, f"{p['title']!r} for {customer!r} shows the other customer's values {leaked}"
            assert not [v for v in values if isinstance(v, str) and other_marker in v], p["title"]
            if "customer_id" in result.columns:
                assert {row["customer_id"] for row in result.rows} == {customer}


def test_customer_panels_show_the_expected_numbers(storage: Storage) -> None:
    dashboard = load_dashboard()
    variables = variable_values(storage, dashboard, A)

    def rows(view: str) -> list[dict[str, Any]]:
        return run(storage, expand(panel(dashboard, view)["targets"][0]["rawSql"], variables)).rows

    hour = [(r["time"].replace(tzinfo=UTC), r["meter"], r["value"]) for r in rows("customer_series_hour")]
    assert hour == [
        (datetime(2025, 3, 1, 0, tzinfo=UTC), "api_calls", Decimal(3)),
        (datetime(2025, 3, 1, 1, tzinfo=UTC), "api_calls", Decimal(5)),
        (datetime(2025, 3, 2, 10, tzinfo=UTC), "api_calls", Decimal(7)),
        (datetime(2025, 3, 2, 23, tzinfo=UTC), "api_calls", Decimal("0.5")),
    ]  # the minute on March 5 is outside the time range
    day = [(r["time"].replace(tzinfo=UTC), r["value"]) for r in rows("customer_series_day")]
    assert day == [(datetime(2025, 3, 1, tzinfo=UTC), Decimal(8)), (datetime(2025, 3, 2, tzinfo=UTC), Decimal("7.5"))]

    usage = {r["meter"]: r for r in rows("customer_usage")}
    assert set(usage) == {"seats", "storage_gb"}  # api_calls' newest period (March 2025) started before `since`
    assert (usage["seats"]["status"], usage["seats"]["total_exact"]) == ("provisional", "3")
    assert (usage["storage_gb"]["status"], usage["storage_gb"]["total_exact"]) == ("final", "5.5")
    assert usage["seats"]["as_of_minute"].replace(tzinfo=UTC) == CURRENT_MONTH + timedelta(hours=1)

    finals = [(r["period_start"].replace(tzinfo=UTC), r["total_exact"], r["revision"]) for r in rows("customer_finals")]
    assert finals == [(MARCH[0], "43", 2)]  # February's final ends where the range starts
    periods = [(r["meter"], r["status"], r["total_exact"]) for r in rows("customer_periods")]
    assert periods == [("api_calls", "final", "43")]


def test_time_range_does_not_depend_on_the_server_time_zone(storage: Storage) -> None:
    """A view parameter is passed as text in the session time zone; the dashboard pins it to UTC (toTimeZone)."""
    dashboard = load_dashboard()
    variables = variable_values(storage, dashboard, A)
    for p in query_panels(dashboard):
        if not is_customer_scoped(p):
            continue
        sql = expand(p["targets"][0]["rawSql"], variables)
        in_utc = run(storage, sql, "UTC").rows
        for zone in ("Asia/Kolkata", "America/New_York"):
            assert run(storage, sql, zone).rows == in_utc, f"{p['title']!r} changes with session_timezone={zone}"


def test_unpinned_macro_would_shift_the_range(storage: Storage) -> None:
    """Why the dashboard wraps the macros: the bare expansion moves the range by the session's UTC offset."""
    bare = "SELECT count() FROM customer_series_hour(customer = ${customer:sqlstring}, from = $__fromTime_ms, to = $__toTime_ms)"
    sql = expand(bare, {"customer": A})
    in_utc = run(storage, sql, "UTC").rows
    assert in_utc == [{"count()": 4}]
    for zone in ("Asia/Kolkata", "America/New_York"):  # loses the first hours / the last hour of the range
        assert run(storage, sql, zone).rows != in_utc, zone


def test_meter_variable_filters(storage: Storage) -> None:
    dashboard = load_dashboard()
    variables = {**variable_values(storage, dashboard, A), "meter": ["seats"]}
    result = run(storage, expand(panel(dashboard, "customer_usage")["targets"][0]["rawSql"], variables))
    assert [r["meter"] for r in result.rows] == ["seats"]


def test_operator_panels(storage: Storage) -> None:
    dashboard = load_dashboard()
    variables = variable_values(storage, dashboard, A)
    reasons = run(storage, expand(panel(dashboard, "dead_letter_reasons")["targets"][0]["rawSql"], variables)).rows
    assert [(r["reason"], r["total"], r["last_24h"]) for r in reasons] == [("schema_invalid", 2, 2), ("unknown_meter", 1, 0)]

    health = [p for p in query_panels(dashboard) if "pipeline_health" in p["targets"][0]["rawSql"]]
    assert len(health) == 2
    merged: dict[str, Any] = {}
    for p in health:
        [row] = run(storage, expand(p["targets"][0]["rawSql"], variables)).rows
        merged.update(row)
    assert merged["customers"] == 2 and merged["finals"] == 5 and merged["dead_letters"] == 3
    assert merged["loader_consumer_lag"] == 4
    assert 0 <= merged["loader_idle_seconds"] < 600 and 25 <= merged["newest_event_age_seconds"] < 600


def test_readme_names_every_panel() -> None:
    readme = README.read_text()
    for p in query_panels(load_dashboard()):
        title = p["title"].split(":")[0].strip()
        assert title in readme, f"panel {title!r} is not described in {README.relative_to(PROJECT_ROOT)}"
