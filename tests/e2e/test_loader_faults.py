"""The loader under faults of its own: two loaders at once, and an INSERT that fails halfway.

Both load the same job output (one bounded run of the metering job over a generated workload)
into their own chDB directory, then compare every final, correction and dead letter with the
independent recomputation (``jobs.demo.recompute``), and check that no Kafka record is stored
twice in ``raw_events``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import load_config
from jobs.demo import Expected, compare, demo_document, generate, recompute
from jobs.topics import ensure_topics
from schemas.validate import raw_event_row
from tests.e2e.harness import produce, run, run_bounded_job

EVENTS = 5000


@dataclass(frozen=True)
class JobOutput:
    document: dict[str, Any]
    expected: Expected
    raw_events: int  # events-topic records raw_events must hold, once each


@pytest.fixture(scope="module")
def job_output(tmp_path_factory: pytest.TempPathFactory, stack: Any, stack_settings: StackSettings) -> Iterator[JobOutput]:
    """The job's topics after one bounded run over a generated workload (loaded by each test into its own chDB)."""
    folder = tmp_path_factory.mktemp("loader-faults")
    document = demo_document(uuid.uuid4().hex[:8], stack_settings.bootstrap_servers, folder / "unused-chdb")
    config_path = folder / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path, env={})
    events = folder / "events.jsonl"
    generate(events, EVENTS, seed=17)
    ensure_topics(config)
    lines = events.read_text().splitlines()
    produce(stack_settings.bootstrap_servers, config.kafka.topics.events, lines, folder / "produced.jsonl")
    run_bounded_job(config_path, stack_settings, "loader-faults")
    stored = [raw_event_row(line.encode(), "t", 0, n, 0) for n, line in enumerate(lines)]
    yield JobOutput(document, recompute(events, config), sum(1 for row in stored if row is not None))


def own_storage(tmp_path: Path, output: JobOutput) -> Path:
    """A configuration loading the job's topics into a chDB directory of this test's own; migrated."""
    document = json.loads(json.dumps(output.document))
    document["storage"]["path"] = str(tmp_path / "chdb")
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(document))
    run(dict(os.environ), "migrate", "--config", str(config_path), timeout=120)
    return config_path


def load_command(config_path: Path, group: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "load", "--config", str(config_path), "--group", group, "--until-idle"]


def check_loaded(config_path: Path, output: JobOutput) -> dict[str, int]:
    """Every number equal to the recomputation, and each Kafka record once in raw_events; returns the raw counts."""
    env = dict(os.environ)
    got = {}
    for what in ("finals", "corrections", "dead-letters", "health"):
        text = run(env, "query", what, "--config", str(config_path), "--format", "jsonl")
        got[what] = [json.loads(line) for line in text.splitlines()]
    (health,) = got["health"]
    comparison = compare(output.expected, got["finals"], got["corrections"], got["dead-letters"], health)
    assert comparison.passed, comparison.checks
    assert not health.get("quarantined"), health
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from jobs.config import load_config\n"
        "from clickhouse.client import open_storage\n"
        "with open_storage(load_config(Path(sys.argv[1])).storage, create_database=False) as s:\n"
        "    final, = s.query_rows('SELECT count() FROM raw_events FINAL')[0]\n"
        "    stored, = s.query_rows('SELECT count() FROM raw_events')[0]\n"
        "    records, = s.query_rows('SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM raw_events')[0]\n"
        "    print(json.dumps({'final': final, 'stored': stored, 'records': records}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(config_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts: dict[str, int] = json.loads(result.stdout)
    assert counts["final"] == counts["records"] == output.raw_events, counts
    return counts


def test_two_loaders_started_at_once_one_refuses_and_nothing_is_doubled(tmp_path: Path, job_output: JobOutput) -> None:
    config_path = own_storage(tmp_path, job_output)
    command = load_command(config_path, f"two-loaders-{uuid.uuid4().hex[:8]}")
    loaders = [
        subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(loader.wait(timeout=300), *loader.communicate()) for loader in loaders]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, _, err in results if code == 1)
    assert "in use by" in refused and "embedded ClickHouse allows one" in refused, refused  # the directory lock, by name
    check_loaded(config_path, job_output)


def test_an_insert_that_fails_halfway_leaves_nothing_doubled_after_a_restart(tmp_path: Path, job_output: JobOutput) -> None:
    """The loader's raw_events INSERT of a batch spanning several months stores the first month's part, then the
    process dies (SIGKILL) before the batch's offsets are committed; the restarted loader stores the batch again."""
    config_path = own_storage(tmp_path, job_output)
    group = f"halfway-{uuid.uuid4().hex[:8]}"
    progress = tmp_path / "loader.progress"
    probe = [sys.executable, "-m", "tests.e2e.loader_probe", str(progress), "--fail-halfway", "raw_events", "--"]
    failed = subprocess.run(
        [*probe, *load_command(config_path, group)[4:]],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    steps = progress.read_text().splitlines()
    halfway = [line for line in steps if " halfway raw_events " in line]
    assert failed.returncode == -9 and halfway and steps[-1].split()[1] == "killed", (
        failed.returncode,
        steps[-5:],
        failed.stderr[-2000:],
    )
    stored_before_kill = int(halfway[0].split()[3])
    assert 0 < stored_before_kill < int(halfway[0].split()[5])
    resumed = subprocess.run(
        load_command(config_path, group), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = check_loaded(config_path, job_output)
    # The half-stored rows were stored again (unless a merge already collapsed them): only FINAL reads them once.
    assert counts["stored"] >= counts["final"], counts
