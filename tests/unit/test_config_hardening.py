"""Configuration that cannot start wrong (issue #27): whatever the job would refuse, loading refuses first.

Each class of failure has its reproduction here: absurd durations, values the job's SQL cannot
express, identifiers that can never match an event, environment values retyped by YAML, typos.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.settings import PROJECT_ROOT
from jobs.cli import EXIT_USAGE, main
from jobs.config import DURATIONS, MAX_PARALLELISM, Config, ConfigError, load_config
from jobs.flink import sql
from udfs.durations import format_duration, parse_duration

EXAMPLE = PROJECT_ROOT / "config" / "metering.example.yaml"
MINIMAL = {"meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}]}


def write(directory: Path, document: object) -> Path:
    path = directory / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env or {})
    return "\n".join(err.value.problems)


def document_setting(key: str, value: object) -> dict[str, Any]:
    """MINIMAL with the dotted ``key`` (``billing.*.grace`` means the default policy's) set to ``value``."""
    parts = key.replace("*", "default").split(".")
    document: dict[str, object] = dict(MINIMAL)
    target = document
    for part in parts[:-1]:
        target = target.setdefault(part, {})  # type: ignore[assignment]
    target[parts[-1]] = value
    steps = ("checkpoint_interval", "provisional_interval")
    if parts[0] == "pipeline" and parts[1] in steps:  # the other one alike: provisional >= checkpoint
        target[steps[1 - steps.index(parts[1])]] = value
    return document


def concrete(key: str) -> str:
    return key.replace("*", "default")


# --- 1. durations: absurd values are configuration errors, never tracebacks ----------------------


def test_an_absurd_grace_is_a_config_error_naming_key_and_range(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, document_setting("billing.*.grace", "99999999999w")))
    assert "billing.default.grace: '99999999999w' is out of range" in text
    assert "0 to 366d" in text


def test_an_absurd_grace_exits_2_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, document_setting("billing.*.grace", "99999999999w"))
    assert main(["config", "validate", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "billing.default.grace" in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["99999999999w", "9" * 5000 + "ms", "1" * 30 + "d", "4000000000w"])
def test_parse_duration_refuses_overlong_values_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration(text)


@given(st.text(max_size=40))
def test_parse_duration_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(text) >= timedelta(0)


@pytest.mark.parametrize("key", sorted(DURATIONS))
def test_every_duration_setting_has_bounds_and_refuses_beyond_them(tmp_path: Path, key: str) -> None:
    rule = DURATIONS[key]
    assert rule.low <= rule.high
    too_long = format_duration(rule.high + timedelta(milliseconds=1))
    text = problems_of(write(tmp_path, document_setting(key, too_long)))
    assert f"{concrete(key)}: '{too_long}' is out of range" in text and rule.describe() in text
    for edge in (rule.low, rule.high):
        document = document_setting(key, format_duration(edge))
        if key == "kafka.transaction_timeout":  # it must also outlast the checkpoint interval
            document.setdefault("pipeline", {})["checkpoint_interval"] = format_duration(
                DURATIONS["pipeline.checkpoint_interval"].low
            )
        loaded = load_config(write(tmp_path, document), env={})
        assert value_of(loaded, key) == edge


@pytest.mark.parametrize("key", sorted(k for k, r in DURATIONS.items() if r.low > timedelta(milliseconds=1)))
def test_duration_lower_bounds(tmp_path: Path, key: str) -> None:
    rule = DURATIONS[key]
    too_short = format_duration(rule.low - timedelta(milliseconds=1))
    if too_short == "0ms" and rule.zero:
        return
    text = problems_of(write(tmp_path, document_setting(key, too_short)))
    assert f"{concrete(key)}: '{too_short}' is out of range" in text


def value_of(config: Config, key: str) -> timedelta:
    section, name = concrete(key).split(".", 1)
    if section == "billing":
        value: timedelta = config.billing.default.grace
        return value
    result: timedelta = getattr(getattr(config, section), name)
    return result


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(sorted(DURATIONS)),
    text=st.one_of(
        st.text(max_size=30),
        st.lists(
            st.tuples(st.integers(min_value=0, max_value=10**15), st.sampled_from(["ms", "s", "m", "h", "d", "w"])),
            min_size=1,
            max_size=3,
        ).map(lambda parts: "".join(f"{n}{u}" for n, u in parts)),
        st.integers(min_value=-(10**12), max_value=10**12).map(str),
    ),
)
def test_any_duration_loads_within_bounds_or_is_a_config_error(key: str, text: str) -> None:
    """From the file or the environment: a value within the key's range, or a ConfigError naming the key."""
    env_name = "METERING__" + concrete(key).upper().replace(".", "__")
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), document_setting(key, text))
        for source, env in ((path, {}), (write(Path(directory), MINIMAL), {env_name: text})):
            try:
                config = load_config(source, env=env)
            except ConfigError as exc:
                assert any(p.startswith(concrete(key)) or concrete(key) in p for p in exc.problems), exc.problems
                continue
            value = value_of(config, key)
            rule = DURATIONS[key]
            assert (value == timedelta(0) and rule.zero) or rule.low <= value <= rule.high


