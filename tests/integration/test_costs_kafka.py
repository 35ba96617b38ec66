"""One rule, two paths: the cost ``metering alerts run`` rates in the stream equals the cost ``metering query cost``
prices at read time from the same totals.

The job's record shapes go to aggregates and finals topics on a real broker; :class:`AlertService`
(``alerts.costs``, no rules) writes cost records to the costs topic; the loader loads the job's
topics and the costs topic into chDB. Then each row of ``stream_cost`` (the newest cost record per
group) must equal :func:`clickhouse.billing.cost`'s row for that group, read from the loaded
totals at the record's ``as_of``: quantity, cost (rounded and exact), projected quantity and cost.
Twice: while the period runs, and once finals have replaced the running totals.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaProducer

from clickhouse.billing import cost
from clickhouse.client import StorageSettings, open_storage
from clickhouse.migrate import migrate
from clickhouse.queries import StorageReader, parse_time, run_query
from infra.kafka import KafkaBroker
from jobs.alerts.service import AlertService, read_costs
from jobs.config import load_config
from jobs.loader.loader import Loader
from jobs.topics import ensure_topic
from schemas.records import COST
from tests.integration.test_alerts_kafka import P0, P1, _value
from tests.unit.test_alert_evaluator import aggregate

CUSTOMERS = ("acme", "globex", "initech")
GROUPS = ('{"region":"eu"}', '{"region":"us"}')
#: 100 calls included, then 0.01 up to 1,000, then 0.004: the projection crosses tiers.
CARD = [
    {
        "starts_at": "2026-01-01T00:00:00Z",
        "model": "graduated",
        "tiers": [{"up_to": "100", "unit_price": "0"}, {"up_to": "1000", "unit_price": "0.01"}, {"unit_price": "0.004"}],
    }
]
COMPARED = ("quantity", "cost", "cost_exact", "projected_quantity", "projected_cost")


def final(customer: str, group: str, total: int) -> dict[str, Any]:
    key = {"customer_id": customer, "meter": "api_calls", "group_key": group, "aggregation": "count"}
    return {**key, "period_start_ms": P0, "period_end_ms": P1, "finalized_at_watermark_ms": P1 + 1, **_value(total)}


def agree(storage: Any, rating: Any) -> list[dict[str, Any]]:
    """``stream_cost``'s rows, each checked against the read side's pricing of the loaded totals at its ``as_of``."""
    streamed = run_query(storage, "stream_cost", {"customer": "", "meter": ""})
    assert len(streamed) == len(CUSTOMERS) * len(GROUPS)
    for row in streamed:
        at = parse_time(row["as_of"], "as_of")
        [read] = [
            r
            for r in cost(StorageReader(storage), rating, customer=row["customer_id"], at=at)
            if r["group_key"] == row["group_key"]
        ]
        assert (read["is_final"], read["period_start"], read["currency"]) == (
            row["is_final"],
            row["period_start"],
            row["currency"],
        )
        for name in COMPARED:
            assert Decimal(read[name]) == Decimal(row[name]), (name, row, read)
    return streamed


def test_the_stream_rated_cost_equals_the_read_time_cost_of_the_same_totals(
    spare_broker: KafkaBroker, tmp_path: Path, storage_settings: StorageSettings
) -> None:
    bootstrap = spare_broker.settings.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    names = ("events", "raw", "aggregates", "finals", "corrections", "dead_letters")
    topics = {name: f"costs-{name}-{run}" for name in names}
    for topic in [*topics.values(), f"{topics['events']}-duplicates", f"{topics['events']}-amendments"]:
        ensure_topic(bootstrap, topic, partitions=2)
    document = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": topics},
        "storage": {"backend": "chdb", "path": str(storage_settings.path), "database": storage_settings.database},
        "meters": [{"name": "api_calls", "event_type": "api_call", "aggregation": "count", "group_by": ["region"]}],
        "rating": {"default_plan": "std", "plans": {"std": {"meters": {"api_calls": CARD}}}},
    }
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    assert config.alerts.costs and not config.alerts.rules

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    def send(topic: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            producer.send(topic, json.dumps(record).encode(), key=record["customer_id"].encode())
        producer.flush()

    def evaluate() -> None:
        AlertService(config).run(until_idle=True, idle_s=1.5)

    # Running: customer n, group g: minutes of 7 × (n + 1) × (g + 1) calls over the first days of March.
    running = []
    for n, customer in enumerate(CUSTOMERS):
        for g, group in enumerate(GROUPS):
            for minute in range(0, 4 * 86_400_000, 6 * 3_600_000):
                running.append(aggregate(P0 + minute, 1, 7 * (n + 1) * (g + 1), customer=customer, group=group))
    send(topics["aggregates"], running)
    evaluate()
    try:
        with open_storage(storage_settings) as storage:
            migrate(storage)
            Loader(config, storage, group_id=f"loader-{run}").run(until_idle=True, idle_s=1.5)
            provisional = agree(storage, config.rating)
        assert not any(r["is_final"] for r in provisional)

        # Finals, some above the running totals (what arrived late within grace).
        totals = {(c, g): 1000 * (n + 1) + 37 * i for n, c in enumerate(CUSTOMERS) for i, g in enumerate(GROUPS)}
        send(topics["finals"], [final(c, g, total) for (c, g), total in totals.items()])
        evaluate()
        with open_storage(storage_settings) as storage:
            Loader(config, storage, group_id=f"loader-{run}").run(until_idle=True, idle_s=1.5)
            finals = agree(storage, config.rating)
    finally:
        producer.close()
    assert all(r["is_final"] for r in finals)
    assert {(r["customer_id"], r["group_key"]): Decimal(r["quantity"]) for r in finals} == {
        k: Decimal(v) for k, v in totals.items()
    }
    records = read_costs(config)
    assert all(tuple(r) == COST.names for r in records)
    # at most one per changed group per transaction (a batch's records of one group give one), at least each group's
    # running and final value
    assert 2 * len(totals) <= len(records) <= len(running) + len(totals)
