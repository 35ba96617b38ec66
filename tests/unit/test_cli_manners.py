"""The command line's manners, as a new user meets them: labelled times, logs without `\\r`, how to stop the
stack, `--version`, help for every `--format`, JSON that scripts can read on success and on failure."""

from __future__ import annotations

import argparse
import io
import json
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import EXIT_OK, EXIT_USAGE, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "metering.example.yaml"


Found = list[tuple[tuple[str, ...], argparse.ArgumentParser]]


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Found:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, (*path, name))
    return found


# --- the demo ---------------------------------------------------------------------------------


def test_demo_table_labels_period_bounds_as_utc() -> None:
    from jobs.cli.demo import render_usage

    row = {
        "customer_id": "acme",
        "meter": "tokens",
        "group_by": {"model": "small-1"},
        "period_start": "2026-03-01T00:00:00.000Z",
        "period_end": "2026-04-01T00:00:00.000Z",
        "total": "12",
        "status": "final",
        "event_count": 3,
    }
    text = render_usage([row])
    assert "2026-03-01 00:00 UTC .. 2026-04-01 00:00 UTC" in text


def test_demo_says_how_to_stop_the_stack_with_a_real_command() -> None:
    from jobs.cli.demo import closing_text
    from jobs.cli.stack import STOP_COMMAND

    assert STOP_COMMAND in closing_text(Path("x/metering.yaml"), "acme")
    args = build_parser().parse_args(STOP_COMMAND.split()[1:])  # the command it names exists
    assert (args.command, args.action) == ("stack", "down")


@pytest.mark.parametrize("key_in_env", [True, False])
def test_demo_ends_with_a_customer_token_and_the_link_that_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_in_env: bool
) -> None:
    from clickhouse.access import SigningKey, TokenStore, verify
    from jobs.cli.demo import closing_text, demo_access

    key = "demo-test-signing-key-0123456789abcdef"
    monkeypatch.setenv("METERING__ACCESS__STORE", str(tmp_path / "access"))
    if key_in_env:
        monkeypatch.setenv("METERING__ACCESS__SIGNING_KEY", key)
    else:
        monkeypatch.delenv("METERING__ACCESS__SIGNING_KEY", raising=False)
    config = tmp_path / "metering.yaml"
    config.write_text("{}\n")
    access = demo_access(config, tmp_path, "acme")
    if key_in_env:
        assert access.key_file is None
    else:  # a key made for the run: in a file only its owner reads, never printed
        assert access.key_file is not None and access.key_file.stat().st_mode & 0o777 == 0o600
        key = access.key_file.read_text()
    claims = verify(access.token, SigningKey(key))
    assert (claims.scope, claims.customer) == ("customer", "acme")
    assert [entry.claims.jti for entry in TokenStore(tmp_path / "access").issued()] == [claims.jti]  # revocable
    text = closing_text(config, "acme", access)
    assert f"http://127.0.0.1:8050/#token={access.token}" in text
    assert key not in text
    if not key_in_env:
        assert f'METERING__ACCESS__SIGNING_KEY="$(cat {access.key_file})" bash infra/run.sh dashboard' in text


