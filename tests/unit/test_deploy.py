"""The deployment files in infra/deploy/ are current, and agree with the pinned versions and the job.

They cannot run here (no Docker, no Kubernetes), so they are checked statically: regenerated from
the same configuration and versions, parsed, and cross-checked field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infra import deploy, versions
from infra.flink_memory import (
    DEFAULT_CONSUMER_WEIGHTS,
    ROCKSDB_MEMORY_FLOOR,
    consumer_weights,
    default_managed_memory,
    parse_memory_size,
    rocksdb_share_of_slot,
)
from infra.settings import PROJECT_ROOT
from jobs.config import load_config
from jobs.flink.metering_job import MAX_PARALLELISM

EXAMPLE = PROJECT_ROOT / "config" / "metering.example.yaml"


def committed(name: str) -> str:
    return (deploy.DEPLOY_DIR / name).read_text()


def flink_properties(service: dict[str, Any]) -> dict[str, str]:
    """A compose Flink service's ``FLINK_PROPERTIES`` (``key: value`` lines) as a dict."""
    return dict(line.split(": ", 1) for line in service["environment"]["FLINK_PROPERTIES"].splitlines())


def test_committed_files_are_what_the_generator_makes() -> None:
    for name, text in deploy.render(EXAMPLE).items():
        assert committed(name) == text, f"infra/deploy/{name} is stale: run `python -m infra.deploy`"


def test_compose_images_ports_volumes_and_dependencies() -> None:
    compose: dict[str, Any] = yaml.safe_load(committed("compose.yaml"))
    services = compose["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{versions.KAFKA_VERSION}"
    assert services["clickhouse"]["image"] == f"clickhouse/clickhouse-server:{versions.CLICKHOUSE_SERVER_VERSION}"
    for name in ("jobmanager", "taskmanager", "loader", "submit", "migrate"):
        assert services[name]["image"] == f"metering-flink:{versions.PYFLINK_VERSION}"
    assert "9092:9092" in services["kafka"]["ports"] and "8081:8081" in services["jobmanager"]["ports"]
    assert services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    declared = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared or (Path(deploy.DEPLOY_DIR) / source).exists(), volume
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), depends
    flink = flink_properties(services["jobmanager"])
    assert flink["pipeline.max-parallelism"] == str(MAX_PARALLELISM)
    assert flink["execution.checkpointing.dir"].startswith("file:///flink-data/")
    submit = services["submit"]["command"]
    assert submit[:3] == ["metering", "job", "submit"] and "http://jobmanager:8081" in submit


def test_the_taskmanagers_give_rocksdb_enough_memory_per_slot() -> None:
    compose = yaml.safe_load(committed("compose.yaml"))
    flink = flink_properties(compose["services"]["taskmanager"])
    (deployment,) = [d for d in yaml.safe_load_all(committed("flinkdeployment.yaml")) if d["kind"] == "FlinkDeployment"]
    kubernetes = deployment["spec"]
    for memory, slots in (
        (flink["taskmanager.memory.process.size"], flink["taskmanager.numberOfTaskSlots"]),
        (kubernetes["taskManager"]["resource"]["memory"], kubernetes["flinkConfiguration"]["taskmanager.numberOfTaskSlots"]),
    ):
        per_slot = default_managed_memory(parse_memory_size(memory)) // int(slots)
        assert per_slot * rocksdb_share_of_slot(consumer_weights(DEFAULT_CONSUMER_WEIGHTS)) >= ROCKSDB_MEMORY_FLOOR


def test_transaction_timeout_fits_the_broker_limit() -> None:
    compose = yaml.safe_load(committed("compose.yaml"))
    limit_ms = int(compose["services"]["kafka"]["environment"]["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"])
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env={})
    assert config.kafka.transaction_timeout.total_seconds() * 1000 <= limit_ms


def test_deployed_configuration_is_valid_and_points_at_the_services() -> None:
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env={})
    example = load_config(EXAMPLE, env={})
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.storage.backend == "server" and config.storage.url == "http://clickhouse:8123"
    assert config.meters == example.meters and config.billing == example.billing and config.kafka.topics == example.kafka.topics


