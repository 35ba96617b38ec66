"""Production deployment files, generated from the pinned versions and a metering configuration.

``python -m infra.deploy [CONFIG]`` writes ``infra/deploy/``:

- ``Dockerfile``: the Flink image (official ``flink`` image of the pinned version, Java 17) plus
  Python, the pinned PyFlink, the project, the pinned Kafka connector jar in ``lib/`` and the
  job's Java functions compiled in a JDK build stage (``METERING__STACK__UDF_JAR``);
- ``compose.yaml``: Kafka (KRaft, the pinned release), Flink JobManager + TaskManager, ClickHouse
  server, the loader, a one-shot service that submits the job, Grafana, the dashboard and the
  HTTP ingestion API (``metering serve``, its key store on a volume);
- ``flinkdeployment.yaml``: a ConfigMap with the configuration, a Flink Kubernetes Operator
  ``FlinkDeployment`` running the job in application mode with savepoint upgrades, the
  loader's ``Deployment`` (migrations in an init container; it also sends the heartbeats that let
  a quiet topic finalize), and the ingestion API: a ``Deployment`` of several ``metering serve``
  workers behind a ``Service`` (docs/ingest.md, "Several workers"), the key store mounted
  read-only from the Secret :data:`INGEST_KEYS_SECRET`.

- ``kafka/server.properties``: the compose broker's configuration (SASL SCRAM for clients).

Closed by default (docs/operations.md, "Production files"): no admin port is published (Flink
REST, which accepts job uploads, ClickHouse, Kafka's controller); Kafka clients authenticate with
SCRAM through ``kafka.security``; ClickHouse has a named user; every secret comes from the
environment (compose refuses to start without it: ``${VAR:?…}``) or a Kubernetes Secret
(:data:`SECRET`), never from these files. The published ports (Grafana, the dashboard) are bound
to 127.0.0.1 and ask for a login or a token.

They cannot run on the development machines (no Docker, no cluster); tests/unit/test_deploy.py
regenerates them and checks the committed files are current, consistent with versions.py, and closed.

Why one module: the generated files refer to each other (service names, ports, secrets, the SASL
listener), and tests/unit/test_deploy.py holds them to one generator.
"""

from __future__ import annotations

import base64
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from infra import versions
from infra.flink import RESTART_STRATEGY, state_backend_settings
from infra.kafka import scram_listener
from infra.settings import PROJECT_ROOT

DEPLOY_DIR = PROJECT_ROOT / "infra" / "deploy"
IMAGE = f"metering-flink:{versions.PYFLINK_VERSION}"
FLINK_IMAGE = f"flink:{versions.PYFLINK_VERSION}-scala_2.12-java17"
KAFKA_IMAGE = f"apache/kafka:{versions.KAFKA_VERSION}"
CLICKHOUSE_IMAGE = f"clickhouse/clickhouse-server:{versions.CLICKHOUSE_SERVER_VERSION}"
# Grafana over the dashboard views (infra/grafana/README.md): the plugin's 4.x needs Grafana >= 11.6.
GRAFANA_IMAGE = "grafana/grafana:12.1.0"
GRAFANA_PLUGIN = "grafana-clickhouse-datasource@4.20.0"
GRAFANA_PORT = 3000
CONNECTOR_JAR = f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR_VERSION}.jar"
CONFIG_IN_CONTAINER = "/etc/metering/metering.yaml"
JOB_IN_CONTAINER = "/opt/metering/jobs/flink/metering_job.py"
#: A JDK for compiling udfs/jvm in the image build (the Flink image has a JRE only).
JDK_IMAGE = "eclipse-temurin:17-jdk"
UDF_JAR_IN_IMAGE = "/opt/metering-udfs/metering-udfs.jar"
#: The Kubernetes ConfigMap holding the configuration (mounted by the job and the loader).
CONFIG_MAP = "metering-config"
#: Ports inside the deployment (the local stack uses 19092 / 18081 to stay out of their way).
KAFKA_PORT, FLINK_REST_PORT, CLICKHOUSE_HTTP_PORT = 9092, 8081, 8123
KAFKA_CONTROLLER_PORT, DASHBOARD_PORT, INGEST_PORT = 9093, 8050, 8090
#: The dashboard's access-token register in its container (the ``access-data`` volume).
ACCESS_IN_CONTAINER = "/var/lib/metering/access"
#: Where `metering serve` finds the API keys' register and revocation list in its containers
#: (``ingest.keys`` of the deployed configuration): a volume in compose, a Secret on Kubernetes.
INGEST_KEYS_IN_CONTAINER = "/var/lib/metering/ingest-keys"
#: The Kubernetes Secret holding keys.jsonl and revoked.txt (hashes and ids only; docs/ingest.md).
INGEST_KEYS_SECRET = "metering-ingest-keys"
#: `metering serve` workers on Kubernetes (each its own producer and token buckets).
INGEST_REPLICAS = 2
#: How long a stopping `metering serve` may drain (requests in flight wait up to ingest.delivery_timeout,
#: 10 s by default, then the producer flushes) before it is killed.
INGEST_STOP_GRACE_S = 30

