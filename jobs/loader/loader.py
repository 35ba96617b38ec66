"""The loader: the job's Kafka topics -> ClickHouse, idempotently.

It consumes with ``isolation.level=read_committed`` (only what the job's checkpoints committed;
librdkafka's consumer, behind jobs/loader/kafka_consumer.py's small interface), converts records to rows,
inserts each table's rows of the batch, and commits Kafka offsets only after every row of the batch
was stored: in its table, or in ``quarantine``. A crash between
insert and commit re-delivers the batch: every table's key makes that harmless
(clickhouse/migrations/0002_aggregates.sql, 0006_quarantine.sql).

No record is retried forever and none is skipped silently (jobs/loader/inserts.py decides which is which):

* A table's rows are inserted in chunks of at most ``MAX_PARTITIONS_PER_INSERT`` partitions
  (months): ClickHouse refuses a block spanning more than ``max_partitions_per_insert_block``.
* An error about the store (connection, timeout, memory, merges behind, a missing table) retries
  the same insert with exponential backoff, reported in the stats (``retries``, ``last_error``).
* An error about the rows (a value the column cannot hold) bisects the insert until the refused
  rows are isolated; each goes to ``quarantine`` with the error and its Kafka record, the rest
  is stored.
* A record whose row function raises goes to ``quarantine`` too (stage ``convert``).

In embedded mode the loader owns the chDB directory for as long as it runs.

Why one module: one loop owns the consumer, the batch, the inserts and the offset commit, and their
order is the loader's correctness (stored before committed); the pure parts are in inserts.py and
kafka_consumer.py.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from clickhouse.client import Storage
from clickhouse.tables import (
    COLUMNS,
    RAW_COLUMNS,
)
from infra.kafka_security import librdkafka_options
from jobs.config import Config
from jobs.loader.heartbeat import HeartbeatSender
from jobs.loader.inserts import InsertError, InsertErrorKind, PartitionKey, chunk_by_partition, classify_insert_error, month_key
from jobs.loader.kafka_consumer import CONSUMER_SETTINGS, ConfluentConsumer, ConsumerError, LoaderConsumer
from jobs.topics import alerts_topic, costs_topic, credit_ledger_topic
from schemas.validate import event_time
from udfs.periods import epoch_millis, from_epoch_millis

log = logging.getLogger("metering.loader")


def _dec(text: Any) -> Decimal | None:
    return None if text is None else Decimal(str(text))


def _ms(value: int) -> datetime:
    return from_epoch_millis(int(value))


def _flink_timestamp(text: str | None) -> datetime:
    """Flink JSON TIMESTAMP_LTZ text ('2026-11-21 13:37:05.897Z') -> aware datetime."""
    if not text:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))


def segment_line_row(record: Any) -> tuple[str, list[Any]]:
    """An aggregate record as the job wrote it: ``[its minute, the JSON line]``, converted by ClickHouse.

    The line goes into ``aggregate_segments_json`` as it is (``JSONEachRow``), whose materialized
    view converts it into ``aggregate_segments`` (clickhouse/migrations/0008_aggregate_segments_json.sql):
    nothing is decoded here but the minute, for the insert's partitions. A quote followed by
    ``minute_ms":`` cannot occur inside a JSON string (its quotes are escaped), so the first match
    is the field.
    """
    value = record.value
    at = value.index(_MINUTE_FIELD) + len(_MINUTE_FIELD)
    end = value.index(b",", at)
    return "aggregate_segments", [_ms(int(value[at:end])), value]


_MINUTE_FIELD = b'"minute_ms":'


def _period_key(d: Mapping[str, Any]) -> list[Any]:
    """The values of :data:`clickhouse.tables.PERIOD_KEY` from a final's or a correction's record."""
    return [d["customer_id"], d["meter"], d["group_key"], d["aggregation"], _ms(d["period_start_ms"]), _ms(d["period_end_ms"])]


def final_row(record: Any) -> tuple[str, list[Any]]:
    d = json.loads(record.value)
    return "period_finals", [
        *_period_key(d),
        _dec(d["value"]),
        int(d["event_count"]),
        _ms(d["finalized_at_watermark_ms"]),
    ]


def correction_row(record: Any) -> tuple[str, list[Any]]:
    d = json.loads(record.value)
    return "corrections", [
        *_period_key(d),
        _ms(d["minute_ms"]),
        -1 if d["retract"] else 1,
        _dec(d["value"]),
        int(d["event_count"]),
        d.get("event_id") or "",
        record.partition,
        record.offset,
    ]


def dead_letter_row(record: Any) -> tuple[str, list[Any]]:
    """A dead letter: the record's bytes (up to the job's cap, ``payload_base64``) and its whole size.

    Dead letters written before the job sent bytes carry ``payload``, the record as text.
    """
    d = json.loads(record.value)
    if d.get("payload_base64") is not None:
        payload = base64.b64decode(d["payload_base64"], validate=True)
    else:
        payload = (d.get("payload") or "").encode("utf-8", "surrogatepass")
    size = d.get("payload_size")
    return "dead_letters", [
        d["reason"],
        d.get("meter") or "",
        d.get("customer_id") or "",
        d.get("event_id") or "",
        payload,
        len(payload) if size is None else int(size),
        int(d["kafka_partition"]),
        int(d["kafka_offset"]),
        _flink_timestamp(d.get("kafka_ts")),
    ]


def duplicate_row(record: Any) -> tuple[str, list[Any]] | None:
    if record.value is None:  # upsert tombstone: nothing to record
        return None
    d = json.loads(record.value)
    return "duplicates", [
        d["customer_id"],
        d["event_id"],
        int(d["seen"]),
        int(d["variants"]),
        _flink_timestamp(d.get("last_seen")),
    ]


def amendment_row(record: Any) -> tuple[str, list[Any]]:
    """An amendment's outcome; who asked, when and why are read from the amendment record it carries.

    The record is one the job judged a valid amendment (schemas/amendments.py), so it decodes.
    """
    d = json.loads(record.value)
    payload = base64.b64decode(d["payload_base64"], validate=True)
    amendment = json.loads(payload)
    return "amendments", [
        d["amendment_id"],
        d["action"],
        d["customer_id"],
        d["event_id"],
        d.get("event_type") or "",
        None if d.get("quantity") is None else _dec(d["quantity"]),
        None if d.get("previous_quantity") is None else _dec(d["previous_quantity"]),
        d["outcome"],
        _ms(epoch_millis(event_time(amendment["requested_at"]))),
        amendment.get("requested_by", ""),
        amendment.get("reason", ""),
        payload,
        int(d["kafka_partition"]),
        int(d["kafka_offset"]),
        _flink_timestamp(d.get("kafka_ts")),
    ]


def alert_row(record: Any) -> tuple[str, list[Any]]:
    """An alert of ``metering alerts run`` (schemas/records.py ``ALERT``)."""
    d = json.loads(record.value)
    return "alerts", [
        d["id"],
        d["kind"],
        d["rule"],
        d["rule_kind"],
        d["customer_id"],
        d["meter"],
        _dec(d["threshold"]),
        _dec(d["value"]),
        _dec(d.get("previous_value")),
        _ms(d["period_start_ms"]),
        _ms(d["period_end_ms"]),
        bool(d["final"]),
        int(d["sequence"]),
        d.get("reason") or "",
        _ms(d["as_of_ms"]),
        int(d["lag_ms"]),
        _ms(d["emitted_ms"]),
    ]


def credit_ledger_row(record: Any) -> tuple[str, list[Any]]:
    """A ledger row of ``metering credits grant|void`` (schemas/records.py ``CREDIT_LEDGER``), as ``credit_ledger`` holds it.

    The topic is the ledger; the table is its copy for queries. A re-delivered record is the same
    row under the table's key (customer, grant id, action), which its ReplacingMergeTree collapses
    and its readers read with FINAL (clickhouse/migrations/0012_credits.sql): loading it twice never
    doubles a grant.
    """
    d = json.loads(record.value)
    expires = d.get("expires_at_ms")
    return "credit_ledger", [
        d["customer_id"],
        d["grant_id"],
        d["action"],
        _dec(d["amount"]),
        d["currency"],
        int(d["priority"]),
        _ms(d["effective_at_ms"]),
        None if expires is None else _ms(expires),
        d["rollover"],
        _ms(d["recorded_at_ms"]),
        d.get("recorded_by") or "",
        d.get("reason") or "",
    ]


def cost_row(record: Any) -> tuple[str, list[Any]]:
    """A cost record of ``metering alerts run`` (schemas/records.py ``COST``)."""
    d = json.loads(record.value)
    return "costs", [
        d["customer_id"],
        d["meter"],
        d["group_key"],
        d["aggregation"],
        _ms(d["period_start_ms"]),
        _ms(d["period_end_ms"]),
        _dec(d["quantity"]),
        d.get("currency"),
        _dec(d.get("cost")),
        _dec(d.get("cost_exact")),
        _dec(d["projected_quantity"]),
        _dec(d.get("projected_cost")),
        bool(d["is_final"]),
        _ms(d["as_of_ms"]),
        _ms(d["emitted_ms"]),
    ]


def raw_line_row(record: Any) -> tuple[str, list[Any]] | None:
    """A ``raw_events`` row as the job wrote it to the raw topic: ``[event time, the JSON line]``.

    The job decoded the event once, by the one definition of a valid event, and wrote its row as
    one JSON line (``udfs/jvm`` EventRules.rawRow, columns :data:`RAW_COLUMNS`); ClickHouse reads
    the lines (``JSONEachRow``), and the loader decodes nothing. The record key is the event time
    in epoch milliseconds: the row's partition for the insert's chunks.
    """
    if not isinstance(record.value, bytes):
        return None
    return "raw_events", [_ms(int(record.key)), record.value]


#: Tables whose rows arrive as the job's JSON lines, inserted as they are (``JSONEachRow``): each
#: row is ``[partition time, line]``. The table each is inserted into, and its columns (None: the
#: line's fields are that table's columns, converted by its materialized view).
JSON_LINE_TABLES: dict[str, tuple[str, list[str] | None]] = {
    "raw_events": ("raw_events", RAW_COLUMNS),
    "aggregate_segments": ("aggregate_segments_json", None),
}


HANDLER_TABLES: dict[Callable[[Any], tuple[str, list[Any]] | None], str] = {
    segment_line_row: "aggregate_segments",
    final_row: "period_finals",
    correction_row: "corrections",
    dead_letter_row: "dead_letters",
    duplicate_row: "duplicates",
    raw_line_row: "raw_events",
    amendment_row: "amendments",
    alert_row: "alerts",
    credit_ledger_row: "credit_ledger",
    cost_row: "costs",
}


#: The column each table is partitioned on by month (``PARTITION BY toYYYYMM(column)`` in
#: clickhouse/migrations; tests/integration/test_loader_history.py compares). Tables not named
#: here have no partition key the loader's batches could spread over (duplicates, quarantine;
#: loader_batches gets one row per batch).
PARTITION_MONTH_COLUMNS = {
    "raw_events": "event_time",
    "aggregate_segments": "minute",
    "period_finals": "period_start",
    "corrections": "period_start",
    "dead_letters": "source_time",
    "alerts": "period_start",
    "costs": "period_start",
}

#: At most this many partitions (months) per INSERT block: ClickHouse's own limit,
#: ``max_partitions_per_insert_block``, is 100 by default. A batch spanning more months is
#: inserted in several chunks. (A loader setting kept here rather than in the configuration file.)
MAX_PARTITIONS_PER_INSERT = 50

#: An insert error ClickHouse does not say is about the store or about the rows is retried this
#: often (with the same backoff), then treated as a refusal of the rows.
MAX_UNKNOWN_ERROR_RETRIES = 5


def partition_keys(table: str, rows: list[list[Any]]) -> list[PartitionKey]:
    """Each row's partition (its month, as ClickHouse's toYYYYMM) in ``table``; all None when unpartitioned."""
    if table in JSON_LINE_TABLES:
        return [month_key(row[0]) for row in rows]
    column = PARTITION_MONTH_COLUMNS.get(table)
    if column is None:
        return [None] * len(rows)
    position = COLUMNS[table].index(column)
    return [month_key(row[position]) if len(row) > position else None for row in rows]


#: Records asked of the consumer per call (the loader inserts a batch at MAX_BATCH_ROWS rows).
MAX_POLL_RECORDS = 50_000

#: Builds the loader's consumer from its topics and librdkafka settings (jobs/loader/kafka_consumer.py).
ConsumerFactory = Callable[[Sequence[str], Mapping[str, Any]], LoaderConsumer]


@dataclass
class LoaderStats:
    """``rows``: stored per table; ``quarantined``: records quarantined per table they were meant for;
    ``retries`` / ``last_error``: inserts retried because of the store (not the rows)."""

    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0
    last_error: str | None = None
    quarantined: Counter[str] = field(default_factory=Counter)
    inserts: int = 0  # INSERT statements ClickHouse accepted (chunks and bisected halves included)


#: How ClickHouse reads :data:`JSON_LINE_TABLES`' lines: every column given, nothing else accepted.
JSON_LINE_SETTINGS = {"input_format_skip_unknown_fields": 0, "input_format_defaults_for_omitted_fields": 0}

#: The loader inserts a batch once it holds this many rows, even before it is caught up.
MAX_BATCH_ROWS = 100_000


@dataclass
class _Batch:
    """Rows converted from polled records, waiting to be inserted (their offsets not yet committed).

    ``records[table][i]`` is the Kafka record ``rows[table][i]`` came from (for quarantine);
    ``quarantine`` holds quarantine rows of records that could not be converted.
    """

    rows: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    records: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    quarantine: list[list[Any]] = field(default_factory=list)
    rows_waiting: int = 0
    started: float = 0.0  # monotonic time of the first row
    newest_ms: int = 0  # newest record timestamp

    def add(self, table: str, row: list[Any], record: Any) -> None:
        self.rows[table].append(row)
        self.records[table].append(record)
        self._count(record)

    def add_refused(self, quarantine_row: list[Any], record: Any) -> None:
        self.quarantine.append(quarantine_row)
        self._count(record)

    def _count(self, record: Any) -> None:
        if not self.rows_waiting:
            self.started = time.monotonic()
        self.rows_waiting += 1
        if isinstance(record.timestamp, int):
            self.newest_ms = max(self.newest_ms, record.timestamp)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _storable(text: str) -> str:
    """``text`` with any lone surrogate written as an escape: every quarantine row must be storable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def quarantine_row(table: str, stage: str, error: InsertError, record: Any, row: list[Any] | None) -> list[Any]:
    """The ``quarantine`` row of a record refused at ``stage`` ('convert' or 'insert'); storable whatever the record holds."""
    try:
        source_time = from_epoch_millis(int(record.timestamp))
        if not 1900 <= source_time.year <= 2299:  # DateTime64's range
            raise ValueError(source_time)
    except (TypeError, ValueError, OverflowError):
        source_time = datetime(1970, 1, 1, tzinfo=UTC)
    columns = COLUMNS.get(table, [])
    # ASCII JSON: a lone surrogate in a value becomes an escape, not an unstorable string
    if row is None:
        row_json = ""
    elif table in JSON_LINE_TABLES:  # the line is the row
        row_json = _storable(row[1].decode("utf-8", "backslashreplace"))
    else:
        row_json = json.dumps(dict(zip(columns, row, strict=False)), default=_json_value)
    return [
        table,
        stage,
        max(-(2**31), min(2**31 - 1, error.code)),
        _storable(error.name),
        _storable(str(error)),
        row_json,
        record.value if isinstance(record.value, bytes) else b"",
        record.key if isinstance(record.key, bytes) else b"",
        str(record.topic),
        max(0, int(record.partition)),
        max(0, int(record.offset)),
        source_time,
    ]


