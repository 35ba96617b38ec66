"""The command line: help everywhere, exit codes for usage errors."""

from __future__ import annotations

import pytest

from jobs.cli import EXIT_USAGE, build_parser, main


@pytest.mark.parametrize(
    "argv",
    [[], ["stack"], ["stack", "up"], ["stack", "status"], ["stack", "reset"], ["migrate"], ["produce"], ["demo"]],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: metering" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["frobnicate"])
    assert exit_.value.code == EXIT_USAGE


def test_bad_environment_setting_exits_2_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METERING__STACK__KAFKA_PORT", "not-a-port")
    assert main(["stack", "status"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "stack.kafka_port: 'not-a-port' must be a port number (1024-65535) (set by METERING__STACK__KAFKA_PORT)" in err


def test_missing_input_file_exits_2(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "/nonexistent/events.jsonl", "--bootstrap", "127.0.0.1:1"]) == EXIT_USAGE
    assert "/nonexistent/events.jsonl" in capsys.readouterr().err


def test_unreachable_broker_is_a_clear_failure(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    events = Path(str(tmp_path)) / "e.jsonl"
    events.write_text("{}\n")
    # Port 9 (discard) on loopback: nothing listens; the admin client gives up after 1 s.
    assert main(["produce", str(events), "--bootstrap", "127.0.0.1:9", "--connect-timeout", "1"]) == 1
    assert "Kafka is not reachable" in capsys.readouterr().err


def test_config_validate_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "config/metering.example.yaml"]) == 0
    assert "valid" in capsys.readouterr().out


def test_config_validate_lists_problems_and_exits_2(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("meters:\n  - {name: x, event_type: a, aggregation: avg}\npipeline: {parallelism: -1}\n")
    assert main(["config", "validate", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "meters[0].aggregation: 'avg' must be one of" in err and "pipeline.parallelism" in err
