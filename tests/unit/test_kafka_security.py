"""``kafka.security``: parsed and validated like the rest, secret never shown, and the only way clients are built."""

from __future__ import annotations

import ast
from pathlib import Path
from unittest.mock import MagicMock

import pytest

from infra.kafka_security import (
    FLINK_SHADED_PREFIX,
    KafkaSecurity,
    flink_connector_options,
    jaas_config,
    kafka_python_options,
    librdkafka_options,
    redacted,
)
from infra.settings import PROJECT_ROOT
from jobs.config import ConfigError, load_config

EXAMPLE = PROJECT_ROOT / "config" / "metering.example.yaml"
SECRET = 'se"cr\\et-0123'
SASL_ENV = {
    "METERING__KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
    "METERING__KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
    "METERING__KAFKA__SECURITY__USERNAME": "metering",
    "METERING__KAFKA__SECURITY__PASSWORD": SECRET,
}


def problems(env: dict[str, str], path: Path = EXAMPLE) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    return caught.value.problems


def test_plaintext_by_default_and_sasl_from_the_environment() -> None:
    assert load_config(EXAMPLE, env={}).kafka.security == KafkaSecurity()
    security = load_config(EXAMPLE, env=SASL_ENV).kafka.security
    assert (security.protocol, security.sasl_mechanism, security.username, security.password) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "metering",
        SECRET,
    )


def test_the_password_is_never_printed(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, env=SASL_ENV)
    assert SECRET not in repr(config) and SECRET not in repr(config.kafka) and "'***'" in repr(config.kafka.security)
    from jobs.cli.config import summarize

    path = tmp_path / "metering.yaml"
    path.write_text(EXAMPLE.read_text().replace("    # username: metering ", "    username: metering ", 1))
    with pytest.MonkeyPatch.context() as env:
        for name, value in SASL_ENV.items():
            env.setenv(name, value)
        summary = summarize(str(path))
    assert "SCRAM-SHA-512" in summary["kafka_security"] and SECRET not in str(summary)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"METERING__KAFKA__SECURITY__PROTOCOL": "SASL"}, "kafka.security.protocol: 'SASL' must be one of PLAINTEXT"),
        ({"METERING__KAFKA__SECURITY__SASL_MECHANISM": "GSSAPI"}, "kafka.security.sasl_mechanism: 'GSSAPI' must be one of"),
        (
            {"METERING__KAFKA__SECURITY__PASWORD": "x"},
            "kafka.security.pasword: unknown key; did you mean kafka.security.password?",
        ),
        ({"METERING__KAFKA__SECURITY__PROTOCOL": "SASL_SSL"}, "kafka.security.username: required with protocol SASL_SSL"),
        (
            {"METERING__KAFKA__SECURITY__PROTOCOL": "SASL_SSL", "METERING__KAFKA__SECURITY__USERNAME": "u"},
            "kafka.security.password: required with protocol SASL_SSL (set METERING__KAFKA__SECURITY__PASSWORD)",
        ),
        ({"METERING__KAFKA__SECURITY__PASSWORD": SECRET}, "kafka.security.protocol: PLAINTEXT sends no credentials"),
        (
            {"METERING__KAFKA__SECURITY__SSL_CA_FILE": "/no/such/ca.pem"},
            "kafka.security.ssl_ca_file: '/no/such/ca.pem' is not a file",
        ),
    ],
)
def test_bad_values_are_problems_naming_the_key(env: dict[str, str], expected: str) -> None:
    found = problems(env)
    assert any(p.startswith(expected) for p in found), found
    assert not any(SECRET in p for p in found)


def test_a_password_that_is_not_text_is_a_problem_without_its_value(tmp_path: Path) -> None:
    path = tmp_path / "metering.yaml"
    path.write_text(
        EXAMPLE.read_text().replace("    protocol: PLAINTEXT ", "    password: [hunter2]\n    protocol: PLAINTEXT ", 1)
    )
    found = problems({}, path)
    assert any(p.startswith("kafka.security.password: must be text") for p in found), found
    assert not any("hunter2" in p for p in found)


