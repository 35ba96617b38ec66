"""How the pipeline's Kafka clients authenticate: ``kafka.security`` of the configuration.

One value, :class:`KafkaSecurity`, and one function per client library that turns it into that
library's settings. Every Kafka client of the project is built through one of them
(tests/unit/test_kafka_security.py reads every module's client constructors to hold this):

- :func:`kafka_python_options`: kafka-python (``metering produce``, the heartbeats, the topic
  admin, the upgrade's offset reader, the local stack's probe);
- :func:`librdkafka_options`: confluent-kafka (the loader's consumer and its admin client);
- :func:`flink_connector_options`: the ``properties.*`` options of the Flink Kafka connector's
  tables (the metering job's DDL).

The password is a secret: set it with ``METERING__KAFKA__SECURITY__PASSWORD``, not in the file.
It is never in a ``repr``; the Flink connector can only take it inside ``sasl.jaas.config``,
which is why :func:`redacted` exists for anything that prints connector options.

The Flink SQL connector jar (``flink-sql-connector-kafka``) relocates the Kafka client into
``org.apache.flink.kafka.shaded``: the login module named in ``sasl.jaas.config`` must be the
relocated class, or the job fails at start with "class not found" (checked against the pinned jar).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``kafka.security.protocol``: Kafka's ``security.protocol`` values.
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
#: ``kafka.security.sasl_mechanism``: the SASL mechanisms every client library here supports with a password.
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
#: Where the Flink SQL connector jar relocates the Kafka client's classes.
FLINK_SHADED_PREFIX = "org.apache.flink.kafka.shaded."
#: The JAAS login module of each mechanism (unrelocated name).
LOGIN_MODULES = {
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}
#: What a secret is shown as.
MASK = "***"


@dataclass(frozen=True)
class KafkaSecurity:
    """``kafka.security``: how clients connect to the brokers. The default is PLAINTEXT (the local stack)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-256"
    username: str = ""
    password: str = field(default="", repr=False)
    #: A PEM file of the CA certificates that signed the brokers' certificates (SSL, SASL_SSL);
    #: empty: the system's trust store.
    ssl_ca_file: Path | None = None

    def __repr__(self) -> str:  # never print the password
        secret = repr(MASK) if self.password else "''"
        return (
            f"KafkaSecurity(protocol={self.protocol!r}, sasl_mechanism={self.sasl_mechanism!r}, "
            f"username={self.username!r}, password={secret}, ssl_ca_file={self.ssl_ca_file!r})"
        )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for each inconsistency (keys relative to ``kafka.security``)."""
        found: list[tuple[str, str]] = []
        if self.protocol not in PROTOCOLS:
            found.append(("protocol", f"{self.protocol!r} must be one of {', '.join(PROTOCOLS)}"))
        if self.sasl_mechanism not in MECHANISMS:
            found.append(("sasl_mechanism", f"{self.sasl_mechanism!r} must be one of {', '.join(MECHANISMS)}"))
        if self.sasl:
            if not self.username:
                found.append(("username", f"required with protocol {self.protocol}"))
            if not self.password:
                found.append(("password", f"required with protocol {self.protocol} (set METERING__KAFKA__SECURITY__PASSWORD)"))
        elif self.protocol in PROTOCOLS and (self.username or self.password):
            found.append(("protocol", f"{self.protocol} sends no credentials: username/password would be ignored (use SASL_SSL)"))
        if self.ssl_ca_file is not None and self.protocol in PROTOCOLS and not self.ssl:
            found.append(("ssl_ca_file", f"only used with SSL or SASL_SSL, not {self.protocol}"))
        return found


PLAINTEXT = KafkaSecurity()


#: librdkafka's partitioner that matches kafka-python's and the Java client's (murmur2 of the key; a
#: record without a key goes to a random partition). librdkafka's own default hashes with CRC32, so a
#: confluent-kafka writer of a keyed topic must set it, or a customer's records written by
#: `metering serve` and by `metering produce` land in different partitions and lose their order.
LIBRDKAFKA_PARTITIONER = "murmur2_random"


def kafka_python_options(security: KafkaSecurity) -> dict[str, Any]:
    """kafka-python keyword arguments (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``)."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.sasl:
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.username,
            "sasl_plain_password": security.password,
        }
    if security.ssl and security.ssl_ca_file is not None:
        options["ssl_cafile"] = str(security.ssl_ca_file)
    return options