def test_parallelism_is_bounded_by_the_jobs_max_parallelism(tmp_path: Path) -> None:
    document = {**MINIMAL, "pipeline": {"parallelism": MAX_PARALLELISM + 1}}
    assert f"pipeline.parallelism: {MAX_PARALLELISM + 1} is out of range 1–{MAX_PARALLELISM}" in problems_of(
        write(tmp_path, document)
    )
    document = {**MINIMAL, "pipeline": {"parallelism": MAX_PARALLELISM}}
    assert load_config(write(tmp_path, document), env={}).pipeline.parallelism == MAX_PARALLELISM


# --- 2. what building the job refuses, loading refuses -------------------------------------------


def job_sql(config: Config) -> list[str]:
    """Every text the job builds from the configuration (jobs/flink/metering_job.py), without Flink."""
    from jobs.flink.metering_job import JobViews, alignment_options, events_columns

    pipeline = config.pipeline
    views = JobViews("first_seen", "flagged")
    return [
        events_columns(config),
        *alignment_options(config).values(),
        sql.parse_view("events", config.meters, pipeline.allowed_future_skew),
        sql.first_seen_input_view("parsed", pipeline.max_out_of_orderness, config.meters),
        sql.metered_view("deduped", config.meters),
        views.partials_sql(pipeline.provisional_interval),
        views.partials_sql(timedelta(minutes=1)),
    ]


@pytest.mark.parametrize("edge", ["low", "high"])
def test_the_job_builds_from_every_setting_at_its_bounds(tmp_path: Path, edge: str) -> None:
    pipeline: dict[str, str] = {}
    for key, rule in DURATIONS.items():
        section, name = key.split(".", 1)
        if section == "pipeline":
            pipeline[name] = format_duration(getattr(rule, edge))
    if edge == "high":
        pipeline["checkpoint_interval"] = pipeline["provisional_interval"]
    else:
        pipeline["provisional_interval"] = pipeline["checkpoint_interval"]
    document = {
        **MINIMAL,
        "pipeline": pipeline,
        "kafka": {"transaction_timeout": format_duration(DURATIONS["kafka.transaction_timeout"].high)},
    }
    config = load_config(write(tmp_path, document), env={})
    assert all(job_sql(config))


def test_a_skew_the_sql_interval_cannot_express_fails_validate(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "pipeline": {"allowed_future_skew": "100d"}})
    assert "pipeline.allowed_future_skew: '100d' is out of range" in problems_of(path)
    with pytest.raises(ValueError, match="99-day"):  # what building the job said before
        job_sql(
            replace(
                Config(meters=load_config(EXAMPLE, env={}).meters),
                pipeline=replace(Config().pipeline, allowed_future_skew=timedelta(days=100)),
            )
        )


@pytest.mark.parametrize("name", ["allowed_future_skew", "max_out_of_orderness", "provisional_interval"])
def test_settings_that_become_sql_intervals_stay_below_its_limit(name: str) -> None:
    assert DURATIONS[f"pipeline.{name}"].high < sql.LONGEST_INTERVAL


def test_an_empty_meter_list_is_refused(tmp_path: Path) -> None:
    """``event_type NOT IN ()`` and ``CASE event_type END`` are not SQL: the job cannot be built without meters."""
    assert "meters: at least one meter is required" in problems_of(write(tmp_path, {"meters": []}))


def test_transaction_timeout_must_outlast_a_checkpoint(tmp_path: Path) -> None:
    document = {
        **MINIMAL,
        "kafka": {"transaction_timeout": "1m"},
        "pipeline": {"checkpoint_interval": "1m", "provisional_interval": "1m"},
    }
    assert "kafka.transaction_timeout: must be longer than pipeline.checkpoint_interval" in problems_of(write(tmp_path, document))


@pytest.mark.parametrize("topic", ["usage events", "", "a/b", ".", "..", "x" * 250, "é"])
def test_topic_names_kafka_refuses_are_refused(tmp_path: Path, topic: str) -> None:
    assert "kafka.topics.raw" in problems_of(write(tmp_path, {**MINIMAL, "kafka": {"topics": {"raw": topic}}}))


def test_the_events_topic_leaves_room_for_its_duplicates_topic(tmp_path: Path) -> None:
    document = {**MINIMAL, "kafka": {"topics": {"events": "e" * 240}}}
    assert "kafka.topics.events" in problems_of(write(tmp_path, document))


