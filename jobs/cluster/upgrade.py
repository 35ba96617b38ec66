"""Replacing a running job by one whose state it cannot restore: rebuild that state from the events topic.

A project upgrade that changes how an operator keeps its state (the finalization moving into the
JVM, for one) cannot resume from the old job's savepoint. The new job instead reads the events
topic again from early enough that its dedup state, open windows and ledgers end up holding what
the old job's held (:func:`rebuild_plan`):

- every event of every billing period still open, i.e. whose ``end + grace`` is ahead of the old
  job's finality (the newest ``finalized_at_watermark_ms`` among its finals): the replay starts at
  the oldest such period's earliest possible start, minus the allowed future skew and the
  out-of-orderness;
- every event within the dedup retention before the old job's position.

Records below the old job's committed offsets are *replayed*: they rebuild state, and their
outputs that count once (dead letters, duplicates, corrections) are dropped, because the old
job wrote them (``metering_replayed``, jobs/flink/sql.py). Aggregate segments are rewritten with the
same keys and versions (idempotent in ClickHouse). Periods at or behind the old finality stay
final: anything for them is a correction, never a second final.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jobs.config import Config
from jobs.flink.metering_job import Rebuild
from jobs.topics import committed_values
from udfs.periods import PeriodKind

#: The longest a billing period of each kind can last (a DST change adds an hour).
LONGEST_PERIOD = {
    PeriodKind.MONTH: timedelta(days=31, hours=1),
    PeriodKind.WEEK: timedelta(days=7, hours=1),
    PeriodKind.DAY: timedelta(hours=25),
}


class RebuildError(Exception):
    """The topic cannot rebuild the state (its retention dropped records the rebuild needs)."""


@dataclass(frozen=True)
class RebuildPlan:
    """A :class:`jobs.flink.metering_job.Rebuild` and how it was derived (printed by ``metering job submit --rebuild``)."""

    rebuild: Rebuild
    replay_from_ms: int | None  # Kafka timestamp the replay starts at (None: the topic's beginning)

    def describe(self) -> dict[str, Any]:
        return {
            "finalized_through_ms": self.rebuild.finalized_through_ms,
            "replay_from_ms": self.replay_from_ms,
            "start_offsets": {str(p): o for p, o in sorted(self.rebuild.start_offsets.items())},
            "replayed_until": {str(p): o for p, o in sorted(self.rebuild.replayed_until.items())},
        }


def open_period_reach(config: Config) -> timedelta:
    """How far before the old finality the oldest open period's events can have been received."""
    policies = [config.billing.default, *config.billing.customers.values(), *config.billing.plans.values()]
    longest = max(LONGEST_PERIOD[p.cycle.kind] + p.grace for p in policies)
    return longest + config.pipeline.allowed_future_skew + config.pipeline.max_out_of_orderness


def finalized_through(config: Config, timeout_s: float = 60) -> int | None:
    """The newest ``finalized_at_watermark_ms`` in the finals topic (read_committed), or None without finals."""
    try:
        values = committed_values(
            config.kafka.bootstrap_servers, config.kafka.topics.finals, timeout_s, security=config.kafka.security
        )
    except TimeoutError as exc:
        raise RebuildError(str(exc)) from exc
    newest: int | None = None
    for value in values:
        try:
            at = int(json.loads(value)["finalized_at_watermark_ms"])
        except (ValueError, KeyError, TypeError):
            continue  # not a final of this job
        newest = at if newest is None else max(newest, at)
    return newest


def rebuild_plan(config: Config, timeout_s: float = 60) -> RebuildPlan:
    """Where a job replacing this deployment's job must start reading, and what it replays."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    from infra.kafka_security import kafka_python_options

    topic = config.kafka.topics.events
    through = finalized_through(config, timeout_s)
    consumer = KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=config.kafka.consumer_group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **kafka_python_options(config.kafka.security),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        beginning = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        committed: dict[int, int] = {}
        for tp in partitions:
            offset = consumer.committed(tp)
            if offset is not None:
                committed[tp.partition] = int(offset)
        reach_ms = open_period_reach(config) // timedelta(milliseconds=1)
        retention_ms = config.pipeline.dedup_retention // timedelta(milliseconds=1)
        replay_from = None if through is None else through - reach_ms
        start: dict[int, int] = {}
        for tp in partitions:
            position = committed.get(tp.partition)
            if position is None or position <= beginning[tp] or replay_from is None:
                # Nothing processed here, or no period final yet (every one may be open): from the beginning.
                start[tp.partition] = beginning[tp]
                if position is not None and position > beginning[tp] and beginning[tp] > 0:
                    raise RebuildError(_truncated(topic, tp.partition, "the first billing period with events"))
                continue
            last = _timestamp_at(consumer, tp, position - 1, end[tp])
            from_ms = min(replay_from, (last if last is not None else int(time.time() * 1000)) - retention_ms)
            found = consumer.offsets_for_times({tp: max(from_ms, 0)}).get(tp)
            start[tp.partition] = min(found.offset if found is not None else end[tp], position)
            if start[tp.partition] == beginning[tp] and beginning[tp] > 0:
                first = _timestamp_at(consumer, tp, beginning[tp], end[tp])
                if first is not None and first > from_ms:
                    raise RebuildError(_truncated(topic, tp.partition, f"Kafka time {from_ms} ms (its first record: {first} ms)"))
        return RebuildPlan(Rebuild(start, committed, through), replay_from)
    finally:
        consumer.close()


def _truncated(topic: str, partition: int, needed: str) -> str:
    return (
        f"{topic} partition {partition} no longer holds the records a rebuild needs (from {needed}): the topic's "
        "retention is shorter than the oldest open billing period plus its grace, or than pipeline.dedup_retention"
    )


def _timestamp_at(consumer: Any, tp: Any, offset: int, end: int) -> int | None:
    """The Kafka timestamp of the first record at or after ``offset`` (None past the end: transaction markers)."""
    import time

    consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and consumer.position(tp) < end:
        for records in consumer.poll(timeout_ms=500, max_records=1).values():
            return int(records[0].timestamp)
    return None