#: How the pipeline's clients log in to Kafka (``kafka.security`` of the deployed configuration):
#: SCRAM over the deployment's private network. Across hosts, use SASL_SSL with ``ssl_ca_file``.
KAFKA_PROTOCOL, KAFKA_MECHANISM, KAFKA_USER = "SASL_PLAINTEXT", "SCRAM-SHA-512", "metering"
#: The compose broker's configuration file, generated next to compose.yaml and mounted read-only.
KAFKA_PROPERTIES = "kafka/server.properties"
KAFKA_CONFIG_DIR = "/etc/metering-kafka"
#: The KRaft cluster id of the compose broker (any base64 UUID; fixed so the file is reproducible).
KAFKA_CLUSTER_ID = base64.urlsafe_b64encode(uuid.uuid5(uuid.NAMESPACE_URL, "metering-kafka").bytes).decode().rstrip("=")

#: The secrets, by the variable a compose user sets and the key of the Kubernetes Secret :data:`SECRET`.
SECRET = "metering-secrets"
SECRETS = {
    "KAFKA_PASSWORD": "kafka-password",  # the SCRAM password of KAFKA_USER (broker and clients)
    "CLICKHOUSE_PASSWORD": "clickhouse-password",  # ClickHouse's user for the loader, migrations and Grafana
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-password",
    "METERING_SIGNING_KEY": "signing-key",  # access tokens (METERING__ACCESS__SIGNING_KEY)
}
#: ClickHouse's user (not a secret; CLICKHOUSE_USER overrides it in compose).
CLICKHOUSE_USER = "metering"


def required(variable: str) -> str:
    """A compose reference to a secret from the environment: ``docker compose up`` refuses to start without it."""
    return f"${{{variable}:?set {variable}, see docs/operations.md}}"


#: The TaskManagers' memory in compose and on Kubernetes, each with ``taskmanager.numberOfTaskSlots`` 2:
#: RocksDB then gets ~480 MiB per slot (Flink's image default, 1728m, would leave it 179 MiB, which
#: `metering job submit` warns about: docs/operations.md, "State backend").
TASKMANAGER_MEMORY = "4096m"


def flink_configuration(config: dict[str, Any], checkpoints: str, savepoints: str) -> dict[str, str]:
    """Cluster settings shared by compose and Kubernetes (the same choices as infra/flink.py)."""
    pipeline = config.get("pipeline", {})
    return {
        "taskmanager.numberOfTaskSlots": "2",
        "parallelism.default": str(pipeline.get("parallelism", 1)),
        # RocksDB with incremental checkpoints and Bloom filters (docs/operations.md, "State backend");
        # managed memory is the TaskManager's default share (40% of Flink memory).
        **state_backend_settings("rocksdb", mini_cluster=False),
        "execution.checkpointing.dir": checkpoints,
        "execution.checkpointing.savepoint-dir": savepoints,
        "execution.checkpointing.num-retained": "3",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        **RESTART_STRATEGY,
        "pipeline.max-parallelism": "128",
        "python.executable": "/usr/bin/python3",
        "python.client.executable": "/usr/bin/python3",
    }