def librdkafka_options(security: KafkaSecurity) -> dict[str, Any]:
    """librdkafka properties (confluent-kafka's ``Consumer``, ``Producer``, ``AdminClient``)."""
    options: dict[str, Any] = {"security.protocol": security.protocol.lower()}
    if security.sasl:
        options |= {
            "sasl.mechanism": security.sasl_mechanism,
            "sasl.username": security.username,
            "sasl.password": security.password,
        }
    if security.ssl and security.ssl_ca_file is not None:
        options["ssl.ca.location"] = str(security.ssl_ca_file)
    return options


def jaas_config(security: KafkaSecurity, *, module_prefix: str = FLINK_SHADED_PREFIX) -> str:
    """Kafka's ``sasl.jaas.config`` for the Java client: the login module with username and password.

    Values are JAAS quoted strings (``\\`` and ``"`` escaped). Contains the password: never log it.
    """

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    module = module_prefix + LOGIN_MODULES[security.sasl_mechanism]
    return f"{module} required username={quoted(security.username)} password={quoted(security.password)};"


def flink_connector_options(security: KafkaSecurity) -> dict[str, str]:
    """``properties.*`` options of a Flink Kafka connector table (``kafka`` and ``upsert-kafka``)."""
    options = {"properties.security.protocol": security.protocol}
    if security.sasl:
        options |= {
            "properties.sasl.mechanism": security.sasl_mechanism,
            "properties.sasl.jaas.config": jaas_config(security),
        }
    if security.ssl and security.ssl_ca_file is not None:
        # Kafka's Java client reads a PEM trust store itself (KIP-651), so one CA file serves every client.
        options |= {"properties.ssl.truststore.type": "PEM", "properties.ssl.truststore.location": str(security.ssl_ca_file)}
    return options


#: Option names (any client library) whose values are secrets.
SECRET_OPTIONS = frozenset(
    {"sasl_plain_password", "sasl.password", "properties.sasl.jaas.config", "sasl.jaas.config", "password"}
)


def redacted(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every secret value masked: for logs, errors and printed plans."""
    return {k: (MASK if k in SECRET_OPTIONS and v else v) for k, v in options.items()}


class KafkaAuthenticationError(Exception):
    """The brokers refused ``kafka.security``'s credentials: not transient, so never retried; the message names the settings.

    ``certain`` False: no broker accepted a connection with them, and the client did not say why
    (refused credentials, or no broker at the address).
    """

    def __init__(self, security: KafkaSecurity, cause: str, *, certain: bool = True) -> None:
        self.security = security
        self.certain = certain
        who = f"kafka.security (user {security.username!r}, {security.protocol} {security.sasl_mechanism})"
        fix = "kafka.security.username and METERING__KAFKA__SECURITY__PASSWORD (the user must exist with this mechanism)"
        if certain:
            message = f"Kafka refused the credentials of {who}: {cause}; fix: check {fix}"
        else:
            message = (
                f"no Kafka broker accepted the login of {who}: {cause}; either the credentials were refused or the "
                f"brokers are unreachable; fix: check kafka.bootstrap_servers (a SASL listener) and {fix}"
            )
        super().__init__(message)


#: kafka-python's errors when no broker could be bootstrapped from (a refused login ends in one of them too).
BOOTSTRAP_FAILURES = ("KafkaTimeoutError", "NoBrokersAvailable")
#: Names of the errors by which kafka-python and librdkafka report refused credentials.
AUTHENTICATION_FAILURES = ("SaslAuthenticationFailedError", "AuthenticationFailedError", "_AUTHENTICATION")


class _AuthenticationLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(name in message for name in AUTHENTICATION_FAILURES):
            self.failures.append(message)


@contextmanager
def refused_credentials_raise(security: KafkaSecurity) -> Iterator[None]:
    """Turn kafka-python's "unable to bootstrap" after refused credentials into :class:`KafkaAuthenticationError`.

    kafka-python retries a refused SASL login until its bootstrap timeout and then reports only a
    timeout; the refusal itself is in its log, which this watches while the block runs.
    """
    handler = _AuthenticationLog()
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    try:
        yield
    except Exception as exc:
        if security.sasl and handler.failures:
            raise KafkaAuthenticationError(security, "authentication failed (invalid credentials)") from exc
        if security.sasl and type(exc).__name__ in BOOTSTRAP_FAILURES:
            raise KafkaAuthenticationError(security, f"{type(exc).__name__}: {exc}", certain=False) from exc
        raise
    finally:
        logger.removeHandler(handler)
