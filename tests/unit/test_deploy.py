"""The deployment files in infra/deploy/ are current, and agree with the pinned versions and the job.

They cannot run here (no Docker, no Kubernetes), so they are checked statically: regenerated from
the same configuration and versions, parsed, and cross-checked field by field.
"""

from __future__ import annotations

import re
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
from jobs.ingest.openapi import document as openapi_document

EXAMPLE = PROJECT_ROOT / "config" / "metering.example.yaml"
#: The secrets a deployment gets from its environment (the files hold none).
SECRET_ENV = {"METERING__KAFKA__SECURITY__PASSWORD": "kafka-secret", "METERING__STORAGE__PASSWORD": "clickhouse-secret"}


def committed(name: str) -> str:
    return (deploy.DEPLOY_DIR / name).read_text()


def broker_properties() -> dict[str, str]:
    """The compose broker's server.properties (generated, mounted into the kafka service)."""
    lines = committed(deploy.KAFKA_PROPERTIES).splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


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
    for name in ("jobmanager", "taskmanager", "loader", "submit", "migrate", "ingest"):
        assert services[name]["image"] == f"metering-flink:{versions.PYFLINK_VERSION}"
    assert broker_properties()["advertised.listeners"].startswith("SASL_PLAINTEXT://kafka:9092,")
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
    assert compose["services"]["kafka"]["volumes"][1].startswith("./kafka:")
    limit_ms = int(broker_properties()["transaction.max.timeout.ms"])
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV)
    assert config.kafka.transaction_timeout.total_seconds() * 1000 <= limit_ms


def test_deployed_configuration_is_valid_and_points_at_the_services() -> None:
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV)
    example = load_config(EXAMPLE, env={})
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.storage.backend == "server" and config.storage.url == "http://clickhouse:8123"
    assert config.meters == example.meters and config.billing == example.billing and config.kafka.topics == example.kafka.topics


def test_flink_deployment_matches_versions_and_mounts_the_configuration(tmp_path: Path) -> None:
    config_map, deployment, *_ = list(yaml.safe_load_all(committed("flinkdeployment.yaml")))
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
    assert load_config(shipped, env=SECRET_ENV).kafka.bootstrap_servers == "kafka:9092"


def test_the_loader_runs_beside_the_job_on_kubernetes() -> None:
    """Unbounded `metering load` from the same image and ConfigMap, after `metering migrate`."""
    config_map, deployment, loader, *_ = list(yaml.safe_load_all(committed("flinkdeployment.yaml")))
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
    assert env["CLICKHOUSE_DATABASE"] == load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV).storage.database


# --- closed by default ------------------------------------------------------------------------------

#: Ports that administer or bypass the pipeline: Flink REST (job uploads), ClickHouse HTTP and
#: native, Kafka's controller and its clients' listener (reachable on the compose network only).
ADMIN_PORTS = {8081, 8123, 9000, 9092, 9093, 9094}
#: Environment variables that hold secrets (by name).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|SIGNING_KEY|TOKEN", re.IGNORECASE)
#: A compose reference to a required variable: ``${VAR:?message}``.
REQUIRED = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):\?[^}]+\}")


def compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(committed("compose.yaml"))
    return document


