"""The whole pipeline, compared exactly with an independent recomputation.

generate -> produce (raw lines, malformed included) -> bounded metering job -> loader -> ClickHouse
-> queries -> jobs.demo.compare. Run on the MiniCluster at parallelism 1 and 2, and submitted to
the standalone cluster with `flink run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from clickhouse.client import open_storage
from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import Config
from jobs.demo import collect_results, compare, recompute
from jobs.loader.loader import Loader
from tests.e2e.harness import run_bounded_job


def load_and_compare(config: Config, events: Path) -> Any:
    with open_storage(config.storage, create_database=False) as storage:
        stats = Loader(config, storage, group_id=f"{config.kafka.consumer_group}-loader").run(until_idle=True, idle_s=2)
        assert stats.retries == 0
        results = collect_results(storage)
    return compare(recompute(events, config), results.finals, results.corrections, results.dead_letters, results.health)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_minicluster_totals_match_recomputation(
    pipeline: tuple[Config, Path, Path], parallelism: int, stack_settings: StackSettings
) -> None:
    config, config_path, events = pipeline
    overrides = yaml.safe_load(config_path.read_text())
    overrides["pipeline"]["parallelism"] = parallelism
    config_path.write_text(yaml.safe_dump(overrides))
    run_bounded_job(config_path, stack_settings, f"e2e-p{parallelism}")
    comparison = load_and_compare(config, events)
    assert comparison.passed, comparison.checks


def test_standalone_cluster_totals_match_recomputation(pipeline: tuple[Config, Path, Path], stack: Any) -> None:
    config, config_path, events = pipeline
    result = stack.flink.run_python(
        PROJECT_ROOT / "jobs" / "flink" / "metering_job.py",
        ["--config", str(config_path), "--until-end", "--job-name", "e2e-standalone"],
        timeout_s=600,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    comparison = load_and_compare(config, events)
    assert comparison.passed, comparison.checks
