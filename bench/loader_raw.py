"""The loader's raw events: CPU µs per record to convert and insert into chDB, variant against variant.

No broker: live-shaped records (``bench.pipeline.live_shaped_lines``, 10% byte-identical retries)
with a few refused lines and heartbeats mixed in, held in memory as Kafka records, are converted
and inserted into ``raw_events`` of a scratch chDB directory in batches of ``--batch`` records, as
the loader does per batch. CPU is the whole process's (``time.process_time``: Python and chDB's
threads), merges stopped so that one variant's parts are not merged on the next one's clock.
Variants run alternating, the order flipping every round (ABC CBA …), and each variant's stored
rows are compared with the first variant's (a checksum of every column): a faster variant that
stores something else is reported, not counted.

* ``lines``: the loader as it is: the raw lines the job writes (``udfs/jvm`` EventRules.rawRow;
  here the reference's, ``schemas.validate.raw_event_line``, prepared before the clock starts, as
  the job's work) inserted as they are (``JSONEachRow``), nothing decoded in Python.
* ``validate``: the verdict alone (``validate_line`` per record, nothing stored): the floor of any
  variant that keeps the one definition of a valid event in Python.
* ``arrow``: the loader before the raw lines: ``raw_event_row`` (``validate_line``) per record,
  then the batch's columns as Arrow arrays (the payload bytes as they are), one Arrow insert.
* ``ch_parse``: ``validate_line`` for the verdict only; the valid records' bytes and Kafka
  coordinates inserted as Arrow into a Null table whose materialized view has ClickHouse extract
  the columns from the payload (``JSONExtract*``): no row built in Python. It reads some valid
  events differently (lowercase ``t``/``z`` timestamps refused, numbers re-written): the
  agreement check reports it, and its figures are marked as not counted.

``--loader`` measures the loader itself: a Kafka broker of its own (``.metering/bench-loader-raw``,
ports from ``--port-base``), the records' raw lines (what the job writes for them) produced to a
raw topic once, then ``Loader.run`` until idle with a fresh consumer group and database per
measurement, the variants of ``--loader-variants`` alternating: ``kafka-python`` (the loader on
kafka-python's consumer, :class:`KafkaPythonConsumer`, as it was before jobs/loader/kafka_consumer.py)
and ``confluent-kafka`` (the loader as it is).

Usage::

    python -m bench.loader_raw [--events 200000] [--batch 50000] [--rounds 3] [--variants lines arrow …]
    python -m bench.loader_raw --loader [--events 200000] [--rounds 3] [--port-base 59192] [--loader-variants …]
    python -m bench.loader_raw --clients [--events 100000] [--rounds 3]   # consume only: kafka-python / confluent-kafka
    python -m bench.loader_raw --client-semantics   # transactions, positions, end offsets, empty commits
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, median
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobs.demo import MALFORMED  # noqa: E402
from jobs.loader.heartbeat import heartbeat_record  # noqa: E402

TOPIC = "usage-events"

#: ClickHouse extracting raw_events' columns from a valid payload (variant ``ch_parse``). Property
#: values: strings as they are, anything else as written (JSONExtractRaw), null as ''.
CH_PARSE_DDL = [
    "CREATE TABLE IF NOT EXISTS bench_raw_input (payload String, kafka_topic String, kafka_partition UInt32, "
    "kafka_offset UInt64, received_at DateTime64(3, 'UTC')) ENGINE = Null",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS bench_raw_parse TO raw_events AS
    SELECT
        JSONExtractString(payload, 'event_id') AS event_id,
        JSONExtractString(payload, 'customer_id') AS customer_id,
        JSONExtractString(payload, 'event_type') AS event_type,
        parseDateTime64BestEffort(JSONExtractString(payload, 'timestamp'), 3, 'UTC') AS event_time,
        toDecimal128(if(JSONType(payload, 'quantity') = 'String', JSONExtractString(payload, 'quantity'),
                        JSONExtractRaw(payload, 'quantity')), 9) AS quantity,
        mapFromArrays(
            arrayMap(kv -> kv.1, JSONExtractKeysAndValuesRaw(payload, 'properties')),
            arrayMap(kv -> multiIf(kv.2 = 'null', '', startsWith(kv.2, '"'), JSONExtractString(kv.2), kv.2),
                     JSONExtractKeysAndValuesRaw(payload, 'properties'))) AS properties,
        JSONExtractString(payload, 'resource') AS resource,
        JSONExtractString(payload, 'user_id') AS user_id,
        JSONExtractString(payload, 'region') AS region,
        JSONExtractString(payload, 'source') AS source,
        toUInt16(1) AS schema_version,
        'received' AS status,
        kafka_topic, kafka_partition, kafka_offset, received_at, payload
    FROM bench_raw_input""",
]