def test_flink_deployment_matches_versions_and_mounts_the_configuration(tmp_path: Path) -> None:
    config_map, deployment, _ = list(yaml.safe_load_all(committed("flinkdeployment.yaml")))
    assert config_map["kind"] == "ConfigMap" and deployment["kind"] == "FlinkDeployment"
    spec = deployment["spec"]
    major, minor, _ = versions.PYFLINK_VERSION.split(".")
    assert spec["flinkVersion"] == f"v{major}_{minor}"
    assert spec["image"] == f"metering-flink:{versions.PYFLINK_VERSION}"
    assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{versions.PYFLINK_VERSION}.jar"
    assert spec["job"]["upgradeMode"] == "savepoint"
    assert spec["flinkConfiguration"]["pipeline.max-parallelism"] == str(MAX_PARALLELISM)
    args = spec["job"]["args"]
    config_path = Path(args[args.index("--config") + 1])
    mount = spec["podTemplate"]["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == str(config_path.parent)
    assert spec["podTemplate"]["spec"]["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    shipped = tmp_path / config_path.name
    shipped.write_text(config_map["data"][config_path.name])
    assert load_config(shipped, env={}).kafka.bootstrap_servers == "kafka:9092"


def test_the_loader_runs_beside_the_job_on_kubernetes() -> None:
    """Unbounded `metering load` from the same image and ConfigMap, after `metering migrate`."""
    config_map, deployment, loader = list(yaml.safe_load_all(committed("flinkdeployment.yaml")))
    assert loader["kind"] == "Deployment" and loader["spec"]["replicas"] == 1
    assert loader["spec"]["strategy"]["type"] == "Recreate"
    pod = loader["spec"]["template"]["spec"]
    config_arg = deployment["spec"]["job"]["args"][deployment["spec"]["job"]["args"].index("--config") + 1]
    (migrate,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert migrate["command"] == ["metering", "migrate", "--config", config_arg]
    assert container["command"] == ["metering", "load", "--config", config_arg]  # no --until-idle: heartbeats on
    for step in (migrate, container):
        assert step["image"] == deployment["spec"]["image"]
        assert step["volumeMounts"][0]["mountPath"] == str(Path(config_arg).parent)
    assert pod["volumes"] == [{"name": "metering-config", "configMap": {"name": config_map["metadata"]["name"]}}]
    labels = loader["spec"]["selector"]["matchLabels"]
    assert loader["spec"]["template"]["metadata"]["labels"] == labels


def test_dockerfile_pins_the_flink_image_and_the_checksummed_connector() -> None:
    text = committed("Dockerfile")
    assert f"FROM flink:{versions.PYFLINK_VERSION}-scala_2.12-java17" in text
    lock = (PROJECT_ROOT / "infra" / "jars.lock").read_text()
    jar = f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR_VERSION}.jar"
    sha = next(line.split()[2] for line in lock.splitlines() if f" {jar} " in line)
    assert f"--checksum=sha256:{sha}" in text and f"/{versions.FLINK_KAFKA_CONNECTOR_VERSION}/{jar}" in text


def test_clickhouse_image_follows_the_chdb_engine() -> None:
    import chdb

    engine = str(chdb.query("SELECT version()")).strip().strip('"')  # type: ignore[no-untyped-call]  # chdb.query has no annotations
    assert engine.startswith(versions.CLICKHOUSE_SERVER_VERSION + "."), engine


def test_grafana_mounts_the_provisioning_where_its_dashboard_provider_looks() -> None:
    grafana = yaml.safe_load(committed("compose.yaml"))["services"]["grafana"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    provisioning = (deploy.DEPLOY_DIR / mounts["/etc/grafana/provisioning"]).resolve()
    assert (provisioning / "datasources" / "clickhouse.yaml").exists()
    provider = yaml.safe_load((provisioning / "dashboards" / "metering.yaml").read_text())["providers"][0]
    dashboards = (deploy.DEPLOY_DIR / mounts[provider["options"]["path"]]).resolve()
    assert (dashboards / "metering.json").exists()
    env = grafana["environment"]
    assert env["CLICKHOUSE_HOST"] == "clickhouse" and env["CLICKHOUSE_PORT"] == "8123"
    assert env["GF_PLUGINS_PREINSTALL_SYNC"].startswith("grafana-clickhouse-datasource@4.")
    assert env["CLICKHOUSE_DATABASE"] == load_config(deploy.DEPLOY_DIR / "metering.yaml", env={}).storage.database