def test_cli_parallelism_override_is_bounded() -> None:
    from jobs.flink.metering_job import with_parallelism

    config = load_config(EXAMPLE, env={})
    assert with_parallelism(config, MAX_PARALLELISM).pipeline.parallelism == MAX_PARALLELISM
    for bad in (-1, MAX_PARALLELISM + 1):
        with pytest.raises(ConfigError, match="--parallelism"):
            with_parallelism(config, bad)


# --- 3. identifiers matched against event data follow the event schema --------------------------


@pytest.mark.parametrize("customer", [" acme", "acme ", "ac me", "-acme", "x" * 129, "acme\n"])
def test_a_customer_id_no_event_can_carry_is_refused(tmp_path: Path, customer: str) -> None:
    document = {**MINIMAL, "billing": {"customers": {customer: {"period": "day"}}}}
    text = problems_of(write(tmp_path, document))
    assert "billing.customers[" in text and "customer_id" in text and "schemas/usage_event.v1.json" in text


@pytest.mark.parametrize("customer", ["acme", "0123", "a.b:c@d-e_f", "x" * 128])
def test_customer_ids_the_schema_allows_load_verbatim(tmp_path: Path, customer: str) -> None:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + f"billing:\n  customers:\n    {customer}: {{period: day}}\n")
    assert list(load_config(path, env={}).billing.customers) == [customer]


def test_numeric_looking_customer_ids_keep_their_text(tmp_path: Path) -> None:
    """YAML 1.1 reads 0123 as octal 83 and 1_000 as 1000: a customer id is text, as written."""
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "billing:\n  customers:\n    0123: {period: day}\n    10042: {period: week}\n")
    assert sorted(load_config(path, env={}).billing.customers) == ["0123", "10042"]


@pytest.mark.parametrize(
    ("meter", "field"),
    [
        ({"event_type": " api_call"}, "event_type"),
        ({"event_type": "API_CALL"}, "event_type"),
        ({"event_type": "a" * 65}, "event_type"),
        ({"group_by": ["model "]}, "group_by[0]"),
        ({"group_by": ["1model"]}, "group_by[0]"),
        ({"aggregation": "sum", "value": "properties. size"}, "value"),
    ],
)
def test_meter_identifiers_follow_the_event_schema(tmp_path: Path, meter: dict[str, object], field: str) -> None:
    document = {"meters": [{"name": "m", "event_type": "api_call", "aggregation": "count", **meter}]}
    assert f"meters[0].{field}:" in problems_of(write(tmp_path, document))


def test_identifier_rules_come_from_the_event_schema() -> None:
    from schemas.validate import property_name_rule, schema_v1, string_rule

    properties = schema_v1()["properties"]
    assert string_rule("customer_id").pattern == properties["customer_id"]["pattern"]
    assert string_rule("customer_id").max_length == properties["customer_id"]["maxLength"]
    assert string_rule("event_type").pattern == properties["event_type"]["pattern"]
    assert property_name_rule().pattern == properties["properties"]["propertyNames"]["pattern"]


@pytest.mark.parametrize(
    "value", ["acme", " acme", "acme ", "acme\n", "acme\r\n", "ac:me@x.y-z_", "_x", "a" * 128, "a" * 129, "é"]
)
def test_a_configured_identifier_is_valid_exactly_when_events_can_carry_it(value: str) -> None:
    """The config's rules and the event's rules (schemas/validate.py, the job's reader) accept the same values."""
    import json

    from schemas.validate import record_verdict, string_rule

    event = {"event_id": "e", "customer_id": "c", "event_type": "t", "timestamp": "2026-03-01T00:00:00Z", "quantity": "1"}
    for field in ("customer_id", "event_type"):
        accepted = record_verdict(json.dumps({**event, field: value})) is None
        assert (string_rule(field).problem(value) is None) == accepted, (field, value)


# --- 4. environment values are typed by the key they set -----------------------------------------


@pytest.mark.parametrize("password", ["0123", "true", "null", "1e3", "0x1F", "~", " spaced ", "[a]", "yes"])
def test_env_strings_stay_verbatim(tmp_path: Path, password: str) -> None:
    env = {"METERING__STORAGE__PASSWORD": password, "METERING__STORAGE__USERNAME": "0123"}
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.storage.password == password
    assert config.storage.username == "0123"


def test_file_strings_stay_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "storage:\n  password: 0123\n  username: 0x10\n")
    config = load_config(path, env={})
    assert (config.storage.password, config.storage.username) == ("0123", "0x10")


def test_storage_settings_refusals_are_config_errors(tmp_path: Path) -> None:
    """StorageSettings checks the database name itself: its StorageError is a problem of the file, exit 2, not 1."""
    assert "storage.database" in problems_of(write(tmp_path, {**MINIMAL, "storage": {"database": "bad-name"}}))