def records(events: int, seed: int = 11) -> list[Any]:
    """Kafka records of the events topic: live-shaped events, every 50th followed by a refused line or a heartbeat."""
    from bench.pipeline import live_shaped_lines

    end = datetime(2026, 3, 1, tzinfo=UTC)
    lines: list[bytes] = []
    refusals = list(MALFORMED.values())
    for n, line in enumerate(live_shaped_lines(events, 500, 5_000, end, seed)):
        lines.append(line)
        if n % 50 == 49:
            if n % 500 == 499:
                lines.append(heartbeat_record(end))
            else:
                import json

                lines.append(refusals[(n // 50) % len(refusals)](json.loads(line)).encode())
    start_ms = int(end.timestamp() * 1000)
    return [with_raw_line(SimpleNamespace(topic=TOPIC, partition=n % 3, offset=n, timestamp=start_ms + n, key=None, value=line))
            for n, line in enumerate(lines)]  # fmt: skip


def with_raw_line(record: Any) -> Any:
    """``record`` with ``raw_line``: the raw topic's record the job writes for it (None for no valid event)."""
    from schemas.validate import raw_event_line

    written = raw_event_line(
        record.value, topic=record.topic, partition=record.partition, offset=record.offset, received_ms=record.timestamp
    ) if isinstance(record.value, bytes) else None  # fmt: skip
    where = {"topic": "raw", "partition": record.partition, "offset": record.offset, "timestamp": record.timestamp}
    record.raw_line = None if written is None else SimpleNamespace(**where, key=written[0], value=written[1])
    return record


def odd_valid_lines() -> list[bytes]:
    """Valid events at the edges of the spec: offsets and sub-millisecond times, lowercase t/z, extreme
    quantities, numbers as written in properties, escapes and text beyond ASCII."""
    import json

    base = {"event_id": "odd", "customer_id": "c:1@x", "event_type": "t.x-1", "quantity": "0.000000001"}
    events = [
        {**base, "timestamp": "2026-01-31T23:59:59.9999999-01:30"},  # a month later in UTC, sub-ms truncated
        {**base, "timestamp": "1970-01-01T00:00:00Z", "quantity": 0},
        {**base, "timestamp": "2099-12-31T23:59:59.999+00:00", "quantity": "99999999999999999999999999999.999999999"},
        {**base, "timestamp": "2026-03-01 12:00:00z", "properties": {"a": "\u00e9\u4e2d\U0001f600", "b": None, "c": False}},
        {**base, "timestamp": "2026-03-01t12:00:00Z", "event_id": "tab\\there", "resource": "r" * 256, "source": "s"},
    ]
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in events]
    return [
        *lines,
        b'{"event_id":"n","customer_id":"c","event_type":"t","timestamp":"2026-03-01T12:00:00Z","quantity":-0,'
        b'"properties":{"x":1.50,"y":-0.0,"z":123456789012345678901234567890,"\\u0061b":"\\ud83d\\ude00 \\"q\\""}}',
    ]


def corpus_records() -> list[Any]:
    """The spec's example lines (valid and invalid) and :func:`odd_valid_lines` as records: the agreement check."""
    lines = [p.read_bytes().strip() for p in sorted((ROOT / "schemas" / "examples" / "v1").glob("*/*.json"))]
    return [
        with_raw_line(SimpleNamespace(topic=TOPIC, partition=0, offset=n, timestamp=1_772_323_200_000 + n, key=None, value=line))
        for n, line in enumerate(lines + odd_valid_lines())
    ]


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- the variants: each stores one batch of records (or, ``validate``, only judges them)


def store_lines(storage: Any, batch: list[Any]) -> int:
    """The loader as it is: the job's raw lines (here the reference's, ``raw_event_line``) inserted as they are."""
    from jobs.config import Config
    from jobs.loader.loader import Loader, raw_line_row

    lines = [_line_record(r) for r in batch]
    rows = [converted[1] for r in lines if r is not None and (converted := raw_line_row(r)) is not None]
    if rows:
        Loader(Config(), storage)._insert_retrying("raw_events", rows)
    return len(rows)


def _line_record(record: Any) -> Any | None:
    """The raw topic's record the job writes for ``record`` (prepared before the clock starts: the job's work)."""
    return getattr(record, "raw_line", None)


def store_validate(storage: Any, batch: list[Any]) -> int:
    from schemas.validate import validate_line

    return sum(1 for r in batch if validate_line(r.value).event is not None)


def store_arrow(storage: Any, batch: list[Any]) -> int:
    """The loader before the raw lines: the one definition in Python (``raw_event_row``), the batch as one Arrow table."""
    import pyarrow as pa

    from schemas.validate import RAW_EVENT_COLUMNS, raw_event_row

    rows = [
        row
        for r in batch
        if isinstance(r.value, bytes) and (row := raw_event_row(r.value, r.topic, r.partition, r.offset, r.timestamp))
    ]
    if rows:
        text, millis = pa.string(), pa.timestamp("ms", tz="UTC")
        types = {
            "event_time": millis, "quantity": pa.decimal128(38, 9), "properties": pa.map_(text, text),
            "schema_version": pa.uint16(), "kafka_partition": pa.uint32(), "kafka_offset": pa.uint64(),
            "received_at": millis, "payload": pa.binary(),
        }  # fmt: skip
        columns = {name: pa.array([row[name] for row in rows], types.get(name, text)) for name in RAW_EVENT_COLUMNS}
        columns["properties"] = pa.array([list(row["properties"].items()) for row in rows], types["properties"])
        storage.client.insert_arrow("raw_events", pa.table(columns))
    return len(rows)


def store_ch_parse(storage: Any, batch: list[Any]) -> int:
    import pyarrow as pa

    from schemas.validate import validate_line

    valid = [r for r in batch if isinstance(r.value, bytes) and validate_line(r.value).event is not None]
    if not valid:
        return 0
    table = pa.table(
        {
            "payload": pa.array([r.value for r in valid], pa.binary()),
            "kafka_topic": pa.array([r.topic for r in valid], pa.string()),
            "kafka_partition": pa.array([r.partition for r in valid], pa.uint32()),
            "kafka_offset": pa.array([r.offset for r in valid], pa.uint64()),
            "received_at": pa.array([r.timestamp for r in valid], pa.timestamp("ms", tz="UTC")),
        }
    )
    storage.client.insert_arrow("bench_raw_input", table)
    return len(valid)


VARIANTS: dict[str, Callable[[Any, list[Any]], int]] = {
    "lines": store_lines,
    "validate": store_validate,
    "arrow": store_arrow,
    "ch_parse": store_ch_parse,
}

CHECKSUM_SQL = (
    "SELECT count(), groupBitXor(cityHash64(event_id, customer_id, toString(event_type), event_time, quantity, "
    "toString(properties), resource, user_id, toString(region), toString(source), schema_version, toString(status), "
    "toString(kafka_topic), kafka_partition, kafka_offset, received_at, payload)) FROM raw_events"
)


def stored_checksum(storage: Any) -> tuple[int, int]:
    count, digest = storage.query_rows(CHECKSUM_SQL)[0]
    return int(count), int(digest)


def differing_rows(storage: Any, expected: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    got = storage.query_rows("SELECT * FROM raw_events ORDER BY kafka_partition, kafka_offset")
    return [row for row in got if row not in set(expected)][:3]


def run(events: int, batch_size: int, rounds: int, variants: list[str]) -> None:
    from clickhouse.client import StorageSettings, open_storage
    from clickhouse.migrate import migrate

    data = records(events)
    corpus = corpus_records()
    print(f"{len(data):,} records ({events:,} events + retries, refused lines and heartbeats), batches of {batch_size:,}")
    with tempfile.TemporaryDirectory(prefix="bench-loader-raw-") as scratch:
        settings = StorageSettings(path=Path(scratch) / "chdb", database="bench")
        with open_storage(settings) as storage:
            migrate(storage)
            for statement in CH_PARSE_DDL:
                storage.command(statement)
            storage.command("SYSTEM STOP MERGES raw_events")

            # correctness: each variant stores exactly what the first one does, on the corpus and the data
            reference: dict[str, tuple[int, int]] = {}
            reference_rows: list[tuple[Any, ...]] = []
            wrong: set[str] = set()
            for name in variants:
                if name == "validate":
                    continue
                for label, items in (("corpus", corpus), ("data", data[:20_000])):
                    storage.command("TRUNCATE TABLE raw_events")
                    try:
                        for chunk in batches(items, batch_size):
                            VARIANTS[name](storage, chunk)
                    except Exception as exc:  # a variant that refuses valid events is wrong, not a crash
                        wrong.add(name)
                        print(f"  {name}: {label} refused: {str(exc)[:160]}")
                        continue
                    checksum = stored_checksum(storage)
                    if label not in reference:
                        reference[label] = checksum
                        if label == "corpus":
                            reference_rows = storage.query_rows("SELECT * FROM raw_events ORDER BY kafka_partition, kafka_offset")
                    elif checksum != reference[label]:
                        wrong.add(name)
                        extra = differing_rows(storage, reference_rows) if label == "corpus" else []
                        print(f"  {name}: {label} stored {checksum}, {variants[0]} stored {reference[label]}: {extra}")
            print(
                f"agreement with {variants[0]}: "
                + ", ".join(f"{n} {'DIFFERS' if n in wrong else 'same rows'}" for n in variants if n != "validate")
            )

            results: dict[str, list[float]] = {name: [] for name in variants}
            for round_number in range(rounds):
                order = variants if round_number % 2 == 0 else variants[::-1]
                for name in order:
                    storage.command("TRUNCATE TABLE raw_events")
                    stored = 0
                    before, started = time.process_time(), time.monotonic()
                    for chunk in batches(data, batch_size):
                        stored += VARIANTS[name](storage, chunk)
                    cpu, wall = time.process_time() - before, time.monotonic() - started
                    results[name].append(cpu / len(data) * 1e6)
                    print(
                        f"round {round_number + 1} {name:9}: {stored:,} rows, {wall:.2f} s wall, "
                        f"{results[name][-1]:.2f} CPU µs per record",
                        flush=True,
                    )
    print()
    base = median(results[variants[0]])
    for name in variants:
        figures = ", ".join(f"{v:.2f}" for v in results[name])
        note = " (DIFFERS: not counted)" if name in wrong else ""
        print(
            f"{name:9}: CPU µs per record {figures}; median {median(results[name]):.2f}, mean {mean(results[name]):.2f}; "
            f"{variants[0]} / {name} = {base / median(results[name]):.2f}{note}"
        )


LOADER_VARIANTS = ("kafka-python", "confluent-kafka")
CLIENTS = ("kafka-python", "confluent-kafka")

#: The loader's kafka-python consumer settings before jobs/loader/kafka_consumer.py (the ``kafka-python`` variants).
KAFKA_PYTHON_SETTINGS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
    "max_poll_records": 20_000,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
}


class KafkaPythonConsumer:
    """The loader's consumer before librdkafka, behind the loader's interface (jobs/loader/kafka_consumer.py).

    What jobs/loader/loader.py did with kafka-python's ``KafkaConsumer``, call for call: ``poll`` (records
    of every partition in one list), ``commit()`` of the positions, ``highwater`` minus
    ``position`` for the lag, ``end_offsets`` for caught up. Only ``bootstrap.servers`` and
    ``group.id`` of the librdkafka settings are read.
    """

    def __init__(self, topics: Sequence[str], settings: Mapping[str, Any]) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=settings["bootstrap.servers"],
            group_id=settings["group.id"],
            **KAFKA_PYTHON_SETTINGS,
            client_id="metering-loader",
            session_timeout_ms=10_000,
        )

    def consume(self, max_records: int, timeout_s: float) -> list[Any]:
        polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [record for records in polled.values() for record in records]

    def commit(self) -> None:
        self.consumer.commit()

    def lag(self) -> int:
        lag = 0
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None:
                lag += max(0, end - self.consumer.position(tp))
        return lag

    def caught_up(self) -> bool:
        assignment = self.consumer.assignment()
        if not assignment:
            return False
        ends = self.consumer.end_offsets(list(assignment))
        return all(self.consumer.position(tp) >= ends[tp] for tp in assignment)

    def close(self) -> None:
        self.consumer.close()


class TimedConsume:
    """A consumer factory whose consumers add up the calling thread's CPU inside ``consume`` (``cpu_s``).

    The client's own threads (librdkafka's fetchers; kafka-python has none for fetching) are not
    in it; the whole process's CPU is measured beside it.
    """

    def __init__(self, factory: Callable[[Sequence[str], Mapping[str, Any]], Any]) -> None:
        self.factory = factory
        self.cpu_s = 0.0

    def __call__(self, topics: Sequence[str], settings: Mapping[str, Any]) -> Any:
        consumer = self.factory(topics, settings)
        inner = consumer.consume

        def consume(max_records: int, timeout_s: float) -> Any:
            before = time.thread_time()
            try:
                return inner(max_records, timeout_s)
            finally:
                self.cpu_s += time.thread_time() - before

        consumer.consume = consume
        return consumer


def consume_all(client: str, bootstrap: str, topic: str, expected: int) -> int:
    """Read ``expected`` records of ``topic`` from the start with a new group, as the loader's consumer
    is configured (read_committed, no auto-commit, large fetches), touching each record's fields once;
    commit at the end. Returns the records read."""
    import uuid

    group = f"bench-consume-{uuid.uuid4().hex[:8]}"
    seen = 0
    if client == "kafka-python":
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, **KAFKA_PYTHON_SETTINGS)
        while seen < expected:
            for partition_records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                for r in partition_records:
                    _ = (r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                    seen += 1
        consumer.commit()
        consumer.close()
        return seen
    from confluent_kafka import Consumer

    from jobs.loader.kafka_consumer import CONSUMER_SETTINGS

    consumer = Consumer({**CONSUMER_SETTINGS, "bootstrap.servers": bootstrap, "group.id": group})
    consumer.subscribe([topic])
    while seen < expected:
        for m in consumer.consume(num_messages=10_000, timeout=0.5):
            if m.error():
                continue
            _ = (m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value())
            seen += 1
    consumer.commit(asynchronous=False)
    consumer.close()
    return seen


def loader_run(
    events: int, rounds: int, port_base: int, *, clients: bool = False, variants: Sequence[str] = LOADER_VARIANTS[:2]
) -> None:
    """The whole loader (consume, convert, insert, commit) on a broker of its own, ``variants`` alternating.

    The records go to an events topic once; each measurement is a fresh consumer group and chDB
    database loading that topic until idle. ``kafka-python``: the loader on
    :class:`KafkaPythonConsumer`; ``confluent-kafka``: the loader as it is. ``clients``: instead,
    only consume the events topic, kafka-python against confluent-kafka (:func:`consume_all`).
    """
    import os
    import uuid
    from datetime import timedelta

    from clickhouse.client import StorageSettings, open_storage
    from clickhouse.migrate import migrate
    from infra.kafka import KafkaBroker
    from jobs.config import Config, KafkaSettings, PipelineSettings, Topics, load_stack
    from jobs.loader.kafka_consumer import ConfluentConsumer
    from jobs.loader.loader import Loader
    from jobs.produce import make_producer
    from jobs.topics import ensure_topics

    env = dict(os.environ)
    env["METERING__STACK__HOME"] = str(ROOT / ".metering" / "bench-loader-raw")
    stack = load_stack(env).with_ports(port_base)
    broker = KafkaBroker(stack)
    stack.home.mkdir(parents=True, exist_ok=True)
    broker.start()
    try:
        prefix = f"bench-raw-{uuid.uuid4().hex[:8]}"
        names = ("events", "raw", "aggregates", "finals", "corrections", "dead-letters")
        topics = Topics(*(f"{prefix}-{name}" for name in names))
        data = records(events)
        with tempfile.TemporaryDirectory(prefix="bench-loader-raw-") as scratch:
            base = Config(
                kafka=KafkaSettings(bootstrap_servers=stack.bootstrap_servers, topics=topics),
                storage=StorageSettings(path=Path(scratch) / "chdb"),
                pipeline=PipelineSettings(loader_max_batch_delay=timedelta(seconds=1)),
            )
            ensure_topics(base, partitions=3)
            producer = make_producer(stack.bootstrap_servers)
            for r in data:
                producer.send(topics.events, value=r.value, partition=r.partition)
                if r.raw_line is not None:
                    producer.send(topics.raw, key=r.raw_line.key, value=r.raw_line.value, partition=r.partition)
            producer.flush()
            producer.close()
            print(
                f"{len(data):,} records in {topics.events} (3 partitions); the loader until idle, fresh group and database each"
            )
            if clients:
                results: dict[str, list[float]] = {name: [] for name in CLIENTS}
                for round_number in range(rounds):
                    for name in CLIENTS if round_number % 2 == 0 else CLIENTS[::-1]:
                        before, started = time.process_time(), time.monotonic()
                        seen = consume_all(name, stack.bootstrap_servers, topics.events, len(data))
                        cpu, wall = time.process_time() - before, time.monotonic() - started
                        results[name].append(cpu / seen * 1e6)
                        print(
                            f"round {round_number + 1} {name:15}: {seen:,} records, {wall:.1f} s wall, "
                            f"{results[name][-1]:.2f} CPU µs per record",
                            flush=True,
                        )
                for name in CLIENTS:
                    figures = ", ".join(f"{v:.2f}" for v in results[name])
                    print(f"{name:15}: CPU µs per record {figures}; median {median(results[name]):.2f}")
                return
            results = {name: [] for name in variants}
            consuming: dict[str, list[float]] = {name: [] for name in variants}
            for round_number in range(rounds):
                order = list(variants) if round_number % 2 == 0 else list(variants)[::-1]
                for name in order:
                    storage_settings = StorageSettings(path=Path(scratch) / "chdb", database=f"b_{uuid.uuid4().hex[:8]}")
                    config = Config(kafka=base.kafka, storage=storage_settings, pipeline=base.pipeline)
                    factory = KafkaPythonConsumer if name == "kafka-python" else ConfluentConsumer
                    timed = TimedConsume(factory)
                    with open_storage(storage_settings) as storage:
                        migrate(storage)
                        loader = Loader(config, storage, group_id=f"{prefix}-{uuid.uuid4().hex[:8]}", consumer_factory=timed)
                        before, started = time.process_time(), time.monotonic()
                        stats = loader.run(until_idle=True, idle_s=1.0)
                        cpu, wall = time.process_time() - before, time.monotonic() - started
                        stored = stored_checksum(storage)
                        storage.drop_database()
                    results[name].append(cpu / len(data) * 1e6)
                    consuming[name].append(timed.cpu_s / len(data) * 1e6)
                    print(
                        f"round {round_number + 1} {name:15}: {stats.rows['raw_events']:,} raw rows in {stats.batches} "
                        f"batches, {wall:.1f} s wall, {results[name][-1]:.2f} CPU µs per record "
                        f"({consuming[name][-1]:.2f} in consume); stored {stored}",
                        flush=True,
                    )
    finally:
        broker.stop()
    if clients:
        return
    print()
    for name in variants:
        figures = ", ".join(f"{v:.2f}" for v in results[name])
        in_consume = ", ".join(f"{v:.2f}" for v in consuming[name])
        print(
            f"loader {name:15}: CPU µs per record {figures}; median {median(results[name]):.2f}; "
            f"of which the loader's thread in consume() {in_consume}; median {median(consuming[name]):.2f}"
        )


def client_semantics(port_base: int) -> None:
    """What the loader relies on, asked of both clients on a broker of its own: transactions committed,
    aborted and left open in one partition, read with read_committed; position against the end
    offsets; a commit with nothing new."""
    import os
    import uuid

    from confluent_kafka import Consumer, KafkaException
    from confluent_kafka import TopicPartition as ConfluentPartition
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from infra.kafka import KafkaBroker
    from jobs.config import load_stack
    from jobs.topics import ensure_topic

    env = dict(os.environ)
    env["METERING__STACK__HOME"] = str(ROOT / ".metering" / "bench-loader-raw")
    stack = load_stack(env).with_ports(port_base)
    stack.home.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(stack)
    broker.start()
    servers = stack.bootstrap_servers
    try:
        topic = f"bench-semantics-{uuid.uuid4().hex[:6]}"
        ensure_topic(servers, topic, partitions=1)
        producer = KafkaProducer(bootstrap_servers=servers, transactional_id=f"bench-{uuid.uuid4().hex[:6]}")
        producer.init_transactions()
        for prefix, count, commit in (("a", 5, True), ("b", 3, False), ("c", 2, True)):
            producer.begin_transaction()
            for n in range(count):
                producer.send(topic, f"{prefix}{n}".encode())
            (producer.commit_transaction if commit else producer.abort_transaction)()

        def probe(label: str) -> None:
            confluent = Consumer(
                {
                    "bootstrap.servers": servers,
                    "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                }
            )
            confluent.subscribe([topic])
            values, until = 0, time.monotonic() + 6
            while time.monotonic() < until:
                values += sum(1 for m in confluent.consume(100, 0.5) if not m.error())
            partition = ConfluentPartition(topic, 0)
            position = confluent.position([partition])[0].offset
            queried, cached = (
                confluent.get_watermark_offsets(partition, timeout=5),
                confluent.get_watermark_offsets(partition, cached=True),
            )
            confluent.commit(asynchronous=False)
            try:
                confluent.commit(asynchronous=False)
                again = "ok"
            except KafkaException as exc:
                again = f"raises {exc.args[0].name()}"
            confluent.close()
            print(
                f"{label} confluent-kafka: {values} values, position {position}, end (queried) {queried[1]}, "
                f"end (cached) {cached[1]}; a commit with nothing new {again}"
            )
            consumer = KafkaConsumer(
                bootstrap_servers=servers,
                group_id=f"bench-{uuid.uuid4().hex[:6]}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            )
            consumer.subscribe([topic])
            values, until = 0, time.monotonic() + 6
            while time.monotonic() < until:
                values += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
            tp = TopicPartition(topic, 0)
            print(
                f"{label} kafka-python:    {values} values, position {consumer.position(tp)}, end_offsets "
                f"{consumer.end_offsets([tp])[tp]}, highwater {consumer.highwater(tp)}"
            )
            consumer.close()

        probe("transactions closed:")
        producer.begin_transaction()
        producer.send(topic, b"open")
        producer.flush()
        probe("one left open:      ")
        producer.abort_transaction()
        producer.close()
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000, help="records per insert (the loader inserts up to 100k rows)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--loader", action="store_true", help="the whole loader on a broker of its own (started and stopped)")
    parser.add_argument(
        "--clients", action="store_true", help="like --loader, but only consume: kafka-python against confluent-kafka"
    )
    parser.add_argument("--client-semantics", action="store_true", help="what the loader relies on, asked of both clients")
    parser.add_argument("--port-base", type=int, default=59192, help="--loader: the broker's ports from here")
    parser.add_argument(
        "--loader-variants",
        nargs="+",
        choices=LOADER_VARIANTS,
        default=list(LOADER_VARIANTS[:2]),
        help="--loader: the loader on kafka-python's consumer, on confluent-kafka's (as it is), or as it is with row inserts",
    )
    args = parser.parse_args()
    if args.client_semantics:
        client_semantics(args.port_base)
    elif args.loader or args.clients:
        loader_run(args.events, args.rounds, args.port_base, clients=args.clients, variants=args.loader_variants)
    else:
        run(args.events, args.batch, args.rounds, args.variants)


if __name__ == "__main__":
    main()