def test_each_client_library_gets_its_own_names(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    security = load_config(EXAMPLE, env={**SASL_ENV, "METERING__KAFKA__SECURITY__SSL_CA_FILE": str(ca)}).kafka.security
    assert kafka_python_options(security) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "metering",
        "sasl_plain_password": SECRET,
        "ssl_cafile": str(ca),
    }
    assert librdkafka_options(security) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "metering",
        "sasl.password": SECRET,
        "ssl.ca.location": str(ca),
    }
    assert flink_connector_options(security) == {
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.mechanism": "SCRAM-SHA-512",
        "properties.sasl.jaas.config": jaas_config(security),
        "properties.ssl.truststore.type": "PEM",
        "properties.ssl.truststore.location": str(ca),
    }
    # The SQL connector jar relocates the Kafka client: the unrelocated class would not load there.
    assert jaas_config(security) == (
        f"{FLINK_SHADED_PREFIX}org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="metering" password="se\\"cr\\\\et-0123";'
    )
    assert kafka_python_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
    assert librdkafka_options(KafkaSecurity()) == {"security.protocol": "plaintext"}


def test_redacted_masks_every_secret_option() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "hunter2")
    for options in (kafka_python_options(security), librdkafka_options(security), flink_connector_options(security)):
        assert "hunter2" in str(options) and "hunter2" not in str(redacted(options))


def test_every_kafka_table_of_the_job_authenticates() -> None:
    from jobs.flink.metering_job import RunOptions, build

    config = load_config(EXAMPLE, env={**SASL_ENV, "METERING__KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT"})
    t_env = MagicMock()
    build(config, RunOptions(), MagicMock(), t_env)
    tables = [c.args[0] for c in t_env.execute_sql.call_args_list if "'connector' = " in c.args[0]]
    assert len(tables) == 9  # the events source, dead letters, duplicates, the finalization's sinks, raw, amendments
    for ddl in tables:
        assert "'properties.security.protocol' = 'SASL_PLAINTEXT'" in ddl
        assert "'properties.sasl.mechanism' = 'SCRAM-SHA-512'" in ddl
        assert f"'properties.sasl.jaas.config' = '{FLINK_SHADED_PREFIX}org.apache.kafka.common.security.scram." in ddl


# --- every client is built through infra/kafka_security.py -----------------------------------------

KAFKA_PYTHON_CLIENTS = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}
CONFLUENT_CLIENTS = {"Consumer", "Producer", "AdminClient"}
#: Functions that build a client from a bootstrap address: callers in the product pass ``security=``.
CLIENT_HELPERS = {"make_producer", "ensure_topic", "committed_values", "HeartbeatSender", "describe_cluster", "KafkaSink"}
#: Where confluent-kafka clients may be built: from the complete settings the loader made with
#: ``librdkafka_options``, and the ingestion service's producer, which spreads them into its own
#: (both checked below).
CONFLUENT_MODULES = {"jobs/loader/kafka_consumer.py", "jobs/ingest/kafka.py", "jobs/alerts/service.py", "jobs/alerts/kafka.py"}
#: Calls that deliberately connect without configuration: the local stack's own PLAINTEXT broker.
LOCAL_STACK = {("infra/kafka.py", "describe_cluster")}


def calls(path: Path) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            found.append((name, node))
    return found


def product_modules() -> list[Path]:
    return sorted(p for folder in ("jobs", "infra", "clickhouse") for p in (PROJECT_ROOT / folder).rglob("*.py"))


def spreads(call: ast.Call, function: str) -> bool:
    return any(
        k.arg is None and isinstance(k.value, ast.Call) and getattr(k.value.func, "id", "") == function for k in call.keywords
    )


def test_every_kafka_python_client_takes_its_security_from_kafka_python_options() -> None:
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{call.lineno}: {name}"
        for path in product_modules()
        for name, call in calls(path)
        if name in KAFKA_PYTHON_CLIENTS and not spreads(call, "kafka_python_options")
    ]
    assert offenders == []


