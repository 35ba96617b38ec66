"""Helpers shared by the e2e tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infra.flink import connector_jar
from infra.settings import PROJECT_ROOT, StackSettings


def run_bounded_job(config_path: Path, stack_settings: StackSettings, job_name: str) -> None:
    """Run the metering job to the end of its input on the local MiniCluster (a subprocess); fail with its stderr."""
    arguments = ["--config", str(config_path), "--until-end", "--job-name", job_name]
    result = subprocess.run(
        [sys.executable, "-m", "jobs.metering_job", *arguments, "--connector-jar", str(connector_jar(stack_settings))],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
