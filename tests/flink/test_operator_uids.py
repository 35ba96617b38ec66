"""Savepoint compatibility: the job's operator uids survive adding a meter.

Each graph is built in its own process (operator node ids come from a process-wide counter).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from infra.settings import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "config" / "metering.example.yaml"

LIST_UIDS = """
import json, sys
from pathlib import Path
from jobs.config import load_config, load_stack
from infra.flink import connector_jar
from jobs.flink.metering_job import RunOptions, operator_uids
options = RunOptions(bounded=sys.argv[2] == "bounded", connector_jar=connector_jar(load_stack()))
ops = operator_uids(load_config(Path(sys.argv[1]), env={}), options)
print(json.dumps([[o.uid, o.name, o.keyed_state, o.keyed_input] for o in ops]))
"""


def uids(config: Path, mode: str = "live") -> list[tuple[str | None, str, bool, bool]]:
    command = [sys.executable, "-c", LIST_UIDS, str(config), mode]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(op) for op in json.loads(result.stdout.splitlines()[-1])]


def with_extra_meter(tmp_path: Path) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["meters"].append({"name": "api_calls_sum", "event_type": "api_call", "aggregation": "sum"})
    document["meters"].append({"name": "widgets", "event_type": "widget_made", "aggregation": "latest", "group_by": ["color"]})
    path = tmp_path / "plus-meter.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_every_stateful_operator_has_a_uid_and_adding_meters_keeps_them(tmp_path: Path) -> None:
    before = uids(EXAMPLE)
    stateful = [op for op in before if op[2]]
    # dedup with the duplicate counter (one process table function), the window aggregate and the
    # finalization ledger
    assert len(stateful) == 3, before
    assert all(op[0] for op in stateful), stateful
    # Each planned once, though several outputs read them (one statement set: the planner shares them).
    ptfs = [op[0] for op in before if "ProcessTableFunction" in op[1]]
    assert ptfs == ["metering-v1-first-seen", "metering-v1-finalize-jvm"], before
    sources_and_sinks = [op for op in before if op[1].startswith("Source:") or "Writer" in op[1]]
    # the events source; dead letters (events, meters), duplicates, aggregates, finals, corrections, raw rows,
    # amendments
    assert len(sources_and_sinks) == 9 and all(op[0] for op in sources_and_sinks), sources_and_sinks

    after = uids(with_extra_meter(tmp_path))
    assert [op[0] for op in after if op[0]] == [op[0] for op in before if op[0]]


def test_every_stateful_operator_reads_a_keyed_shuffle() -> None:
    """The job runs with object reuse: a stateful operator chained behind another one could keep a
    reference to a record its predecessor reuses. Hash-partitioned inputs are never chained."""
    ops = uids(EXAMPLE)
    stateful = [op for op in ops if op[2]]
    assert len(stateful) == 3 and all(op[3] for op in stateful), stateful