def deployed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as the containers see it: Kafka and ClickHouse by service name, no local paths.

    The image's prebuilt jar of udfs/jvm is ``stack.udf_jar``, set by the image's environment.
    """
    deployed: dict[str, Any] = yaml.safe_load(yaml.safe_dump(config))
    deployed.pop("stack", None)
    deployed.pop("access", None)  # the local store's path; the signing key comes from the environment
    # The key store is the container's (a volume in compose, a Secret on Kubernetes), not a local path;
    # `metering serve` listens on every interface of its container (--host 0.0.0.0 --public).
    ingest = deployed.setdefault("ingest", {})
    ingest.pop("host", None)
    ingest["port"] = INGEST_PORT
    ingest["keys"] = INGEST_KEYS_IN_CONTAINER
    kafka = deployed.setdefault("kafka", {})
    kafka["bootstrap_servers"] = f"kafka:{KAFKA_PORT}"
    # The password comes from METERING__KAFKA__SECURITY__PASSWORD (a secret), never from this file.
    kafka["security"] = {"protocol": KAFKA_PROTOCOL, "sasl_mechanism": KAFKA_MECHANISM, "username": KAFKA_USER}
    deployed["storage"] = {
        "backend": "server",
        "url": f"http://clickhouse:{CLICKHOUSE_HTTP_PORT}",
        "username": CLICKHOUSE_USER,
        "database": config.get("storage", {}).get("database", "metering"),
    }
    return deployed


def connector_sha256() -> str:
    """The connector jar's SHA-256 as pinned in infra/jars.lock."""
    for line in (PROJECT_ROOT / "infra" / "jars.lock").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == CONNECTOR_JAR:
            return parts[2]
    raise LookupError(f"{CONNECTOR_JAR} is not pinned in infra/jars.lock")


def dockerfile() -> str:
    url = (
        "https://repo1.maven.org/maven2/org/apache/flink/flink-sql-connector-kafka/"
        f"{versions.FLINK_KAFKA_CONNECTOR_VERSION}/{CONNECTOR_JAR}"
    )
    return f"""# Generated by infra/deploy.py from infra/versions.py and infra/jars.lock; do not edit.
# Build from the project root: docker build -f infra/deploy/Dockerfile -t {IMAGE} .
# The job's Java functions (udfs/jvm), compiled against this Flink's own jars (infra/udf_jar.py
# does the same on a development machine); the job ships the jar with itself (pipeline.jars).
FROM {FLINK_IMAGE} AS flink
FROM {JDK_IMAGE} AS udfs
COPY --from=flink /opt/flink/lib /flink-lib
COPY udfs/jvm/src /src
RUN javac --release 17 -nowarn -d /classes -cp "/flink-lib/*" $(find /src -name '*.java') \\
    && jar cf /metering-udfs.jar -C /classes .
FROM {FLINK_IMAGE}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \\
    && rm -rf /var/lib/apt/lists/*
ADD --checksum=sha256:{connector_sha256()} --chown=flink:flink {url} /opt/flink/lib/{CONNECTOR_JAR}
COPY . /opt/metering
COPY --from=udfs --chown=flink:flink /metering-udfs.jar {UDF_JAR_IN_IMAGE}
ENV METERING__STACK__UDF_JAR={UDF_JAR_IN_IMAGE}
RUN pip3 install --break-system-packages --no-cache-dir /opt/metering
# The registers' folders (access tokens, API keys), owned by the user the services run as: a fresh
# named volume mounted there starts with this owner and mode.
RUN install -d -o flink -g flink -m 700 {ACCESS_IN_CONTAINER} {INGEST_KEYS_IN_CONTAINER}
WORKDIR /opt/metering
USER flink
"""


