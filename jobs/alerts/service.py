"""``metering alerts run``: the job's aggregates, finals and corrections and the credit ledger in, alerts out, exactly once.

Each batch of records read (``read_committed``: only what the job's checkpoints committed) is one
Kafka transaction of a transactional producer (confluent-kafka): the alerts it caused (the alerts
topic), the cost records of the groups it changed (the costs topic, with ``alerts.costs``), the
period states they changed (the compacted state topic, keyed by period) and the consumer's offsets
(``send_offsets_to_transaction``) commit together or not at all. So a kill -9 anywhere loses no
alert and sends none twice: an open transaction is aborted when the next instance calls
``init_transactions`` with the same ``transactional.id`` (which also fences a zombie), and that
instance restores the state as committed, then reads on from the committed offsets, which are
exactly the records the state has seen.

Start: ``init_transactions`` first (aborts what a killed predecessor left open), then the state topic
is read to its end, then the input is consumed. One instance per events topic: the
``transactional.id`` is ``metering-alerts-<events topic>``, so a second one fences the first.

An abortable transaction error (a broker restart, a timeout) aborts the batch; the state is then
restored again from the state topic and the consumer rewinds to its committed offsets. A fatal one
(fenced) stops the service with exit 1. Webhooks are delivered by jobs/alerts/webhooks.py's
:class:`~jobs.alerts.webhooks.Deliverer` on its own thread and consumer: delivery never holds up
evaluation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs import topics
from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, LEDGER, Evaluator
from jobs.alerts.kafka import (  # re-exported: the service's callers import them from here
    GROUP,
    LedgerUnavailable,
    _base,
    _producer_base,
    ensure_ledger_topic,
    publish_ledger,
    read_alerts,
    read_costs,
    read_ledger,
    read_state,
    read_to_end,
)
from jobs.alerts.webhooks import DEAD_PREFIX, Backoff, Deliverer, deliver, webhook_of
from jobs.config import Config

log = logging.getLogger("metering.alerts")

#: The consumer group of the webhooks (the evaluator's, GROUP, commits its offsets in its transactions).
WEBHOOK_GROUP = "metering-alerts-webhooks"
#: Records per transaction at most, and how long a poll waits for the first.
MAX_BATCH = 500
POLL_S = 0.2


alerts_topic = topics.alerts_topic
state_topic = topics.alerts_state_topic
costs_topic = topics.costs_topic
__all__ = [
    "GROUP",
    "LedgerUnavailable",
    "ensure_ledger_topic",
    "publish_ledger",
    "read_alerts",
    "read_costs",
    "read_ledger",
    "read_state",
    "read_to_end",
]


def transactional_id(config: Config) -> str:
    return f"metering-alerts-{config.kafka.topics.events}"


def ensure_alert_topics(config: Config, partitions: int = 4) -> None:
    """The alerts topic, the costs topic (``alerts.costs``) and the compacted state topic (one partition: the state is
    read whole at start)."""
    kafka = config.kafka
    topics.ensure_topic(kafka.bootstrap_servers, alerts_topic(config), partitions=partitions, security=kafka.security)
    if config.alerts.costs:
        topics.ensure_topic(kafka.bootstrap_servers, costs_topic(config), partitions=partitions, security=kafka.security)
    topics.ensure_topic(
        kafka.bootstrap_servers,
        state_topic(config),
        partitions=1,
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        security=kafka.security,
    )
    ensure_ledger_topic(config)


@dataclass
class RunStats:
    transactions: int = 0
    records: int = 0
    alerts: int = 0
    costs: int = 0
    aborted: int = 0
    restored: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class AlertService:
    """The evaluator's loop (module docstring). ``stop`` ends it after the current transaction."""

    def __init__(self, config: Config, *, backoff: Backoff | None = None) -> None:
        self.config = config
        self.backoff = backoff or Backoff()
        self.stop = threading.Event()
        self.stats = RunStats()
        self.topics = {
            config.kafka.topics.aggregates: AGGREGATE,
            config.kafka.topics.finals: FINAL,
            config.kafka.topics.corrections: CORRECTION,
            topics.credit_ledger_topic(config): LEDGER,
        }
        self.evaluator = self._evaluator()
        self.until_idle, self.idle_s = False, 3.0

    def _evaluator(self) -> Evaluator:
        config = self.config
        return Evaluator(config.alerts, config.rating, lambda customer: config.billing.policy_for(customer).cycle)

    def run(
        self, *, on_batch: Callable[[RunStats], None] | None = None, until_idle: bool = False, idle_s: float = 3.0
    ) -> RunStats:
        """Evaluate until ``stop``, or (``until_idle``) until every input partition is read to its end for ``idle_s``.

        Bounded runs are for backfills and the demo: the job's topics are complete, so the end is
        the last committed record (an open transaction of a job still writing keeps it waiting).
        """
        from confluent_kafka import KafkaException, Producer

        self.until_idle, self.idle_s = until_idle, idle_s

        ensure_alert_topics(self.config)
        producer = Producer(
            {
                **_producer_base(self.config),
                "transactional.id": transactional_id(self.config),
                "transaction.timeout.ms": 60_000,
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        producer.init_transactions(30)  # fences a predecessor and aborts what it left open
        deliverer = self._deliverer()
        try:
            while not self.stop.is_set():
                try:
                    self._session(producer, on_batch)
                except KafkaException as exc:
                    error = exc.args[0]
                    if error.fatal() or not error.txn_requires_abort():
                        raise
                    log.warning("transaction aborted (%s): restoring the state and rewinding", error)
                    producer.abort_transaction(30)
                    self.stats.aborted += 1
        finally:
            if deliverer is not None:
                deliverer.close()
            producer.flush(10)
        return self.stats

    def _restore(self) -> None:
        self.evaluator = self._evaluator()
        count = 0
        for key, value in read_state(self.config):
            self.evaluator.restore(key, value)
            count += 1
        self.stats.restored = count
        log.info("restored %d state records (%d periods)", count, len(self.evaluator.periods))

    def _session(self, producer: Any, on_batch: Callable[[RunStats], None] | None) -> None:
        from confluent_kafka import Consumer

        self._restore()
        consumer = Consumer(
            {
                **_base(self.config),
                "group.id": GROUP,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
            }
        )
        alerts, states, costs = alerts_topic(self.config), state_topic(self.config), costs_topic(self.config)
        consumer.subscribe(list(self.topics))
        idle_since: float | None = None
        try:
            while not self.stop.is_set():
                messages = _fetch(consumer)
                if not messages:
                    if self.until_idle:
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= self.idle_s and _caught_up(consumer):
                            self.stop.set()
                    continue
                idle_since = None
                producer.begin_transaction()
                now_ms = int(time.time() * 1000)
                for message in messages:
                    record = json.loads(message.value())
                    kind = self.topics[message.topic()]
                    for alert in self.evaluator.apply(kind, record, arrival_ms=message.timestamp()[1], now_ms=now_ms):
                        producer.produce(alerts, key=alert["id"].encode(), value=json.dumps(alert, separators=(",", ":")))
                        self.stats.alerts += 1
                        self.stats.kinds[alert["kind"]] = self.stats.kinds.get(alert["kind"], 0) + 1
                for cost in self.evaluator.take_costs(now_ms):
                    producer.produce(costs, key=cost["customer_id"].encode(), value=json.dumps(cost, separators=(",", ":")))
                    self.stats.costs += 1
                for key, value in self.evaluator.take_changed():
                    producer.produce(states, key=key.encode(), value=value)
                positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
                producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(30)
                self.stats.transactions += 1
                self.stats.records += len(messages)
                if on_batch is not None:
                    on_batch(self.stats)
        finally:
            consumer.close()

    def _deliverer(self) -> Deliverer | None:
        from confluent_kafka import Consumer, Producer

        if not any(rule.webhook for rule in self.config.alerts.rules):
            return None
        consumer = Consumer(
            {
                **_base(self.config),
                "group.id": WEBHOOK_GROUP,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([alerts_topic(self.config)])
        producer = Producer({**_producer_base(self.config), "enable.idempotence": True})
        return Deliverer(self.config.alerts.rules, consumer, producer, state_topic(self.config), self.backoff).start()


def _caught_up(consumer: Any) -> bool:
    """Whether partitions are assigned and each is read to its end (an empty one counts as read)."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    for tp in consumer.position(assignment):
        low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        if high > low and tp.offset < high:  # never handed a record (offset < 0), or behind
            committed = consumer.committed([tp], timeout=10)[0].offset if tp.offset < 0 else tp.offset
            if committed < high:
                return False
    return True


def _fetch(consumer: Any) -> list[Any]:
    """What is fetched already (up to MAX_BATCH), else the first record within POLL_S and what came with it.

    librdkafka's batch call alone waits its whole timeout even when records are there.
    """
    messages = consumer.consume(MAX_BATCH, 0)
    if not messages:
        first = consumer.poll(POLL_S)
        messages = [] if first is None else [first, *consumer.consume(MAX_BATCH - 1, 0)]
    for message in messages:
        if message.error() is not None:
            log.warning("kafka: %s", message.error())
    return [m for m in messages if m.error() is None]


def dead_letters(config: Config) -> dict[str, dict[str, Any]]:
    """The webhook dead letters now on the state topic, by key."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in read_state(config):
        if key.startswith(DEAD_PREFIX):
            if value is None:
                found.pop(key, None)
            else:
                found[key] = json.loads(value)
    return found


def redeliver(config: Config, backoff: Backoff | None = None) -> tuple[int, int]:
    """Resend every dead-lettered alert; a delivered one is removed (tombstone). (delivered, still dead)."""
    from confluent_kafka import Producer

    producer = Producer({**_producer_base(config), "enable.idempotence": True})
    delivered = failed = 0
    for key, letter in sorted(dead_letters(config).items()):
        webhook = webhook_of(config.alerts.rules, letter["alert"])
        if webhook is None:
            failed += 1
            log.warning("%s: rule %r has no webhook now", key, letter["alert"].get("rule"))
            continue
        ok, attempts, error = deliver(webhook, letter["alert"], backoff or Backoff())
        if ok:
            producer.produce(state_topic(config), key=key.encode(), value=None)
            delivered += 1
        else:
            producer.produce(
                state_topic(config),
                key=key.encode(),
                value=json.dumps({**letter, "attempts": letter["attempts"] + attempts, "error": error}),
            )
            failed += 1
    producer.flush(30)
    return delivered, failed
