"""The dashboard query benchmark still runs (small preset), so its recorded figures stay reproducible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infra.settings import PROJECT_ROOT


def test_small_preset_runs_every_dashboard_query(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.dashboard_queries", "--small", "--no-record", "--dir", str(tmp_path / "chdb")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    table = [line for line in result.stdout.splitlines() if line.startswith("| ") and "ms" not in line.split("|")[2]]
    names = [row.split("|")[1].strip() for row in table[1:]]
    assert len(names) == 8, result.stdout + result.stderr
    for row in table[1:]:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert int(cells[1].replace(",", "")) >= 1 or cells[0].startswith("finals"), row  # every query returned rows
    assert "p95" in result.stdout