class Loader:
    """Consume, convert, insert, then commit. One instance owns one storage connection."""

    def __init__(
        self,
        config: Config,
        storage: Storage,
        *,
        group_id: str = "metering-loader",
        load_raw: bool = True,
        heartbeat_interval: timedelta | None = None,
        consumer_settings: Mapping[str, Any] | None = None,
        consumer_factory: ConsumerFactory = ConfluentConsumer,
    ) -> None:
        """``heartbeat_interval``: while :meth:`run` loads unbounded, send heartbeats this often (jobs/loader/heartbeat.py).

        ``consumer_settings``: librdkafka properties over ``CONSUMER_SETTINGS``, the configured
        bootstrap servers and ``kafka.security`` (infra/kafka_security.py). ``consumer_factory``: what
        builds the consumer (another client behind the same interface: bench/loader_raw.py).
        """
        topics = config.kafka.topics
        self.handlers: dict[str, Callable[[Any], tuple[str, list[Any]] | None]] = {
            topics.aggregates: segment_line_row,
            topics.finals: final_row,
            topics.corrections: correction_row,
            topics.dead_letters: dead_letter_row,
            topics.duplicates: duplicate_row,
            topics.amendments: amendment_row,
        }
        if load_raw:
            self.handlers[topics.raw] = raw_line_row
        if config.alerts.rules:  # the alerts topic exists once `metering alerts run` ran
            self.handlers[alerts_topic(config)] = alert_row
        # The credit ledger's source of truth: `metering load` creates the topic before it subscribes (jobs/runs.py).
        self.handlers[credit_ledger_topic(config)] = credit_ledger_row
        if config.alerts.costs:  # the costs topic exists once `metering alerts run` ran
            self.handlers[costs_topic(config)] = cost_row
        #: The table each topic's records are meant for (named in quarantine when they are refused).
        self.targets = {topic: HANDLER_TABLES[handler] for topic, handler in self.handlers.items()}
        self.config = config
        self.storage = storage
        self.group_id = group_id
        self.heartbeat_interval = heartbeat_interval
        self.consumer_settings: dict[str, Any] = {
            **CONSUMER_SETTINGS,
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": group_id,
            "client.id": "metering-loader",
            **librdkafka_options(config.kafka.security),
            **(consumer_settings or {}),
        }
        self.consumer_factory = consumer_factory
        self.stats = LoaderStats()
        self.heartbeat: HeartbeatSender | None = None
        # One insert context per table, reused batch after batch: building one asks ClickHouse for
        # the table's column types (a DESCRIBE per table per batch, ~12% of the loader's CPU live).
        self._insert_contexts: dict[str, Any] = {}

    def _consumer(self) -> LoaderConsumer:
        return self.consumer_factory(list(self.handlers), self.consumer_settings)

    def _store(self, table: str, rows: list[list[Any]], records: list[Any], quarantine: list[list[Any]]) -> int:
        """Insert a table's rows of the batch; refused rows become quarantine rows. Returns the rows stored."""
        stored = 0
        for chunk in chunk_by_partition(partition_keys(table, rows), MAX_PARTITIONS_PER_INSERT):
            stored += self._store_isolating(table, [rows[i] for i in chunk], [records[i] for i in chunk], quarantine, set())
        return stored

    def _store_isolating(
        self, table: str, rows: list[list[Any]], records: list[Any], quarantine: list[list[Any]], persistent: set[tuple[int, str]]
    ) -> int:
        """Insert ``rows``; when ClickHouse refuses them, bisect down to the refused rows and quarantine those.

        One refused row among n costs about 2·log2(n) inserts. ``persistent``: signatures of
        unclassified errors that already outlasted their retries in this batch (not retried again).
        """
        error = self._insert_retrying(table, rows, persistent=persistent)
        if error is None:
            return len(rows)
        if len(rows) == 1:
            log.warning("%s: quarantined %s:%s@%s: %s", table, records[0].topic, records[0].partition, records[0].offset, error)
            quarantine.append(quarantine_row(table, "insert", error, records[0], rows[0]))
            return 0
        middle = len(rows) // 2
        return self._store_isolating(table, rows[:middle], records[:middle], quarantine, persistent) + self._store_isolating(
            table, rows[middle:], records[middle:], quarantine, persistent
        )

    def _insert_retrying(
        self,
        table: str,
        rows: list[list[Any]],
        *,
        persistent: set[tuple[int, str]] | None = None,
        max_backoff_s: float = 30.0,
    ) -> InsertError | None:
        """One insert, retried with exponential backoff while the error is about the store.

        Returns None once ClickHouse accepted the rows, or the error that refused them (about the
        rows, or unclassified and still there after MAX_UNKNOWN_ERROR_RETRIES retries).
        """
        delay = 0.5
        unknown_retries = 0
        while True:
            try:
                if table in JSON_LINE_TABLES:
                    into, columns = JSON_LINE_TABLES[table]
                    lines = b"\n".join(row[1] for row in rows)
                    self.storage.client.raw_insert(into, columns, lines, fmt="JSONEachRow", settings=JSON_LINE_SETTINGS)
                else:
                    self.storage.client.insert(data=rows, context=self._insert_context(table))
                self.stats.inserts += 1
                return None
            except Exception as exc:
                self._insert_contexts.clear()  # the next attempt reads the tables' columns afresh
                error = classify_insert_error(exc)
                if error.kind is InsertErrorKind.REFUSED:
                    return error
                if error.kind is InsertErrorKind.UNKNOWN:
                    if persistent is not None and error.signature in persistent:
                        return error
                    if unknown_retries >= MAX_UNKNOWN_ERROR_RETRIES:
                        if persistent is not None:
                            persistent.add(error.signature)
                        return error
                    unknown_retries += 1
                self.stats.retries += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                retry = self.stats.retries
                log.warning("insert into %s failed (%s; retry %d in %.1fs): %s", table, error.kind, retry, delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, max_backoff_s)

    def _insert_context(self, table: str) -> Any:
        if table not in self._insert_contexts:
            self._insert_contexts[table] = self.storage.client.create_insert_context(table, COLUMNS[table])
        return self._insert_contexts[table]

    def run(
        self, *, until_idle: bool = False, idle_s: float = 3.0, on_batch: Callable[[LoaderStats], None] | None = None
    ) -> LoaderStats:
        """Load until interrupted, or (``until_idle``) until every partition is caught up for ``idle_s``.

        Unbounded, it also sends heartbeats every ``heartbeat_interval`` (when set) from a thread.
        """
        consumer = self._consumer()
        idle_since: float | None = None
        if not until_idle and self.heartbeat_interval:
            kafka = self.config.kafka
            self.heartbeat = HeartbeatSender(kafka.bootstrap_servers, kafka.topics.events, security=kafka.security).start(
                self.heartbeat_interval
            )
        max_delay_s = self.config.pipeline.loader_max_batch_delay.total_seconds()
        batch = _Batch()
        try:
            while True:
                timeout_ms = 500
                if batch.rows_waiting:  # wake up in time to insert the oldest waiting row
                    timeout_ms = max(0, min(timeout_ms, int((batch.started + max_delay_s - time.monotonic()) * 1000)))
                polled = self._poll(consumer, timeout_ms)
                for record in polled:
                    self._convert(record, batch)
                if batch.rows_waiting:
                    # Insert once caught up, full, or the oldest row has waited long enough: the
                    # duplicates topic (upserts, not transactional) trickles in continuously, and
                    # an insert per poll made dozens of tiny parts a second for chDB to merge.
                    full = batch.rows_waiting >= MAX_BATCH_ROWS
                    if not polled or full or time.monotonic() - batch.started >= max_delay_s:
                        self._insert_batch(consumer, batch)
                        batch = _Batch()
                        if on_batch is not None:
                            on_batch(self.stats)
                elif polled:
                    # Nothing to write (heartbeats only, on a quiet topic): commit, but record no
                    # batch, so loader_batches and loader_idle_seconds keep describing data.
                    self._commit(consumer)
                    if on_batch is not None:
                        on_batch(self.stats)
                elif until_idle:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since >= idle_s and self._caught_up(consumer):
                        return self.stats
                    continue
                idle_since = None
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            consumer.close()

    def _poll(self, consumer: LoaderConsumer, timeout_ms: int) -> Sequence[Any]:
        """One poll; nothing when the broker cannot be reached (the client reconnects by itself, with backoff)."""
        try:
            return consumer.consume(MAX_POLL_RECORDS, timeout_ms / 1000)
        except ConsumerError as exc:  # the broker down or restarting (the kill soak): wait for it, never exit
            log.warning("poll failed, retrying: %s: %s", type(exc).__name__, exc)
            time.sleep(1.0)
            return []

    def reload_quarantine(self) -> tuple[int, int]:
        """Convert and store the quarantined records again with the current code and tables: (stored, still refused).

        For after a fix (a row function, a migration widening a column). Records of topics this
        configuration does not load are left alone. Stored records leave the quarantine; a record
        refused again stays, with the new error.
        """
        records = [
            SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=timestamp, key=key, value=value)
            for topic, partition, offset, timestamp, key, value in self.storage.query_rows(
                "SELECT source_topic, source_partition, source_offset, toUnixTimestamp64Milli(source_time), "
                "hex(record_key), hex(record) FROM quarantine FINAL ORDER BY source_topic, source_partition, "
                "source_offset"
            )
            if topic in self.handlers
        ]
        for record in records:  # read as hex: a record's bytes need not be UTF-8
            record.key, record.value = bytes.fromhex(record.key) or None, bytes.fromhex(record.value) or None
        batch = _Batch()
        for record in records:
            self._convert(record, batch)
        refused = list(batch.quarantine)
        for table, table_rows in batch.rows.items():
            self._store(table, table_rows, batch.records[table], refused)
        if refused:
            error = self._insert_retrying("quarantine", refused)
            if error is not None:
                raise RuntimeError(f"ClickHouse refused {len(refused)} quarantine row(s): {error}")
        still = {(row[8], row[9], row[10]) for row in refused}  # source_topic, source_partition, source_offset
        stored = [r for r in records if (r.topic, r.partition, r.offset) not in still]
        for r in stored:
            self.storage.command(
                "DELETE FROM quarantine WHERE source_topic = {t:String} AND source_partition = {p:UInt32} "
                "AND source_offset = {o:UInt64}",
                {"t": r.topic, "p": r.partition, "o": r.offset},
            )
        return len(stored), len(still)

    def _convert(self, record: Any, batch: _Batch) -> None:
        """Add the record's row to the batch; a record its row function cannot convert goes to quarantine."""
        try:
            converted = self.handlers[record.topic](record)
        except Exception as exc:  # the record lacks what its topic promises: quarantine it, never stop for it
            table = self.targets[record.topic]
            error = InsertError(InsertErrorKind.REFUSED, 0, type(exc).__name__, str(exc) or repr(exc))
            log.warning("%s: quarantined %s:%s@%s (conversion): %s", table, record.topic, record.partition, record.offset, error)
            batch.add_refused(quarantine_row(table, "convert", error, record, None), record)
            return
        if converted is not None:
            batch.add(converted[0], converted[1], record)

    def _insert_batch(self, consumer: LoaderConsumer, batch: _Batch) -> None:
        """Store the batch (rows in their tables, refused ones in quarantine), then commit the offsets."""
        quarantine = list(batch.quarantine)
        stored: dict[str, int] = {}
        for table, table_rows in batch.rows.items():
            if table_rows:
                stored[table] = self._store(table, table_rows, batch.records[table], quarantine)
        if quarantine:
            error = self._insert_retrying("quarantine", quarantine)
            if error is not None:  # its columns take any record: this is a bug, not data
                raise RuntimeError(f"ClickHouse refused {len(quarantine)} quarantine row(s): {error}")
            stored["quarantine"] = len(quarantine)
        error = self._insert_retrying("loader_batches", [self._batch_row(consumer, stored, batch.newest_ms)])
        if error is not None:  # statistics only: never hold the data back for them
            log.error("loader_batches refused the batch's row: %s", error)
        self.stats.batches += 1
        self._commit(consumer)
        for table, count in stored.items():
            if table != "quarantine":
                self.stats.rows[table] += count
        for row in quarantine:
            self.stats.quarantined[row[0]] += 1  # target_table

    @staticmethod
    def _commit(consumer: LoaderConsumer) -> None:
        # Commits the positions of everything polled so far: only ever with no row left unwritten.
        try:
            consumer.commit()
        except ConsumerError as exc:
            # Rebalanced while inserting, or the broker is down (seen in the kill soak: the loader
            # exited on KafkaConnectionError). Uncommitted offsets only mean re-delivery, which is
            # harmless; the next batch's commit covers these positions too.
            log.warning("offset commit failed, records will be re-delivered: %s: %s", type(exc).__name__, exc)

    def _batch_row(self, consumer: LoaderConsumer, counts: dict[str, int], newest_ms: int) -> list[Any]:
        """The batch's entry in loader_batches: rows stored per table (and quarantined), newest record time, lag."""
        lag = 0
        try:
            lag = consumer.lag()  # the ends as the last fetches saw them: no request
        except ConsumerError as exc:  # a committed offset may be asked (after a rebalance); statistics only
            log.warning("consumer lag unknown for this batch: %s: %s", type(exc).__name__, exc)
        return [self.group_id, datetime.now(UTC), sum(counts.values()), dict(counts), _ms(newest_ms), lag]

    @staticmethod
    def _caught_up(consumer: LoaderConsumer) -> bool:
        try:
            return consumer.caught_up()
        except ConsumerError as exc:  # cannot tell while the broker is away: not caught up
            log.warning("could not read the end offsets: %s: %s", type(exc).__name__, exc)
            return False
