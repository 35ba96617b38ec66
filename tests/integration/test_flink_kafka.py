"""A PyFlink job through the Kafka connector: on the MiniCluster and on the standalone cluster."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from infra.flink import FlinkCluster, connector_jar
from infra.settings import PROJECT_ROOT, StackSettings
from tests.integration.test_kafka_roundtrip import consume_all

N = 500


def fill(bootstrap: str, topic: str) -> list[bytes]:
    values = [f'{{"n": {i}, "q": "0.{i:03d}"}}'.encode() for i in range(N)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, value)
    producer.flush()
    producer.close()
    return values


def test_passthrough_on_minicluster(bootstrap: str, new_topic: Callable[..., str], stack_settings: StackSettings) -> None:
    source, sink = new_topic("mini-in", partitions=2), new_topic("mini-out")
    values = fill(bootstrap, source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.flink.passthrough",
            "--bootstrap",
            bootstrap,
            "--source",
            source,
            "--sink",
            sink,
            "--connector-jar",
            str(connector_jar(stack_settings)),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(r.value for r in consume_all(bootstrap, sink)) == sorted(values)


def test_passthrough_submitted_to_standalone_cluster(bootstrap: str, new_topic: Callable[..., str], stack: object) -> None:
    source, sink = new_topic("sa-in", partitions=2), new_topic("sa-out")
    values = fill(bootstrap, source)
    cluster: FlinkCluster = stack.flink  # type: ignore[attr-defined]
    result = cluster.run_python(
        PROJECT_ROOT / "jobs" / "flink" / "passthrough.py",
        ["--bootstrap", bootstrap, "--source", source, "--sink", sink],
        timeout_s=300,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "Job has been submitted with JobID" in result.stdout
    job_id = result.stdout.split("JobID")[1].split()[0]
    job = cluster.rest(f"/jobs/{job_id}")
    assert job["state"] == "FINISHED", job["state"]
    assert sorted(r.value for r in consume_all(bootstrap, sink)) == sorted(values)


@pytest.fixture(autouse=True)
def _connector_present(stack_settings: StackSettings) -> None:
    assert connector_jar(stack_settings).exists()
