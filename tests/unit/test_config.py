"""Configuration: the example parses; errors name every bad key at once; env overrides; secrets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from infra.settings import PROJECT_ROOT
from jobs.config import ConfigError, load_config
from udfs.durations import format_duration, parse_duration
from udfs.meters import Aggregation
from udfs.periods import PeriodKind

EXAMPLE = PROJECT_ROOT / "config" / "metering.example.yaml"


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


MINIMAL = {"meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}]}


def test_the_example_parses_and_means_what_it_says() -> None:
    config = load_config(EXAMPLE, env={})
    assert [m.name for m in config.meters][:2] == ["api_calls", "tokens"]
    tokens = config.meters[1]
    assert tokens.aggregation is Aggregation.SUM and tokens.group_by == ("model", "direction")
    assert config.billing.policy_for("acme").cycle.timezone == "Europe/Berlin"
    assert config.billing.policy_for("acme").cycle.anchor == 15
    assert config.billing.policy_for("acme").grace == timedelta(hours=72)
    assert config.billing.policy_for("bharat-ai").cycle.timezone == "Asia/Kolkata"
    assert config.billing.policy_for("nightly-tests").cycle.kind is PeriodKind.DAY
    assert config.billing.policy_for("someone-else").grace == timedelta(hours=48)
    assert config.storage.path == (PROJECT_ROOT / ".metering" / "chdb")
    assert [m.name for m in config.meters_for("api_call")] == ["api_calls", "active_users"]


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    document = {
        "kafka": {"topics": {"events": "same", "raw": "same"}, "transaction_timout": "1m"},
        "pipeline": {"dedup_retention": "a week", "parallelism": 0},
        "billing": {"customers": {"acme": {"timezone": "Europe/Berln", "plan": "gold"}, "x": {"anchor": 32}}},
        "meters": [
            {"name": "ok", "event_type": "api_call", "aggregation": "count"},
            {"name": "Bad Name", "event_type": "api_call", "aggregation": "avg", "group_by": ["a", "a"]},
            {"name": "ok", "event_type": "x", "aggregation": "sum", "value": "payload.size"},
            {"event_type": "x"},
        ],
        "extra": 1,
    }
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, document), env={})
    problems = "\n".join(err.value.problems)
    for expected in [
        "extra: unknown key",
        "kafka.transaction_timout: unknown key",
        "kafka.topics: every topic must have its own name",
        "pipeline.dedup_retention: 'a week' is not a duration",
        "pipeline.parallelism: 0 must be a positive integer",
        "billing.customers.acme.plan: unknown plan 'gold'",
        "billing.customers.acme.timezone: unknown IANA time zone 'Europe/Berln'",
        "billing.customers.x.anchor: anchor 32 out of range 1–31",
        "meters[1].aggregation: 'avg' must be one of sum, count, max, min, unique_count, latest",
        "meters[1].name: 'Bad Name' must match",
        "meters[1].group_by: dimensions must not repeat",
        "meters[2].value: 'payload.size' must be 'quantity' or 'properties.<name>'",
        "meters[3].name: required",
        "meters[3].aggregation: required",
        "meters: meter name 'ok' is defined more than once",
    ]:
        assert expected in problems, f"missing {expected!r} in:\n{problems}"


def test_no_meters_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="meters: at least one meter is required"):
        load_config(write(tmp_path, {}), env={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "pipeline": {"dedup_retention": "7d"}})
    config = load_config(path, env={"METERING__PIPELINE__DEDUP_RETENTION": "3d", "METERING__KAFKA__TOPICS__EVENTS": "ev2"})
    assert config.pipeline.dedup_retention == timedelta(days=3)
    assert config.kafka.topics.events == "ev2"


def test_bad_environment_override_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.idle_timeout: 'soon' is not a duration"):
        load_config(write(tmp_path, MINIMAL), env={"METERING__PIPELINE__IDLE_TIMEOUT": "soon"})


def test_password_from_env_is_never_printed(tmp_path: Path) -> None:
    env = {
        "METERING__STORAGE__BACKEND": "server",
        "METERING__STORAGE__URL": "http://h:8123",
        "METERING__STORAGE__PASSWORD": "s3cret",
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.storage.password == "s3cret"
    assert "s3cret" not in repr(config)


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("meters: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})


@pytest.mark.parametrize(
    ("setting", "default", "not_a_duration"),
    [
        ("heartbeat_interval", timedelta(seconds=10), "often"),  # zero turns heartbeats off
        ("loader_max_batch_delay", timedelta(seconds=1), "soon"),  # zero inserts every poll
    ],
)
def test_durations_that_may_be_zero(tmp_path: Path, setting: str, default: timedelta, not_a_duration: str) -> None:
    assert getattr(load_config(EXAMPLE, env={}).pipeline, setting) == default
    zero = load_config(write(tmp_path, {**MINIMAL, "pipeline": {setting: 0}}), env={})
    assert getattr(zero.pipeline, setting) == timedelta(0)
    with pytest.raises(ConfigError, match=rf"pipeline\.{setting}: '{not_a_duration}' is not a duration"):
        load_config(write(tmp_path, {**MINIMAL, "pipeline": {setting: not_a_duration}}), env={})


def test_provisional_interval_cannot_beat_checkpoints(tmp_path: Path) -> None:
    document = {**MINIMAL, "pipeline": {"checkpoint_interval": "30s", "provisional_interval": "5s"}}
    with pytest.raises(ConfigError, match=r"pipeline\.provisional_interval: must be >= pipeline\.checkpoint_interval"):
        load_config(write(tmp_path, document), env={})


@pytest.mark.parametrize("step", ["7s", "90s", "2m", "1700ms"])
def test_provisional_interval_must_divide_a_minute(tmp_path: Path, step: str) -> None:
    document = {**MINIMAL, "pipeline": {"checkpoint_interval": "1s", "provisional_interval": step}}
    # 90s and 2m are beyond the setting's range (1s to 1m), which says so first
    with pytest.raises(ConfigError, match=r"pipeline\.provisional_interval: .*must divide one minute"):
        load_config(write(tmp_path, document), env={})


@pytest.mark.parametrize("step", ["1s", "5s", "12s", "30s", "1m", "2500ms"])
def test_provisional_intervals_that_divide_a_minute_load(tmp_path: Path, step: str) -> None:
    document = {**MINIMAL, "pipeline": {"checkpoint_interval": "1s", "provisional_interval": step}}
    assert load_config(write(tmp_path, document), env={}).pipeline.provisional_interval == parse_duration(step)


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_format_round_trips(millis: int) -> None:
    value = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", timedelta(hours=48)),
        ("1h30m", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        (30, timedelta(seconds=30)),
    ],
)
def test_duration_forms(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 days", "-1h", "1.5h", "h"])
def test_bad_durations(text: str) -> None:
    if text == "5":
        assert parse_duration(5) == timedelta(seconds=5)  # an integer means seconds, a string needs a unit
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