def kafka_server_properties() -> dict[str, str]:
    """The compose broker (KRaft, one node): clients log in with SCRAM; the controller and the broker's
    own replication listen on the container's loopback only, so nothing unauthenticated is reachable."""
    internal = "127.0.0.1:9094"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{KAFKA_CONTROLLER_PORT}",
        "listeners": f"SASL_PLAINTEXT://:{KAFKA_PORT},CONTROLLER://127.0.0.1:{KAFKA_CONTROLLER_PORT},INTERNAL://{internal}",
        "advertised.listeners": f"SASL_PLAINTEXT://kafka:{KAFKA_PORT},INTERNAL://{internal}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "INTERNAL",
        **scram_listener(KAFKA_PROTOCOL, KAFKA_MECHANISM),
        "log.dirs": "/var/lib/kafka/data",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # The exactly-once sinks' transaction timeout must fit under this (1 h).
        "transaction.max.timeout.ms": "3600000",
        "log.retention.hours": str(24 * 30),
    }


def kafka_command() -> str:
    """Format the storage once with the clients' SCRAM user (``--add-scram``: KRaft has no other way to
    create the first user without an unauthenticated listener), then run the broker."""
    config = f"{KAFKA_CONFIG_DIR}/server.properties"
    return (
        f"/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id {KAFKA_CLUSTER_ID} --config {config} "
        f'--add-scram "{KAFKA_MECHANISM}=[name={KAFKA_USER},password=$${{SCRAM_PASSWORD}}]" '
        f"&& exec /opt/kafka/bin/kafka-server-start.sh {config}"
    )


