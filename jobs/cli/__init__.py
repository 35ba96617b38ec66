"""The `metering` command line: one command, a subcommand per job.

One module per command: `metering replay` is jobs/cli/replay.py, `metering job submit` is
jobs/cli/job.py. Each module registers its own subparser (``register``) and is a thin layer over a
library function (jobs/runs.py, jobs/produce.py, clickhouse/queries.py …) that the demo, the tests and
other commands call directly. jobs/cli/common.py holds what they share.

Exit codes (stable, for schedulers and scripts):
  0  success
  1  runtime failure (a service did not start, a delivery failed, a migration failed; `serve`
     stopped with events it could not deliver)
  2  usage or configuration error (bad flag, bad setting; the message names it)
  3  completed, but some input was rejected (e.g. `produce` rejected invalid lines)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from jobs.cli import (
    alerts,
    check,
    config,
    credits,
    dashboard,
    demo,
    heartbeat,
    invoice,
    job,
    keys,
    load,
    migrate,
    produce,
    query,
    replay,
    serve,
    stack,
    token,
)
from jobs.cli.common import ENV_HELP, EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, show_warnings_as_messages

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_REJECTED", "EXIT_USAGE", "build_parser", "main", "version"]

#: The commands in the order `metering --help` lists them.
COMMANDS = (
    stack,
    migrate,
    produce,
    serve,
    keys,
    job,
    load,
    heartbeat,
    query,
    invoice,
    alerts,
    credits,
    config,
    dashboard,
    check,
    replay,
    token,
    demo,
)

#: The distribution `metering --version` reports (pyproject.toml's project name).
DISTRIBUTION = "usage-metering"


def version() -> str:
    """The installed package's version (``unknown`` when it runs from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


class _Version(argparse.Action):
    """``--version``: looked up only when asked (importlib.metadata scans the installed distributions)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metering",
        description="Usage metering on Apache Flink: Kafka usage events -> exact aggregates in ClickHouse.",
        epilog=ENV_HELP + ".  Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 done but input rejected.",
    )
    parser.add_argument("--version", action=_Version, help="print the version (metering X.Y.Z) and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from kafka.errors import KafkaError

    from clickhouse.client import StorageError
    from clickhouse.migrate import MigrationError
    from infra.errors import StackError
    from infra.kafka_security import KafkaAuthenticationError
    from jobs.config import ConfigError

    show_warnings_as_messages()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StackError, StorageError, MigrationError) as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KafkaAuthenticationError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KafkaError as exc:
        print(
            f"metering: Kafka is not reachable or refused the request: {type(exc).__name__}: {exc}\n"
            "  fix: check the broker (`metering stack status`) or --bootstrap",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except FileNotFoundError as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