def kubernetes_containers() -> list[dict[str, Any]]:
    containers = []
    for document in yaml.safe_load_all(committed("flinkdeployment.yaml")):
        spec = document.get("spec", {})
        pod = spec.get("podTemplate", spec.get("template", {})).get("spec", {})
        containers += pod.get("initContainers", []) + pod.get("containers", [])
    return containers


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each published port; an address-less one binds every interface."""
    found = []
    for port in service.get("ports", []):
        parts = str(port).split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        found.append((host, int(parts[-1].split("/")[0])))
    return found


def test_no_admin_port_is_published_and_the_rest_only_on_loopback() -> None:
    for name, service in compose_file()["services"].items():
        for host, port in published(service):
            assert port not in ADMIN_PORTS, f"{name} publishes {port}"
            assert host == "127.0.0.1", f"{name} publishes {port} on every interface"
    assert "ports" not in compose_file()["services"]["jobmanager"]
    (deployment,) = [d for d in yaml.safe_load_all(committed("flinkdeployment.yaml")) if d["kind"] == "FlinkDeployment"]
    assert deployment["spec"]["flinkConfiguration"]["kubernetes.rest-service.exposed.type"] == "ClusterIP"
    # Kafka's controller and the broker's own listener are bound to the container's loopback.
    listeners = broker_properties()["listeners"].split(",")
    assert [entry for entry in listeners if not entry.split("://")[1].startswith("127.0.0.1:")] == ["SASL_PLAINTEXT://:9092"]


def test_secrets_only_from_the_environment_or_kubernetes_secrets() -> None:
    text = committed("compose.yaml")
    for name, service in compose_file()["services"].items():
        for variable, value in service.get("environment", {}).items():
            if SECRET_NAME.search(variable):
                assert REQUIRED.fullmatch(str(value)), f"{name}.{variable} = {value!r}: not a required ${{VAR:?…}}"
    assert "CLICKHOUSE_SKIP_USER_SETUP" not in text
    for container in kubernetes_containers():
        for entry in container.get("env", []):
            if SECRET_NAME.search(entry["name"]):
                assert entry["valueFrom"]["secretKeyRef"]["name"] == deploy.SECRET, entry
                assert "value" not in entry
    deployed = yaml.safe_load(committed("metering.yaml"))
    assert "password" not in deployed["kafka"]["security"] and "password" not in deployed["storage"]
    assert "access" not in deployed  # the signing key comes from the environment
    # No secret value anywhere in the generated files: the only passwords are references.
    for generated in deploy.render(EXAMPLE).values():
        for match in re.finditer(r"(?i)password[\"']?\s*[:=]\s*([^\s,}\]]*)", generated):
            assert match.group(1).startswith(("${", "$${", "true", "false")) or match.group(1) in ("", "|"), match.group(0)


def test_no_empty_or_default_passwords_and_no_anonymous_access() -> None:
    services = compose_file()["services"]
    clickhouse = services["clickhouse"]["environment"]
    assert clickhouse["CLICKHOUSE_USER"] == deploy.CLICKHOUSE_USER != "default"
    assert REQUIRED.fullmatch(clickhouse["CLICKHOUSE_PASSWORD"])
    grafana = services["grafana"]["environment"]
    assert REQUIRED.fullmatch(grafana["GF_SECURITY_ADMIN_PASSWORD"]).group(1) == "GRAFANA_ADMIN_PASSWORD"  # type: ignore[union-attr]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # Grafana's data source logs in as ClickHouse's user, with the same secret.
    assert grafana["CLICKHOUSE_USER"] == clickhouse["CLICKHOUSE_USER"]
    assert grafana["CLICKHOUSE_PASSWORD"] == clickhouse["CLICKHOUSE_PASSWORD"]
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV)
    assert config.storage.username == clickhouse["CLICKHOUSE_USER"]
    for name in ("migrate", "loader", "dashboard"):
        assert services[name]["environment"]["METERING__STORAGE__PASSWORD"] == clickhouse["CLICKHOUSE_PASSWORD"], name
    dashboard = services["dashboard"]["environment"]
    assert REQUIRED.fullmatch(dashboard["METERING__ACCESS__SIGNING_KEY"]).group(1) == "METERING_SIGNING_KEY"  # type: ignore[union-attr]


def test_kafka_sasl_agrees_between_the_broker_and_every_client() -> None:
    from infra.kafka import SCRAM_SERVER_JAAS

    security = load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV).kafka.security
    assert (security.protocol, security.sasl_mechanism, security.username) == (
        deploy.KAFKA_PROTOCOL,
        deploy.KAFKA_MECHANISM,
        deploy.KAFKA_USER,
    )
    assert security.sasl and security.sasl_mechanism.startswith("SCRAM-")
    broker = broker_properties()
    # The listener the clients' bootstrap address reaches speaks the clients' protocol ...
    protocols = dict(entry.split(":") for entry in broker["listener.security.protocol.map"].split(","))
    advertised = {url.split("://")[1]: url.split("://")[0] for url in broker["advertised.listeners"].split(",")}
    listener = advertised[load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV).kafka.bootstrap_servers]
    assert protocols[listener] == security.protocol
    # ... with the clients' mechanism, and the user created at format time with it.
    assert security.sasl_mechanism in broker["sasl.enabled.mechanisms"].split(",")
    assert broker[f"listener.name.{listener.lower()}.{security.sasl_mechanism.lower()}.sasl.jaas.config"] == SCRAM_SERVER_JAAS
    services = compose_file()["services"]
    kafka = services["kafka"]
    assert (
        f'--add-scram "{security.sasl_mechanism}=[name={security.username},password=$${{SCRAM_PASSWORD}}]"' in kafka["command"][0]
    )
    password = kafka["environment"]["SCRAM_PASSWORD"]
    assert REQUIRED.fullmatch(password).group(1) == "KAFKA_PASSWORD"  # type: ignore[union-attr]
    for name in ("loader", "submit", "ingest"):  # every service with a Kafka client, with the broker's secret
        assert services[name]["environment"]["METERING__KAFKA__SECURITY__PASSWORD"] == password, name
    # Kubernetes: the job (its Python builds the Kafka tables), the loader and the API take it from the Secret.
    with_kafka = [c for c in kubernetes_containers() if c["name"] in ("flink-main-container", "loader", "ingest")]
    assert len(with_kafka) == 3
    for container in with_kafka:
        env = {e["name"]: e for e in container["env"]}
        key = env["METERING__KAFKA__SECURITY__PASSWORD"]["valueFrom"]["secretKeyRef"]["key"]
        assert key == deploy.SECRETS["KAFKA_PASSWORD"]


def test_every_metering_command_in_compose_is_one_the_cli_accepts() -> None:
    """The services' ``metering …`` commands parse, and the dashboard and the API bound beyond loopback say --public."""
    from jobs.cli import build_parser
    from jobs.dashboard.guard import is_loopback

    commands = [
        service["command"]
        for service in compose_file()["services"].values()
        if isinstance(service.get("command"), list) and service["command"][:1] == ["metering"]
    ]
    assert commands, "compose runs metering commands"
    for command in commands:
        args = build_parser().parse_args(command[1:])
        if command[1] in ("dashboard", "serve"):
            assert is_loopback(args.host) or args.public, command
    assert ["metering", "serve"] in [command[:2] for command in commands]
    for container in kubernetes_containers():
        if container.get("command", [])[:1] == ["metering"]:
            args = build_parser().parse_args(container["command"][1:])
            if container["command"][1] == "serve":
                assert is_loopback(args.host) or args.public, container["command"]