def compose(config: dict[str, Any]) -> dict[str, Any]:
    """docker compose: Kafka + Flink + ClickHouse + loader + job submission + Grafana + the dashboard + the API.

    Secrets from the environment (:data:`SECRETS`); no admin port published; Grafana, the
    dashboard and the ingestion API on 127.0.0.1 only. The API's key store is the volume
    ``ingest-keys``: `docker compose run --rm ingest metering keys create …` writes it, the running
    service re-reads it (a new or revoked key counts at the next request).
    """
    flink_properties = "\n".join(
        f"{k}: {v}"
        for k, v in {
            "jobmanager.rpc.address": "jobmanager",
            "rest.address": "jobmanager",
            "taskmanager.memory.process.size": TASKMANAGER_MEMORY,
            **flink_configuration(config, "file:///flink-data/checkpoints", "file:///flink-data/savepoints"),
        }.items()
    )
    flink_common = {
        "image": IMAGE,
        "build": {"context": "../..", "dockerfile": "infra/deploy/Dockerfile"},
        "environment": {"FLINK_PROPERTIES": flink_properties},
        "volumes": ["flink-data:/flink-data"],
    }
    kafka_secret = {"METERING__KAFKA__SECURITY__PASSWORD": required("KAFKA_PASSWORD")}
    storage_secret = {"METERING__STORAGE__PASSWORD": required("CLICKHOUSE_PASSWORD")}

    def metering(environment: dict[str, str]) -> dict[str, Any]:
        return {
            "image": IMAGE,
            "volumes": [f"./metering.yaml:{CONFIG_IN_CONTAINER}:ro"],
            "environment": environment,
            "depends_on": ["kafka", "clickhouse"],
        }

    return {
        "name": "metering",
        "services": {
            "kafka": {
                "image": KAFKA_IMAGE,
                # No ports: clients are on this network. Outside clients need a SASL_SSL listener (docs).
                "entrypoint": ["/bin/bash", "-c"],
                "command": [kafka_command()],
                "environment": {"SCRAM_PASSWORD": required("KAFKA_PASSWORD")},
                "volumes": ["kafka-data:/var/lib/kafka/data", f"./kafka:{KAFKA_CONFIG_DIR}:ro"],
            },
            "clickhouse": {
                "image": CLICKHOUSE_IMAGE,
                # No ports: only this network reaches it (`docker compose exec clickhouse clickhouse-client`).
                # The image replaces its password-less `default` user with this one.
                "environment": {
                    "CLICKHOUSE_USER": CLICKHOUSE_USER,
                    "CLICKHOUSE_PASSWORD": required("CLICKHOUSE_PASSWORD"),
                },
                "volumes": ["clickhouse-data:/var/lib/clickhouse"],
            },
            "grafana": {
                "image": GRAFANA_IMAGE,
                "ports": [f"127.0.0.1:{GRAFANA_PORT}:{GRAFANA_PORT}"],
                "environment": {
                    "GF_PLUGINS_PREINSTALL_SYNC": GRAFANA_PLUGIN,
                    "GF_SECURITY_ADMIN_USER": "admin",
                    "GF_SECURITY_ADMIN_PASSWORD": required("GRAFANA_ADMIN_PASSWORD"),
                    "GF_AUTH_ANONYMOUS_ENABLED": "false",
                    "GF_USERS_ALLOW_SIGN_UP": "false",
                    "CLICKHOUSE_HOST": "clickhouse",
                    "CLICKHOUSE_PORT": str(CLICKHOUSE_HTTP_PORT),
                    "CLICKHOUSE_USER": CLICKHOUSE_USER,
                    "CLICKHOUSE_PASSWORD": required("CLICKHOUSE_PASSWORD"),
                    "CLICKHOUSE_DATABASE": "metering",
                },
                "volumes": [
                    "../grafana/provisioning:/etc/grafana/provisioning:ro",
                    "../grafana/dashboards:/etc/grafana/dashboards/metering:ro",
                ],
                "depends_on": {"migrate": {"condition": "service_completed_successfully"}},
            },
            # No ports: the REST API accepts job uploads. `docker compose exec jobmanager` or an
            # authenticating proxy reach it (docs/operations.md, "Production files").
            "jobmanager": {**flink_common, "command": "jobmanager"},
            "taskmanager": {**flink_common, "command": "taskmanager", "depends_on": ["jobmanager"]},
            "migrate": {
                **metering(storage_secret),
                "command": ["metering", "migrate", "--config", CONFIG_IN_CONTAINER],
                "restart": "no",
            },
            "loader": {
                **metering({**kafka_secret, **storage_secret}),
                "command": ["metering", "load", "--config", CONFIG_IN_CONTAINER],
                "depends_on": {"migrate": {"condition": "service_completed_successfully"}},
                "restart": "on-failure",
            },
            "dashboard": {
                **metering(
                    {
                        **storage_secret,
                        "METERING__ACCESS__SIGNING_KEY": required("METERING_SIGNING_KEY"),
                        "METERING__ACCESS__STORE": ACCESS_IN_CONTAINER,
                    }
                ),
                "volumes": [f"./metering.yaml:{CONFIG_IN_CONTAINER}:ro", f"access-data:{ACCESS_IN_CONTAINER}"],
                # 0.0.0.0 inside the container; published on the host's loopback only.
                "command": ["metering", "dashboard", "--config", CONFIG_IN_CONTAINER, "--host", "0.0.0.0", "--public"],
                "ports": [f"127.0.0.1:{DASHBOARD_PORT}:{DASHBOARD_PORT}"],
                "depends_on": {"migrate": {"condition": "service_completed_successfully"}},
                "restart": "on-failure",
            },
            "ingest": {
                **metering(kafka_secret),
                "volumes": [f"./metering.yaml:{CONFIG_IN_CONTAINER}:ro", f"ingest-keys:{INGEST_KEYS_IN_CONTAINER}"],
                # 0.0.0.0 inside the container; published on the host's loopback only (TLS proxy in front).
                "command": ["metering", "serve", "--config", CONFIG_IN_CONTAINER, "--host", "0.0.0.0", "--public"],
                "ports": [f"127.0.0.1:{INGEST_PORT}:{INGEST_PORT}"],
                "healthcheck": {
                    "test": ["CMD", "python3", "-c", READY_PROBE],
                    "interval": "10s",
                    "timeout": "5s",
                    "retries": 3,
                },
                # SIGTERM drains the requests in flight (each waits for Kafka), then flushes the producer.
                "stop_grace_period": f"{INGEST_STOP_GRACE_S}s",
                "depends_on": ["kafka"],
                "restart": "on-failure",
            },
            "submit": {
                **metering(kafka_secret),
                "command": [
                    "metering",
                    "job",
                    "submit",
                    "--cluster",
                    f"http://jobmanager:{FLINK_REST_PORT}",
                    "--config",
                    CONFIG_IN_CONTAINER,
                    "--python-executable",
                    "/usr/bin/python3",
                ],
                "depends_on": ["jobmanager", "taskmanager", "kafka"],
                "restart": "no",
            },
        },
        "volumes": {"kafka-data": {}, "clickhouse-data": {}, "flink-data": {}, "access-data": {}, "ingest-keys": {}},
    }


