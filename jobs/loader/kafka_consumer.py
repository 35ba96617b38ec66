"""The loader's Kafka consumer: the few operations the loader needs, on librdkafka (confluent-kafka).

The loader (jobs/loader/loader.py) reads committed records in batches, stores them, and only then commits
the positions it has read up to. What it needs of a consumer, and nothing more, is
:class:`LoaderConsumer`. :class:`ConfluentConsumer` implements it on confluent-kafka: consuming
measured about 6x cheaper per record than kafka-python (docs/benchmarks.md, "The loader's raw
events").

What it keeps from the kafka-python consumer it replaces:

* ``consume`` waits up to its timeout for the first record only, then returns what is already
  fetched (librdkafka's batch call alone would wait the whole timeout even with records there).
* ``commit`` commits, synchronously, the position of every assigned partition (the next offset to
  read, past transaction markers), never anything not yet handed out; nothing is committed by
  itself (no auto commit, no commit at close). Uncommitted records are re-delivered to whoever
  owns the partition next: a restarted loader, or this one after a rebalance.
* ``lag`` comes from what the last fetches said (no request); ``caught_up`` asks the broker for the
  end offsets, under ``read_committed`` the last stable offset: an open transaction's records are
  not waited for.
* A partition the loader has not read from yet in this assignment has no position: its committed
  offset is used, or the earliest offset when the group never committed one (``auto.offset.reset``).

Errors the broker side can recover from (down, restarting, a rebalance, a timeout) surface as
:class:`ConsumerError`; the loader logs them and goes on, and librdkafka reconnects by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from infra.kafka_security import KafkaAuthenticationError, KafkaSecurity

log = logging.getLogger("metering.loader.kafka")

#: How the loader reads (librdkafka properties): committed records only, from the start, in big
#: fetches, nothing committed but what the loader commits after storing a batch.
#: ``bench/loader_raw.py`` measures the client with the same settings. Connection and security
#: settings (``bootstrap.servers``, and SASL/TLS from ``infra.kafka_security.librdkafka_options``)
#: are added by the caller (the loader).
CONSUMER_SETTINGS: dict[str, Any] = {
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    # The loader commits explicit positions; librdkafka's own offset store stays out of it.
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    # kafka-python checked every fetched batch's CRC-32C; librdkafka does not unless asked.
    "check.crcs": True,
    # A loader that died (kill -9) holds its partitions until the coordinator times it out: 10 s,
    # not 45 s, before a restarted loader resumes. Heartbeats come from librdkafka's own thread,
    # so long inserts and retries do not count (max.poll.interval.ms, 5 min, still does).
    "session.timeout.ms": 10_000,
}

#: Seconds to wait for the broker when the loader asks it something (end offsets, committed offsets).
REQUEST_TIMEOUT_S = 10.0

#: Consumer properties left out of the admin client's configuration (which asks for end offsets).
_CONSUMER_ONLY = {
    *CONSUMER_SETTINGS,
    "group.id",
    "group.instance.id",
    "group.protocol",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "auto.commit.interval.ms",
    "enable.partition.eof",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
}


class ConsumerError(Exception):
    """The consumer could not do what was asked now (broker away, a rebalance, a timeout); nothing was lost."""


class Record:
    """A consumed record with the attributes the loader's row functions read (as kafka-python's records have them)."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, message: Any) -> None:
        self.topic: str = message.topic()
        self.partition: int = message.partition()
        self.offset: int = message.offset()
        self.timestamp: int = message.timestamp()[1]  # milliseconds (create or log-append time)
        self.key: bytes | None = message.key()
        self.value: bytes | None = message.value()