def test_demo_json_prints_one_document_on_stdout_and_progress_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.cli import demo

    def fake_run(workdir: Path, events: int, seed: int, say: Any) -> tuple[int, dict[str, Any]]:
        say("== 1/7 local stack")
        return 0, {"passed": True, "timings": {"stack": 1.234}, "stop": "metering stack down"}

    monkeypatch.setattr(demo, "run_demo", fake_run)
    assert main(["demo", "--events", "10", "--format", "json"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert json.loads(out) == {"passed": True, "timings": {"stack": 1.2}, "stop": "metering stack down"}
    assert "1/7 local stack" in err


# --- progress in logs ---------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_writes_one_line_per_report_when_not_a_terminal() -> None:
    from jobs.cli.common import ProgressLine

    log = io.StringIO()
    progress = ProgressLine(log)
    progress.show("loaded 1 rows")
    progress.show("loaded 2 rows")
    progress.close()
    assert log.getvalue() == "loaded 1 rows\nloaded 2 rows\n"


def test_progress_rewrites_its_line_on_a_terminal() -> None:
    from jobs.cli.common import ProgressLine

    terminal = _Terminal()
    progress = ProgressLine(terminal)
    progress.show("loaded 1 rows")
    progress.show("loaded 2 rows")
    progress.close()
    assert terminal.getvalue() == "\rloaded 1 rows\rloaded 2 rows\n"


# --- produce --config ---------------------------------------------------------------------------


def test_produce_takes_topic_and_bootstrap_from_config_and_topic_still_overrides(tmp_path: Path) -> None:
    from jobs.cli.produce import produce_target

    config = tmp_path / "metering.yaml"
    document = yaml.safe_load(EXAMPLE.read_text())
    document["kafka"] |= {"bootstrap_servers": "10.0.0.1:9092", "topics": {"events": "team-a-events"}}
    config.write_text(yaml.safe_dump(document))
    assert produce_target(str(config), None, None)[:2] == ("10.0.0.1:9092", "team-a-events")
    assert produce_target(str(config), "other", None)[:2] == ("10.0.0.1:9092", "other")
    assert produce_target(str(config), None, "127.0.0.1:1")[:2] == ("127.0.0.1:1", "team-a-events")
    assert produce_target(None, None, "127.0.0.1:1")[:2] == ("127.0.0.1:1", "usage-events")
    args = build_parser().parse_args(["produce", "-", "--config", str(config)])
    assert args.config == str(config) and args.topic is None


# --- --version, --format help, query help -------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"metering {version('usage-metering')}\n"


def test_every_format_option_has_help() -> None:
    missing = [
        " ".join(path)
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if "--format" in action.option_strings and not action.help
    ]
    formats = [path for path, parser in _parsers(build_parser()) if any("--format" in a.option_strings for a in parser._actions)]
    assert len(formats) >= 20 and not missing, missing


def test_query_help_describes_every_question(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli.query import QUESTIONS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["query", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    expected = {
        "usage",
        "series",
        "periods",
        "finals",
        "health",
        "customers",
        "corrections",
        "dead-letters",
        "amendments",
        "cost",
        "stream-cost",
        "credits",
        "alerts",
    }
    assert set(QUESTIONS) == expected
    for name in QUESTIONS:
        assert f"{name}:" in text, name


def test_commands_without_machine_output_accept_format_json() -> None:
    parser = build_parser()
    for argv in (["load"], ["job", "run"], ["heartbeat"], ["demo"]):
        assert parser.parse_args([*argv, "--format", "json"]).format == "json"


# --- config validate --format json ------------------------------------------------------------


def test_config_validate_json_reports_failure_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("meters:\n  - {name: x, event_type: a, aggregation: avg}\npipeline: {parallelism: -1}\n")
    assert main(["config", "validate", str(bad), "--format", "json"]) == EXIT_USAGE
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is False
    paths = {e["path"] for e in document["errors"]}
    assert {"meters[0].aggregation", "pipeline.parallelism"} <= paths
    assert all(e["message"] for e in document["errors"])


def test_config_validate_json_success_says_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "config/metering.example.yaml", "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["valid"] is True


# --- query --format csv with no rows ------------------------------------------------------------


def test_query_columns_for_an_empty_csv_put_group_by_last() -> None:
    from jobs.cli.query import output_columns, query_name

    assert query_name("usage", "", "hour") == "usage" and query_name("usage", "acme", "hour") == "customer_usage"
    assert query_name("series", "acme", "day") == "series_day" and query_name("dead-letters", "", "hour") == "dead_letters"
    columns = output_columns("finals")
    assert columns[0] == "customer_id" and columns[-1] == "group_by" and "group_key" not in columns


# --- load / job run / heartbeat: a JSON summary on stdout ----------------------------------------


def test_load_json_and_text_summaries(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from collections import Counter

    import jobs.runs
    from jobs.loader.loader import LoaderStats

    stats = LoaderStats(rows=Counter({"usage_minute": 5}), batches=2)
    monkeypatch.setattr(jobs.runs, "load_outputs", lambda config, **kw: jobs.runs.LoadRun(stats))
    monkeypatch.setattr("jobs.cli.load.interrupt_on_sigterm", lambda: None)  # keep pytest's SIGTERM handling
    assert main(["load", "--until-idle", "--config", str(EXAMPLE), "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"rows": {"usage_minute": 5}, "batches": 2, "retries": 0, "quarantined": {}}
    assert main(["load", "--until-idle", "--config", str(EXAMPLE), "--format", "text"]) == EXIT_OK
    assert "loaded 5 rows in 2 batches" in capsys.readouterr().out


def test_job_run_json_summary(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import jobs.runs

    ran = jobs.runs.JobRun("metering", True, ["usage-events"], 3.21)
    monkeypatch.setattr(jobs.runs, "run_local_job", lambda config, **kw: ran)
    assert main(["job", "run", "--until-end", "--config", str(EXAMPLE), "--format", "json"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert json.loads(out) == {"job_name": "metering", "bounded": True, "topics_created": ["usage-events"], "seconds": 3.2}
    assert "MiniCluster" in err


# --- job submit: built-in defaults without --config ---------------------------------------------


def test_job_submit_without_config_uses_the_built_in_defaults(tmp_path: Path) -> None:
    from jobs.cluster.operations import package
    from jobs.config import ConfigError, load_config

    args = build_parser().parse_args(["job", "submit"])
    assert args.config is None
    package(ROOT, None, tmp_path)
    # The built-in defaults hold no meter: with or without the packaged file, the same verdict.
    env = {"METERING__KAFKA__BOOTSTRAP_SERVERS": "10.0.0.1:9092"}
    with pytest.raises(ConfigError) as packaged:
        load_config(tmp_path / "metering.yaml", env=env)
    with pytest.raises(ConfigError) as built_in:
        load_config(None, env=env)
    assert packaged.value.problems == built_in.value.problems
    submit = next(p for path, p in _parsers(build_parser()) if path == ("job", "submit"))
    config_help = next(a.help for a in submit._actions if "--config" in a.option_strings)
    assert config_help is not None and "built-in defaults" in config_help


# --- packaging: no setuptools warnings ---------------------------------------------------------


def test_every_folder_of_package_data_is_a_listed_package() -> None:
    """setuptools warns "Package would be ignored" for each data folder absent from `packages` (nine did)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    package_data = project["tool"]["setuptools"]["package-data"]
    shipped: set[Path] = set()
    for package, patterns in package_data.items():
        assert package in packages, package
        base = ROOT / package.replace(".", "/")
        shipped |= {p.parent for pattern in patterns for p in base.glob(pattern) if p.is_file()}
    unlisted = {str(p.relative_to(ROOT)).replace("/", ".") for p in shipped} - packages
    assert not unlisted
    assert isinstance(project["project"]["license"], str)  # a TOML table is deprecated (setuptools warns)


def test_readme_demo_time_is_the_measured_one() -> None:
    readme = (ROOT / "README.md").read_text()
    # Measured from the demo's stages (8 min 29 s with the stack up, the alert evaluator beside the job) plus
    # installing and starting Kafka and Flink.
    assert re.search(r"about 10 minutes", readme) and "about\n4 minutes" not in readme and "about 4 minutes" not in readme
    assert "6–7 minutes" not in readme