#: compose's health check of `metering serve`: its /readyz (200 when a broker answers for the events topic).
READY_PROBE = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{INGEST_PORT}/readyz', timeout=4)"


def flink_deployment(config: dict[str, Any]) -> list[dict[str, Any]]:
    """A ConfigMap with the configuration, the FlinkDeployment (application mode), the loader and the ingestion API."""
    pipeline = config.get("pipeline", {})
    minor = ".".join(versions.PYFLINK_VERSION.split(".")[:2])
    conf = flink_configuration(config, "s3://metering-flink/checkpoints", "s3://metering-flink/savepoints")
    conf.update(
        {
            "high-availability.type": "kubernetes",
            "high-availability.storageDir": "s3://metering-flink/ha",
            "kubernetes.operator.savepoint.history.max.count": "10",
            # The REST API accepts job uploads: inside the cluster only (kubectl port-forward to reach it).
            "kubernetes.rest-service.exposed.type": "ClusterIP",
        }
    )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP},
        "data": {"metering.yaml": yaml.safe_dump(deployed_config(config), sort_keys=False)},
    }
    deployment = {
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": "metering"},
        "spec": {
            "image": IMAGE,
            "flinkVersion": f"v{minor.replace('.', '_')}",
            "serviceAccount": "flink",
            "flinkConfiguration": conf,
            "jobManager": {"resource": {"memory": "2048m", "cpu": 1}},
            "taskManager": {"resource": {"memory": TASKMANAGER_MEMORY, "cpu": 2}},
            "podTemplate": {
                "spec": {
                    "containers": [
                        {
                            "name": "flink-main-container",
                            # The job's Python builds its Kafka tables with the SCRAM password
                            # (application mode: it runs in the JobManager).
                            "env": secret_env({"METERING__KAFKA__SECURITY__PASSWORD": "KAFKA_PASSWORD"}),
                            "volumeMounts": [{"name": "metering-config", "mountPath": str(Path(CONFIG_IN_CONTAINER).parent)}],
                        }
                    ],
                    "volumes": [{"name": "metering-config", "configMap": {"name": CONFIG_MAP}}],
                }
            },
            "job": {
                "jarURI": f"local:///opt/flink/opt/flink-python-{versions.PYFLINK_VERSION}.jar",
                "entryClass": "org.apache.flink.client.python.PythonDriver",
                "args": [
                    "-py",
                    JOB_IN_CONTAINER,
                    "--config",
                    CONFIG_IN_CONTAINER,
                    "--job-name",
                    "metering",
                ],
                "parallelism": int(pipeline.get("parallelism", 1)),
                "upgradeMode": "savepoint",
                "state": "running",
            },
        },
    }
    return [config_map, deployment, loader_deployment(CONFIG_MAP), *ingest_deployment(CONFIG_MAP)]


def secret_env(variables: dict[str, str]) -> list[dict[str, Any]]:
    """Container environment from the Secret :data:`SECRET`: variable -> the :data:`SECRETS` entry it takes."""
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": SECRETS[source]}}}
        for name, source in variables.items()
    ]


def loader_deployment(config_map: str) -> dict[str, Any]:
    """``metering load`` as a Kubernetes Deployment: one replica, migrations first (idempotent)."""
    mount = {"name": "metering-config", "mountPath": str(Path(CONFIG_IN_CONTAINER).parent), "readOnly": True}
    labels = {"app.kubernetes.io/name": "metering-loader"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "metering-loader", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            # Never two loaders at once during a rollout: one consumer group, one set of heartbeats.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [
                        {
                            "name": "migrate",
                            "image": IMAGE,
                            "command": ["metering", "migrate", "--config", CONFIG_IN_CONTAINER],
                            "env": secret_env({"METERING__STORAGE__PASSWORD": "CLICKHOUSE_PASSWORD"}),
                            "volumeMounts": [mount],
                        }
                    ],
                    "containers": [
                        {
                            "name": "loader",
                            "image": IMAGE,
                            "command": ["metering", "load", "--config", CONFIG_IN_CONTAINER],
                            "env": secret_env(
                                {
                                    "METERING__KAFKA__SECURITY__PASSWORD": "KAFKA_PASSWORD",
                                    "METERING__STORAGE__PASSWORD": "CLICKHOUSE_PASSWORD",
                                }
                            ),
                            "volumeMounts": [mount],
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
                        }
                    ],
                    "terminationGracePeriodSeconds": 60,
                    "volumes": [{"name": "metering-config", "configMap": {"name": config_map}}],
                },
            },
        },
    }