class LoaderConsumer(Protocol):
    """What the loader asks of a consumer subscribed to its topics."""

    def consume(self, max_records: int, timeout_s: float) -> Sequence[Any]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first; may be empty."""
        ...

    def commit(self) -> None:
        """Commit the position of every assigned partition, synchronously. Raises ConsumerError."""
        ...

    def lag(self) -> int:
        """Records not yet read in the assigned partitions, as the last fetches saw the ends. Raises ConsumerError."""
        ...

    def caught_up(self) -> bool:
        """Whether partitions are assigned and every one is read to its end (asks the broker). Raises ConsumerError."""
        ...

    def close(self) -> None:
        """Leave the group (nothing committed); the consumer is unusable afterwards."""
        ...


_Key = tuple[str, int]


class ConfluentConsumer:
    """:class:`LoaderConsumer` on confluent-kafka, subscribed to ``topics`` with librdkafka ``settings``.

    ``settings``: a complete librdkafka configuration (``CONSUMER_SETTINGS`` plus
    ``bootstrap.servers``, ``group.id`` and whatever the deployment needs). ``client``: a ready
    confluent-kafka ``Consumer`` to use instead of building one (tests).
    """

    def __init__(self, topics: Sequence[str], settings: Mapping[str, Any], *, client: Any | None = None) -> None:
        from confluent_kafka import Consumer

        #: Committed offsets known for assigned partitions (ours, or read from the broker), by (topic, partition).
        self._committed: dict[_Key, int] = {}
        self._closed = False
        #: Why the brokers refused our credentials (librdkafka reports it through ``error_cb``, then retries forever).
        self._refused: str | None = None
        if client is None:
            client = Consumer({"logger": log, "error_cb": self._on_error, **settings})
        self._security = KafkaSecurity(
            protocol=str(settings.get("security.protocol", "plaintext")).upper(),
            sasl_mechanism=str(settings.get("sasl.mechanism", "SCRAM-SHA-256")),
            username=str(settings.get("sasl.username", "")),
        )
        self._client = client
        self._read_committed = settings.get("isolation.level", "read_committed") == "read_committed"
        #: Asks for end offsets: over its own connection, not queued behind the consumer's fetch
        #: long-poll (each of the consumer's own queries waited fetch.wait.max.ms, 0.5 s per partition).
        self._admin_settings = {"logger": log, **{k: v for k, v in settings.items() if k not in _CONSUMER_ONLY}}
        self._admin: Any | None = None
        client.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _on_error(self, error: Any) -> None:
        _log_error(error)
        if _is_authentication(error):
            self._refused = f"{error.name()}: {error.str()}"

    def _raise_if_refused(self) -> None:
        """Refused credentials are not transient: stop with :class:`KafkaAuthenticationError` instead of retrying forever."""
        if self._refused is not None:
            raise KafkaAuthenticationError(self._security, self._refused)

    # -- rebalances (called by librdkafka from inside consume/poll)

    def _on_assign(self, client: Any, partitions: list[Any]) -> None:
        # Another member may have committed these since: read their offsets afresh when needed.
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, client: Any, partitions: list[Any]) -> None:
        # Records of these partitions read but not committed go to their next owner again (re-delivery,
        # harmless to the loader's tables); their positions are no longer ours to commit.
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)
        log.info("revoked %s", _names(partitions))

    # -- LoaderConsumer

    def consume(self, max_records: int, timeout_s: float) -> list[Record]:
        from confluent_kafka import KafkaException

        client = self._client
        try:
            records = _records(client.consume(max_records, 0))
            if not records and timeout_s > 0:  # nothing fetched yet (or only error events): wait for the first record
                first = client.poll(timeout_s)
                if first is None:
                    self._raise_if_refused()
                    return []
                records = _records([first, *client.consume(max_records - 1, 0)] if max_records > 1 else [first])
        except KafkaException as exc:
            if _is_authentication(exc.args[0] if exc.args else None):
                raise KafkaAuthenticationError(self._security, _describe(exc)) from exc
            raise ConsumerError(_describe(exc)) from exc
        self._raise_if_refused()
        return records

    def commit(self) -> None:
        from confluent_kafka import KafkaException

        client = self._client
        try:
            positions = client.position(client.assignment())
            offsets = [tp for tp in positions if tp.offset >= 0 and self._committed.get((tp.topic, tp.partition)) != tp.offset]
            if not offsets:
                return
            result = client.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise ConsumerError(f"offset commit failed: {_describe(exc)}") from exc
        failed = []
        for tp in result or []:
            if tp.error is None:
                self._committed[(tp.topic, tp.partition)] = tp.offset
            else:
                failed.append(tp)
        if failed:
            raise ConsumerError("offset commit failed: " + ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed))

    def lag(self) -> int:
        from confluent_kafka import KafkaException

        client = self._client
        try:
            total = 0
            for tp, position in self._positions(ask_earliest=False).items():
                end = client.get_watermark_offsets(_partition(tp), cached=True)[1]  # from the last fetch: no request
                if end >= 0:
                    total += max(0, end - position)
            return total
        except KafkaException as exc:
            raise ConsumerError(_describe(exc)) from exc

    def caught_up(self) -> bool:
        from confluent_kafka import KafkaException

        try:
            positions = self._positions(ask_earliest=True)
            if not positions:
                return False
            # Under read_committed the last stable offset: an open transaction's records are not waited for.
            ends = self._list_offsets(list(positions), latest=True)
            return all(position >= ends[key] for key, position in positions.items())
        except KafkaException as exc:
            raise ConsumerError(_describe(exc)) from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._admin = None
            self._client.close()

    # -- helpers

    def _positions(self, *, ask_earliest: bool) -> dict[_Key, int]:
        """The next offset to read of every assigned partition, as kafka-python's ``position`` gives it.

        librdkafka knows a partition's position only once a record (or a transaction marker) of it
        was handed out; before that the loader starts at the committed offset (asked once per
        assignment), or, when the group committed none, at the earliest offset: asked of the broker
        when ``ask_earliest``, else as the last fetch saw it.
        """
        client = self._client
        positions = {(tp.topic, tp.partition): tp.offset for tp in client.position(client.assignment())}
        unknown = [key for key, offset in positions.items() if offset < 0 and key not in self._committed]
        if unknown:
            for tp in client.committed([_partition(key) for key in unknown], timeout=REQUEST_TIMEOUT_S):
                if tp.error is not None:
                    raise ConsumerError(f"committed offset of {tp.topic}[{tp.partition}] unknown: {tp.error}")
                self._committed[(tp.topic, tp.partition)] = tp.offset  # negative: nothing committed
        for key, offset in positions.items():
            if offset < 0:
                positions[key] = self._committed[key]
        never = [key for key, offset in positions.items() if offset < 0]  # nothing committed: the earliest offset
        if never:
            if ask_earliest:
                positions.update(self._list_offsets(never, latest=False))
            else:  # as the last fetch saw it (statistics)
                positions.update({key: max(0, client.get_watermark_offsets(_partition(key), cached=True)[0]) for key in never})
        return positions

    def _list_offsets(self, keys: list[_Key], *, latest: bool) -> dict[_Key, int]:
        """The end (``latest``) or earliest offset of each partition, in one request per broker."""
        from confluent_kafka import IsolationLevel
        from confluent_kafka.admin import AdminClient, OffsetSpec

        if self._admin is None:
            self._admin = AdminClient(self._admin_settings)
        spec = OffsetSpec.latest() if latest else OffsetSpec.earliest()
        level = IsolationLevel.READ_COMMITTED if self._read_committed else IsolationLevel.READ_UNCOMMITTED
        futures = self._admin.list_offsets(
            {_partition(key): spec for key in keys}, isolation_level=level, request_timeout=REQUEST_TIMEOUT_S
        )
        ends = {(tp.topic, tp.partition): int(future.result().offset) for tp, future in futures.items()}
        self._admin.poll(0)  # hands its queued log lines to the logger
        return ends


def _records(messages: list[Any]) -> list[Record]:
    """The records among ``messages``; error events (librdkafka reports them in the stream) are logged."""
    records = [Record(m) for m in messages if m.error() is None]
    if len(records) != len(messages):
        for m in messages:
            if m.error() is not None:
                _log_error(m.error())
    return records


def _partition(key: _Key) -> Any:
    from confluent_kafka import TopicPartition

    return TopicPartition(key[0], key[1])


def _names(partitions: list[Any]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _describe(exc: BaseException) -> str:
    error: Any = exc.args[0] if exc.args else None
    if hasattr(error, "name") and hasattr(error, "str"):
        return f"{error.name()}: {error.str()}"
    return f"{type(exc).__name__}: {exc}"


def _is_authentication(error: Any) -> bool:
    """Whether a librdkafka error is refused credentials (``_AUTHENTICATION``, or the broker's SASL_AUTHENTICATION_FAILED)."""
    from confluent_kafka import KafkaError

    code = getattr(error, "code", lambda: None)()
    return code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)


def _log_error(error: Any) -> None:
    """A client or message error: librdkafka retries and reconnects by itself, so it is only reported."""
    level = logging.ERROR if getattr(error, "fatal", lambda: False)() else logging.WARNING
    log.log(level, "kafka: %s", error)