def test_confluent_clients_only_where_the_loader_passes_librdkafka_options() -> None:
    places = {
        str(path.relative_to(PROJECT_ROOT))
        for path in product_modules()
        for name, _ in calls(path)
        if name in CONFLUENT_CLIENTS and "confluent_kafka" in path.read_text()
    }
    assert places == CONFLUENT_MODULES
    loader = [call for name, call in calls(PROJECT_ROOT / "jobs/loader/loader.py") if name == "librdkafka_options"]
    assert len(loader) == 1
    from jobs.loader.loader import Loader

    config = load_config(EXAMPLE, env=SASL_ENV)
    assert librdkafka_options(config.kafka.security).items() <= Loader(config, MagicMock()).consumer_settings.items()
    ingest = [call for name, call in calls(PROJECT_ROOT / "jobs/ingest/kafka.py") if name == "Producer"]
    assert len(ingest) == 1
    source = (PROJECT_ROOT / "jobs/ingest/kafka.py").read_text()
    assert source.count("**librdkafka_options(security)") == 1 and "Producer(self.settings)" in source
    for module in ("jobs/alerts/service.py", "jobs/alerts/kafka.py"):
        built = [call for name, call in calls(PROJECT_ROOT / module) if name in CONFLUENT_CLIENTS]
        assert built and all(
            isinstance(c.args[0], ast.Dict) and (spreads_dict(c.args[0], "_base") or spreads_dict(c.args[0], "_producer_base"))
            for c in built
        ), module
    clients = (PROJECT_ROOT / "jobs/alerts/kafka.py").read_text()
    assert '{**_base(config), "partitioner"' in clients  # producers: _base, partitioned as every writer
    assert "**librdkafka_options(config.kafka.security)" in clients


def spreads_dict(node: ast.Dict, function: str) -> bool:
    """A ``{**function(...), ...}`` literal."""
    pairs = zip(node.keys, node.values, strict=True)
    return any(k is None and isinstance(v, ast.Call) and getattr(v.func, "id", "") == function for k, v in pairs)


def test_the_products_callers_of_client_helpers_pass_security() -> None:
    offenders = [
        f"{relative}:{call.lineno}: {name}"
        for path in product_modules()
        if (relative := str(path.relative_to(PROJECT_ROOT)))
        for name, call in calls(path)
        if name in CLIENT_HELPERS and (relative, name) not in LOCAL_STACK and not any(k.arg == "security" for k in call.keywords)
    ]
    assert offenders == []


def test_the_flink_tables_take_their_options_from_flink_connector_options() -> None:
    source = (PROJECT_ROOT / "jobs/flink/metering_job.py").read_text()
    assert source.count('"properties.bootstrap.servers"') == 1  # only in _kafka_options, beside the security options
    assert "**flink_connector_options(config.kafka.security)" in source


def test_a_refused_login_becomes_an_error_naming_the_settings() -> None:
    import logging

    from kafka.errors import KafkaTimeoutError

    from infra.kafka_security import KafkaAuthenticationError, refused_credentials_raise

    sasl = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "metering", "hunter2")
    with pytest.raises(KafkaAuthenticationError) as caught, refused_credentials_raise(sasl):
        logging.getLogger("kafka.net.manager").warning("Bootstrap failed: [Error 58] SaslAuthenticationFailedError: bad")
        raise KafkaTimeoutError("Unable to bootstrap from x:9092")
    assert caught.value.certain and "refused the credentials of kafka.security" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    # The client said nothing about why: both causes are named.
    with pytest.raises(KafkaAuthenticationError) as caught, refused_credentials_raise(sasl):
        raise KafkaTimeoutError("Unable to bootstrap from x:9092")
    assert not caught.value.certain and "unreachable" in str(caught.value)
    # Without SASL there is no login to blame.
    with pytest.raises(KafkaTimeoutError), refused_credentials_raise(KafkaSecurity()):
        raise KafkaTimeoutError("Unable to bootstrap from x:9092")