def ingest_deployment(config_map: str) -> list[dict[str, Any]]:
    """``metering serve`` on Kubernetes: :data:`INGEST_REPLICAS` workers behind a ClusterIP ``Service``.

    Each worker has its own Kafka producer and its own token bucket per key (docs/ingest.md,
    "Several workers"). They share the key store: the Secret :data:`INGEST_KEYS_SECRET` mounted
    read-only at ``ingest.keys``; updating the Secret (a key added, an id appended to revoked.txt)
    reaches every worker when the kubelet refreshes the mount, without a restart. Ready when a
    broker answers (``/readyz``), alive while the process answers and its producer can write
    (``/healthz``: 503 after a fatal producer error).
    """
    labels = {"app.kubernetes.io/name": "metering-ingest"}
    config_mount = {"name": "metering-config", "mountPath": str(Path(CONFIG_IN_CONTAINER).parent), "readOnly": True}
    keys_mount = {"name": "ingest-keys", "mountPath": INGEST_KEYS_IN_CONTAINER, "readOnly": True}

    def probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period_s, "failureThreshold": failures}

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "metering-ingest", "labels": labels},
        "spec": {
            "replicas": INGEST_REPLICAS,
            "selector": {"matchLabels": labels},
            # Workers are independent (no state but their buckets): roll them one at a time.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "ingest",
                            "image": IMAGE,
                            "command": ["metering", "serve", "--config", CONFIG_IN_CONTAINER, "--host", "0.0.0.0", "--public"],
                            "ports": [{"name": "http", "containerPort": INGEST_PORT}],
                            "env": secret_env({"METERING__KAFKA__SECURITY__PASSWORD": "KAFKA_PASSWORD"}),
                            "volumeMounts": [config_mount, keys_mount],
                            "readinessProbe": probe("/readyz", 5, 2),
                            "livenessProbe": probe("/healthz", 10, 3),
                            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                        }
                    ],
                    "terminationGracePeriodSeconds": INGEST_STOP_GRACE_S,
                    "volumes": [
                        {"name": "metering-config", "configMap": {"name": config_map}},
                        {"name": "ingest-keys", "secret": {"secretName": INGEST_KEYS_SECRET}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "metering-ingest", "labels": labels},
        "spec": {
            # Inside the cluster; an Ingress or gateway with TLS in front reaches it from outside.
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": INGEST_PORT, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def render(config_path: Path) -> dict[str, str]:
    """File name -> content of every generated deployment file."""
    config = yaml.safe_load(config_path.read_text()) or {}
    header = f"# Generated by infra/deploy.py from {config_path.relative_to(PROJECT_ROOT)} and infra/versions.py; do not edit.\n"
    return {
        "Dockerfile": dockerfile(),
        "compose.yaml": header + yaml.safe_dump(compose(config), sort_keys=False),
        "metering.yaml": header + yaml.safe_dump(deployed_config(config), sort_keys=False),
        "flinkdeployment.yaml": header + yaml.safe_dump_all(flink_deployment(config), sort_keys=False),
        KAFKA_PROPERTIES: header + "".join(f"{k}={v}\n" for k, v in kafka_server_properties().items()),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config_path = Path(args[0]).resolve() if args else PROJECT_ROOT / "config" / "metering.example.yaml"
    DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render(config_path).items():
        (DEPLOY_DIR / name).parent.mkdir(parents=True, exist_ok=True)
        (DEPLOY_DIR / name).write_text(text)
        print(f"wrote {DEPLOY_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
