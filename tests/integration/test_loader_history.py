"""The loader on the real broker and chDB with years of history and records ClickHouse refuses (issue #25).

* A backfill spanning years loads in one `until_idle` run, exactly, without a retry: raw_events is
  partitioned by month and the loader inserts at most MAX_PARTITIONS_PER_INSERT months at once.
* A record refused for what it is (a quantity beyond Decimal(38, 9), a negative UInt, a segment
  without its meter) goes to quarantine with the error and its bytes; the rest is stored, the
  offsets are committed, the run finishes; after a fix, a quarantined record loads again.
* A refusal of the block as a whole (ClickHouse's partitions-per-block limit set below the
  loader's) is bisected until the blocks pass; a store error (too many parts while merges are
  stopped) is retried, not quarantined.

Each run has a deadline: a loader that retries forever fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import random
import signal
import time
import types
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import jobs.loader.loader
from clickhouse.client import Storage, StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.tables import COLUMNS
from jobs.config import Config, KafkaSettings, PipelineSettings, Topics
from jobs.loader.inserts import REFUSED_CODES, RETRY_CODES
from jobs.loader.loader import PARTITION_MONTH_COLUMNS, Loader, LoaderStats, segment_line_row
from jobs.produce import make_producer
from jobs.topics import ensure_topics
from schemas.validate import raw_event_line

CUSTOMERS = ("acme", "globex", "initech", "umbrella")
DEADLINE_S = 240


def _config(bootstrap: str, storage: StorageSettings) -> Config:
    prefix = f"history-{uuid.uuid4().hex[:8]}"
    topics = Topics(*(f"{prefix}-{name}" for name in ("events", "raw", "aggregates", "finals", "corrections", "dead-letters")))
    config = Config(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=topics),
        storage=storage,
        pipeline=PipelineSettings(loader_max_batch_delay=timedelta(seconds=1)),
    )
    ensure_topics(config, partitions=2)
    return config


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail the test (pytest's Failed is a BaseException: the loader's `except Exception` lets it through)."""

    def expire(signum: int, frame: Any) -> None:
        pytest.fail(f"the loader did not finish within {seconds}s (retrying forever?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _load(config: Config, storage: Storage, group: str = "loader") -> LoaderStats:
    with deadline(DEADLINE_S):
        return Loader(config, storage, group_id=group).run(until_idle=True, idle_s=1.5)


def _event(n: int, customer: str, when: datetime, quantity: str) -> dict[str, Any]:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return {"event_id": f"e-{n}", "customer_id": customer, "event_type": "api_call", "timestamp": stamp, "quantity": quantity}


def _produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(bootstrap)
    try:
        for key, value in values:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def _raw(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """The raw topic's records the job would write for ``events`` (none for an invalid one)."""
    return [record for n, e in enumerate(events) if (record := raw_event_line(json.dumps(e).encode(), offset=n)) is not None]


def _history(count: int, days: int, start: datetime, seed: int) -> tuple[list[dict[str, Any]], dict[int, tuple[int, Decimal]]]:
    """``count`` events spread over ``days`` from ``start``, shuffled (a backfill is not in time order)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    expected: defaultdict[int, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for n in range(count):
        when = start + timedelta(seconds=rng.randrange(days * 86_400), milliseconds=rng.randrange(1000))
        quantity = Decimal(rng.randrange(1, 10**7)) / 1000
        events.append(_event(n, rng.choice(CUSTOMERS), when, str(quantity)))
        month = when.year * 100 + when.month
        seen, total = expected[month]
        expected[month] = (seen + 1, total + quantity)
    return events, dict(expected)


def _per_month(storage: Storage) -> dict[int, tuple[int, Decimal]]:
    rows = storage.query_rows(
        "SELECT toYYYYMM(event_time) AS month, count(), toString(sum(quantity)) FROM raw_events FINAL GROUP BY month"
    )
    return {int(month): (int(n), Decimal(total)) for month, n, total in rows}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("count", "days", "start"),
    [
        (5_000, 1_100, datetime(2023, 1, 1, tzinfo=UTC)),  # 3 years: 37 months, one insert
        (1_500, 3_700, datetime(2016, 1, 1, tzinfo=UTC)),  # 10 years: 122 months, more than one INSERT block may hold
    ],
)
def test_a_backfill_of_years_loads_in_one_run_exactly_without_retries(
    bootstrap: str, storage_settings: StorageSettings, count: int, days: int, start: datetime
) -> None:
    config = _config(bootstrap, storage_settings)
    events, expected = _history(count, days, start, seed=days)
    _produce(bootstrap, config.kafka.topics.raw, _raw(events))
    with open_storage(config.storage) as storage:
        migrate(storage)
        stats = _load(config, storage)
        loaded = _per_month(storage)
        (partitions,) = storage.query_rows(
            "SELECT uniqExact(partition) FROM system.parts WHERE database = currentDatabase() AND table = 'raw_events' AND active"
        )[0]
    assert loaded == expected  # count and exact sum of quantity per month
    assert (stats.rows["raw_events"], stats.retries, sum(stats.quarantined.values())) == (count, 0, 0)
    assert partitions == len(expected)  # one partition per month


@pytest.mark.integration
def test_records_refused_for_what_they_are_are_quarantined_and_the_rest_loads(
    bootstrap: str, storage_settings: StorageSettings
) -> None:
    config = _config(bootstrap, storage_settings)
    topics = config.kafka.topics
    start = datetime(2026, 1, 5, tzinfo=UTC)
    good = [_event(n, CUSTOMERS[n % 4], start + timedelta(hours=n), f"{n}.5") for n in range(300)]
    # Beyond Decimal(38, 9) (and written with an exponent): the job dead-letters it (bad_quantity), so
    # the loader skips it by the same definition instead of trying and quarantining it.
    too_big = _event(999, "acme", start, "1e30")
    events = [*good[:150], too_big, *good[150:]]
    # A raw line ClickHouse cannot read (the job never writes one: the loader must still go on).
    broken_line = raw_event_line(json.dumps(good[0]).encode(), offset=10_000)[1].replace(b'"event_time": "', b'"event_time": "x')  # type: ignore[index]
    _produce(bootstrap, topics.raw, [*_raw(events), (b"1767225600000", broken_line)])

    def segment(minute: datetime, **changes: Any) -> bytes:
        ms = int(minute.timestamp() * 1000)
        base = {"customer_id": "acme", "meter": "api_calls", "group_key": "", "aggregation": "sum", "minute_ms": ms}
        base |= {"day_start_ms": ms, "period_start_ms": ms, "period_end_ms": ms + 86_400_000, "segment": "on-time"}
        base |= {"version": 1, "value": "2", "event_count": 2, "sum": "2", "max": None, "min": None}
        base |= {"distinct_values": [], "latest_ms": None, "latest_value": None}
        return json.dumps(base | changes).encode()

    no_meter = json.loads(segment(start + timedelta(minutes=3)))
    del no_meter["meter"]
    segments = [
        segment(start),
        segment(start + timedelta(minutes=1), version=-1),  # UInt64 cannot hold it
        json.dumps(no_meter).encode(),  # a field missing: ClickHouse refuses it (NULL into a String column)
        segment(start + timedelta(minutes=2)),
    ]
    _produce(bootstrap, topics.aggregates, [(b"acme", value) for value in segments])

    with open_storage(config.storage) as storage:
        migrate(storage)
        stats = _load(config, storage)
        raw = storage.query_rows("SELECT event_id, toString(quantity) FROM raw_events FINAL ORDER BY event_id")
        minutes = storage.query_rows("SELECT minute FROM aggregate_segments FINAL ORDER BY minute")
        quarantined = storage.query_rows(
            "SELECT target_table, stage, error_code, error_name, error, row, record, source_topic, source_offset "
            "FROM quarantine FINAL ORDER BY target_table, stage"
        )
        (health,) = storage.query_rows("SELECT quarantined FROM pipeline_health")[0]
        again = _load(config, storage)  # same group: the committed offsets leave nothing to re-read
        # A "fix" of the segment row function (a default meter) lets its record load; the others stay.
        fixed = Loader(config, storage)
        fixed.handlers[topics.aggregates] = lambda record: segment_line_row(
            types.SimpleNamespace(value=json.dumps({"meter": "api_calls", **json.loads(record.value)}).encode())
        )
        reloaded = fixed.reload_quarantine()
        after_fix = storage.query_rows("SELECT target_table, stage FROM quarantine FINAL ORDER BY target_table")
        minutes_after_fix = storage.query_rows("SELECT count() FROM aggregate_segments FINAL")[0][0]

    assert sorted(raw) == sorted((e["event_id"], str(Decimal(e["quantity"]))) for e in good)
    assert [m.replace(tzinfo=UTC) for (m,) in minutes] == [start, start + timedelta(minutes=2)]
    assert sorted((q[0], q[1], q[3], q[7]) for q in quarantined) == [
        ("aggregate_segments", "insert", "CANNOT_CONVERT_TYPE", topics.aggregates),
        ("aggregate_segments", "insert", "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN", topics.aggregates),
        ("raw_events", "insert", "CANNOT_PARSE_DATETIME", topics.raw),
    ]
    negative, missing, broken = sorted(quarantined, key=lambda q: (q[0], q[3]))
    assert missing[2] == 349 and "meter" in missing[4] and missing[5] == missing[6] == json.dumps(no_meter)
    assert "UInt64" in negative[4] and json.loads(negative[5])["version"] == -1 and negative[6] == segments[1].decode()
    assert broken[2] == 41 and broken[5] == broken_line.decode() and broken[6] == broken_line.decode()
    assert dict(stats.quarantined) == {"aggregate_segments": 2, "raw_events": 1} and health == 3
    assert (stats.rows["raw_events"], stats.rows["aggregate_segments"], stats.retries) == (300, 2, 0)
    assert again.batches == 0 and not again.rows and not again.quarantined
    assert reloaded == (1, 2) and after_fix == [("aggregate_segments", "insert"), ("raw_events", "insert")]
    assert minutes_after_fix == 3


@pytest.mark.integration
def test_a_block_refused_as_a_whole_is_split_until_it_passes(bootstrap: str, storage_settings: StorageSettings) -> None:
    """A server whose max_partitions_per_insert_block (here 3) is below the loader's chunk still gets every row."""
    config = _config(bootstrap, storage_settings)
    events, expected = _history(240, 365, datetime(2025, 1, 1, tzinfo=UTC), seed=7)
    _produce(bootstrap, config.kafka.topics.raw, _raw(events))
    with open_storage(config.storage) as storage:
        migrate(storage)
        storage.client.set_client_setting("max_partitions_per_insert_block", "3")
        with pytest.raises(Exception, match="Too many partitions for single INSERT block"):  # the limit holds
            storage.command(
                "INSERT INTO raw_events (event_id, customer_id, event_type, event_time, quantity, properties, kafka_topic, "
                "kafka_partition, kafka_offset, received_at, payload) SELECT 'p', 'c', 'a', "
                "toDateTime64('2020-01-01', 3, 'UTC') + toIntervalMonth(number), 1, map(), 't', 0, number, now64(3), '' "
                "FROM numbers(4)"
            )
        stats = _load(config, storage)
        loaded = _per_month(storage)
    assert loaded == expected and len(expected) == 12
    assert (stats.rows["raw_events"], stats.retries, sum(stats.quarantined.values())) == (240, 0, 0)
    assert stats.inserts >= 12 // 3 + 1  # raw_events in several blocks, and loader_batches


@pytest.mark.integration
def test_too_many_parts_while_merges_are_behind_is_retried_not_quarantined(
    bootstrap: str, storage_settings: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(bootstrap, storage_settings)
    events, expected = _history(50, 20, datetime(2026, 2, 1, tzinfo=UTC), seed=3)
    _produce(bootstrap, config.kafka.topics.raw, _raw(events))
    with open_storage(config.storage) as storage:
        migrate(storage)
        # One part already in February, merges stopped, and a table that throws at one part per partition.
        storage.command("SYSTEM STOP MERGES raw_events")
        storage.command("ALTER TABLE raw_events MODIFY SETTING parts_to_delay_insert = 1, parts_to_throw_insert = 1")
        storage.command(
            "INSERT INTO raw_events (event_id, customer_id, event_type, event_time, quantity, properties, kafka_topic, "
            "kafka_partition, kafka_offset, received_at, payload) VALUES "
            "('before', 'acme', 'api_call', '2026-02-01 00:00:00', 0, map(), 'elsewhere', 0, 0, now64(3), '')"
        )
        sleeps: list[float] = []

        def merges_catch_up(seconds: float) -> None:  # the loader's backoff: by then the merges have caught up
            sleeps.append(seconds)
            storage.command("ALTER TABLE raw_events MODIFY SETTING parts_to_throw_insert = 3000, parts_to_delay_insert = 1000")
            storage.command("SYSTEM START MERGES raw_events")

        monkeypatch.setattr(jobs.loader.loader, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=merges_catch_up))
        stats = _load(config, storage)
        loaded = _per_month(storage)
    expected[202602] = (expected[202602][0] + 1, expected[202602][1])  # the row inserted beforehand
    assert loaded == expected
    assert stats.retries == len(sleeps) == 1 and stats.last_error is not None and "Too many parts" in stats.last_error
    assert stats.rows["raw_events"] == 50 and not stats.quarantined


@pytest.mark.integration
def test_the_loaders_partition_columns_and_error_codes_agree_with_clickhouse(storage_settings: StorageSettings) -> None:
    with open_storage(storage_settings) as storage:
        migrate(storage)
        keys = dict(storage.query_rows("SELECT name, partition_key FROM system.tables WHERE database = currentDatabase()"))
        for table in COLUMNS:
            column = PARTITION_MONTH_COLUMNS.get(table)
            if table == "loader_batches":
                assert keys[table] == "toYYYYMMDD(batch_at)"  # one row per batch: never more than one partition
            else:
                assert keys[table] == (f"toYYYYMM({column})" if column else ""), table
        for code, name in {**REFUSED_CODES, **RETRY_CODES}.items():
            assert storage.query_rows("SELECT errorCodeToName({c:UInt32})", {"c": code})[0][0] == name
