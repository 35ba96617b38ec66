"""What every command module shares: exit codes, help texts, output helpers, configuration loading."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

if TYPE_CHECKING:
    from jobs.config import Config

#: The subparsers object each command module's ``register`` adds its command to.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3

ENV_HELP = (
    "environment: METERING__SECTION__KEY sets any configuration key, e.g. METERING__STACK__HOME (state folder, "
    "default ./.metering), METERING__STACK__KAFKA_PORT (19092), METERING__STACK__FLINK_REST_PORT (18081), "
    "METERING__STORAGE__URL (a ClickHouse server; unset = embedded chDB), METERING__STORAGE__PASSWORD"
)
CONFIG_HELP = "configuration file (default: built-in defaults + METERING__* variables)"
CLUSTER_HELP = "Flink REST URL (default: the local stack's, http://127.0.0.1:18081)"

#: The help of the usual ``--format text|json`` option.
FORMAT_HELP = "output: text for people (default), json for scripts (one JSON document on stdout)"


def add_format(parser: argparse.ArgumentParser, help: str = FORMAT_HELP, choices: tuple[str, ...] = ("text", "json")) -> None:
    """The ``--format`` option, always with a help text."""
    parser.add_argument("--format", choices=choices, default=choices[0], help=help)


def print_result(obj: Any, fmt: str) -> None:
    """``obj`` as indented JSON (``fmt`` json) or as its text."""
    if fmt == "json":
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(obj)


def load_config_arg(path: str | None, *, require_meters: bool = True) -> Config:
    """The configuration of a ``--config`` option (None: built-in defaults), METERING__* overrides applied.

    ``require_meters`` False for a command that uses no meter, so it runs without a file.
    """
    from jobs.config import load_config

    return load_config(Path(path) if path else None, require_meters=require_meters)


def stack() -> Any:
    """The local stack (infra/stack.py) of the environment's settings."""
    from infra.stack import Stack
    from jobs.config import load_stack

    return Stack(load_stack())


def show_warnings_as_messages() -> None:
    """Warnings (a deprecated variable) as one ``metering: warning: …`` line each on stderr, not Python's form."""
    import warnings

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(f"metering: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM (service managers, `kill`) like Ctrl-C, so long-running commands close cleanly."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


class ProgressLine:
    """A progress report that rewrites one line on a terminal (``\\r``) and writes one line per report otherwise.

    In a log file or a pipe, ``\\r`` would run every report together on one line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.pending = False

    def show(self, text: str) -> None:
        if self.tty:
            print(f"\r{text}", end="", file=self.stream, flush=True)
            self.pending = True
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """End the terminal's rewritten line (nothing to do otherwise)."""
        if self.pending:
            print(file=self.stream, flush=True)
            self.pending = False