# --- the ingestion API (`metering serve`) -------------------------------------------------------------


def test_the_ingestion_api_in_compose_reads_its_keys_from_a_volume_and_publishes_on_loopback() -> None:
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV)
    compose = compose_file()
    ingest = compose["services"]["ingest"]
    assert ingest["command"][:4] == ["metering", "serve", "--config", deploy.CONFIG_IN_CONTAINER]
    # The key store: the deployed configuration's ingest.keys is the volume's mount point.
    assert str(config.ingest.keys) == deploy.INGEST_KEYS_IN_CONTAINER
    mounts = {target: source for source, target, *_ in (v.split(":") for v in ingest["volumes"])}
    assert mounts[deploy.INGEST_KEYS_IN_CONTAINER] in compose["volumes"]
    assert mounts[deploy.CONFIG_IN_CONTAINER] == "./metering.yaml"
    # A fresh named volume takes the image folder's owner: the services' user may write the registers.
    (folders,) = [line for line in committed("Dockerfile").splitlines() if line.startswith("RUN install -d -o flink")]
    assert deploy.INGEST_KEYS_IN_CONTAINER in folders.split() and deploy.ACCESS_IN_CONTAINER in folders.split()
    # Published on the host's loopback, at the port it listens on; its health check asks /readyz there.
    assert published(ingest) == [("127.0.0.1", config.ingest.port)]
    assert f"http://127.0.0.1:{config.ingest.port}/readyz" in ingest["healthcheck"]["test"][-1]
    compile(ingest["healthcheck"]["test"][-1], "healthcheck", "exec")
    # A stop drains: requests in flight wait up to the delivery timeout before the producer flushes.
    assert int(ingest["stop_grace_period"].rstrip("s")) > config.ingest.delivery_timeout.total_seconds()
    assert ingest["depends_on"] == ["kafka"]


def test_the_ingestion_api_on_kubernetes_runs_several_workers_behind_a_service() -> None:
    documents = list(yaml.safe_load_all(committed("flinkdeployment.yaml")))
    config = load_config(deploy.DEPLOY_DIR / "metering.yaml", env=SECRET_ENV)
    (deployment,) = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "metering-ingest"]
    (service,) = [d for d in documents if d["kind"] == "Service"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == pod["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["type"] == "ClusterIP"
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[service["spec"]["ports"][0]["targetPort"]] == config.ingest.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= set(openapi_document()["paths"])  # routes the API serves
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.ingest.delivery_timeout.total_seconds()
    # Every worker reads the same key store: the Secret, mounted read-only where ingest.keys points.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    keys = [m for m in mounts.values() if m["mountPath"] == str(config.ingest.keys)]
    assert len(keys) == 1 and keys[0]["readOnly"] is True
    assert volumes[keys[0]["name"]] == {"name": keys[0]["name"], "secret": {"secretName": deploy.INGEST_KEYS_SECRET}}
    assert volumes["metering-config"]["configMap"]["name"] == deploy.CONFIG_MAP