def test_env_ints_bools_and_durations_parse_strictly(tmp_path: Path) -> None:
    env = {
        "METERING__PIPELINE__PARALLELISM": "4",
        "METERING__PIPELINE__IDLE_TIMEOUT": "45",
        "METERING__BILLING__DEFAULT__ANCHOR": "15",
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.pipeline.parallelism == 4
    assert config.pipeline.idle_timeout == timedelta(seconds=45)
    assert config.billing.default.cycle.anchor == 15


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("METERING__PIPELINE__PARALLELISM", "4.0", "pipeline.parallelism"),
        ("METERING__PIPELINE__PARALLELISM", "0x10", "pipeline.parallelism"),
        ("METERING__PIPELINE__PARALLELISM", "", "pipeline.parallelism"),
        ("METERING__PIPELINE__IDLE_TIMEOUT", "soon", "pipeline.idle_timeout"),
        ("METERING__BILLING__DEFAULT__GRACE", "99999999999w", "billing.default.grace"),
        ("METERING__BILLING__DEFAULT__ANCHOR", "fifteen", "billing.default.anchor"),
        ("METERING__PIPELINE", "fast", "pipeline"),
        ("METERING__METERS", "[]", "meters"),
    ],
)
def test_bad_env_values_name_the_variable_and_the_key(tmp_path: Path, name: str, value: str, key: str) -> None:
    text = problems_of(write(tmp_path, MINIMAL), {name: value})
    line = next(p for p in text.splitlines() if p.startswith(f"{key}:"))
    assert name in line


def test_bool_settings_accept_true_and_false_only(tmp_path: Path) -> None:
    document: dict[str, Any] = {
        "meters": [{"name": "m", "event_type": "api_call", "aggregation": "count", "allow_negative": "maybe"}]
    }
    assert "meters[0].allow_negative: 'maybe' must be true or false" in problems_of(write(tmp_path, document))
    document["meters"][0]["allow_negative"] = True
    assert load_config(write(tmp_path, document), env={}).meters[0].allow_negative is True


# --- 5. typos get a suggestion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"pipeline": {"dedup_retenton": "1d"}}, "pipeline.dedup_retenton: unknown key; did you mean pipeline.dedup_retention?"),
        ({"billing": {"default": {"grase": "1d"}}}, "billing.default.grase: unknown key; did you mean billing.default.grace?"),
        ({"kafka": {"topics": {"event": "x"}}}, "kafka.topics.event: unknown key; did you mean kafka.topics.events?"),
        ({"pipelin": {}}, "pipelin: unknown key; did you mean pipeline?"),
    ],
)
def test_unknown_keys_suggest_the_closest_known_one(tmp_path: Path, document: dict[str, object], expected: str) -> None:
    assert expected in problems_of(write(tmp_path, {**MINIMAL, **document}))


def test_unknown_keys_without_a_close_match_list_the_allowed_ones(tmp_path: Path) -> None:
    assert "pipeline.zzz: unknown key (allowed: " in problems_of(write(tmp_path, {**MINIMAL, "pipeline": {"zzz": 1}}))


def test_unknown_env_key_suggests_and_names_the_variable(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, MINIMAL), {"METERING__PIPELINE__IDLE_TIMEOT": "1m"})
    assert "pipeline.idle_timeot: unknown key; did you mean pipeline.idle_timeout?" in text
    assert "METERING__PIPELINE__IDLE_TIMEOT" in text


def test_unknown_plan_suggests_the_closest(tmp_path: Path) -> None:
    document = {**MINIMAL, "billing": {"plans": {"gold": {}}, "customers": {"acme": {"plan": "golld"}}}}
    assert "did you mean 'gold'?" in problems_of(write(tmp_path, document))


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "billing:\n  customers:\n    acme: {period: day}\n    acme: {period: week}\n")
    assert "acme" in problems_of(path) and "more than once" in problems_of(path)


# --- the documented ranges are the enforced ones -------------------------------------------------


@pytest.mark.parametrize("key", sorted(DURATIONS))
def test_the_example_and_the_operations_guide_state_each_range(key: str) -> None:
    rule = DURATIONS[key]
    example = EXAMPLE.read_text()
    name = key.rsplit(".", 1)[1]
    start = example.index(f"  {name}: ")
    following = example[start:].split("\n")
    # the key's comment: its own line and the continuation lines indented under it
    comment = following[0] + "".join(
        line for line in following[1:4] if line.lstrip().startswith("#") and line.startswith(" " * 20)
    )
    assert f"[{rule.describe()}]" in comment, comment
    guide = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    assert f"| `{key}` | {rule.describe()} | {rule.why} |" in guide
