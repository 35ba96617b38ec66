"""A backfill gives the same invoice as live processing, whatever order Flink reads partitions in.

Four months of events for four customers (UTC; Berlin; Kolkata with anchor 31; New York with
anchor 15, whose 15 February – 15 March period holds the US DST change), with duplicates,
conflicting retries, malformed lines, events late within grace, events late beyond grace in the
middle of the stream and, at the very end of the smallest customer's stream, events for periods
final for weeks. The same lines go to a one-partition topic (the order live processing sees) and
to a four-partition topic with one customer per partition and very different partition sizes
(6,000 down to 200 events), so the consumer reads the small partitions to their end, late events
included, while the large one is still in January. Run as bounded backfills, both must give the
same finals, corrections and dead letters, equal to an independent recomputation.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from infra.settings import StackSettings
from jobs.config import Config, load_config
from jobs.demo import MALFORMED, MODELS, Key, accepted, demo_document, random_event, recompute
from jobs.produce import make_producer
from jobs.topics import ensure_topics
from tests.e2e.harness import committed_values, run_bounded_job
from udfs.periods import billing_period, epoch_millis, rfc3339_millis

START = datetime(2026, 1, 5, tzinfo=UTC)
END = datetime(2026, 5, 8, tzinfo=UTC)
#: customer -> (billing settings, events); one partition each, in this order
CUSTOMERS: dict[str, tuple[dict[str, Any], int]] = {
    "dense-utc": ({"timezone": "UTC"}, 6000),
    "berlin-gmbh": ({"timezone": "Europe/Berlin"}, 1500),
    "kolkata-ai": ({"timezone": "Asia/Kolkata", "anchor": 31}, 500),
    "ny-15": ({"timezone": "America/New_York", "anchor": 15}, 200),
}
#: The small partition whose stream ends with events for long-final periods.
TAIL_CUSTOMER = "ny-15"


def _late_tokens(rng: random.Random, customer: str, n: int, moment: datetime) -> str:
    event = random_event(rng, n, customer, moment)
    event.update(event_type="tokens", quantity=str(rng.randrange(1, 500)), properties={"model": rng.choice(MODELS)})
    event["event_id"] = f"{customer}-late-{n:06d}"
    return json.dumps(event, separators=(",", ":"))


def customer_stream(rng: random.Random, customer: str, count: int) -> list[tuple[datetime, str]]:
    """``(arrival, line)`` in arrival order: the customer's events as live processing would receive them."""
    span = END - START
    moments = sorted(START + span * rng.random() for _ in range(count))
    arrivals: list[tuple[datetime, str]] = []
    recent: list[str] = []
    for n, moment in enumerate(moments):
        event = random_event(rng, n, customer, moment)
        line = json.dumps(event, separators=(",", ":"))
        roll = rng.random()
        if roll < 0.02:  # late within grace: arrives 1-20 hours after its event time
            arrivals.append((moment + timedelta(hours=rng.randrange(1, 21)), line))
        elif roll < 0.03:
            arrivals.append((moment, MALFORMED[rng.choice(sorted(MALFORMED))](event)))
        else:
            arrivals.append((moment, line))
            recent = [*recent[-50:], line]
        if rng.random() < 0.08 and recent:  # a producer's retry, now and then with a changed payload
            original = rng.choice(recent)
            retry = json.loads(original)
            if rng.random() < 0.1:
                retry["quantity"] = "999999"
            arrivals.append((moment + timedelta(seconds=1), json.dumps(retry, separators=(",", ":"))))
    # Late beyond grace in the middle of the stream: 40-60 days old when they arrive.
    for n in range(5):
        arrives = START + span * (0.5 + rng.random() / 2)
        arrivals.append((arrives, _late_tokens(rng, customer, n, arrives - timedelta(days=40 + rng.randrange(20)))))
    if customer == TAIL_CUSTOMER:  # at the very end: the US-DST period (15 Feb - 15 Mar) and January
        tail = [datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 9, 12, tzinfo=UTC), datetime(2026, 1, 20, tzinfo=UTC)]
        for n in range(20):
            arrivals.append((END + timedelta(minutes=n), _late_tokens(rng, customer, 100 + n, tail[n % 3] + timedelta(hours=n))))
    arrivals.sort(key=lambda item: item[0])
    return arrivals


def workload(seed: int) -> dict[str, list[tuple[datetime, str]]]:
    rng = random.Random(seed)
    return {customer: customer_stream(rng, customer, count) for customer, (_, count) in CUSTOMERS.items()}


def live_order(streams: dict[str, list[tuple[datetime, str]]]) -> list[str]:
    """Every line in arrival order: what a one-partition topic holds."""
    merged = [(at, index, line) for index, stream in enumerate(streams.values()) for at, line in stream]
    return [line for _, _, line in sorted(merged, key=lambda item: (item[0], item[1]))]


def configuration(tmp_path: Path, bootstrap: str, name: str, partitions: int, parallelism: int) -> tuple[Config, Path]:
    document = demo_document(f"{name}-{uuid.uuid4().hex[:6]}", bootstrap, tmp_path / "chdb")
    document["billing"]["customers"] = {customer: dict(policy) for customer, (policy, _) in CUSTOMERS.items()}
    document["pipeline"]["parallelism"] = parallelism
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path, env={})
    ensure_topics(config, partitions=partitions)
    return config, path


def produce_to(bootstrap: str, topic: str, partitioned: list[list[str]]) -> None:
    """Lines to explicit partitions, each list in order."""
    producer = make_producer(bootstrap)
    try:
        for partition, lines in enumerate(partitioned):
            for line in lines:
                producer.send(topic, value=line.encode(), partition=partition)
        producer.flush()
    finally:
        producer.close()


def _key(record: dict[str, Any]) -> Key:
    group = json.dumps(json.loads(record["group_key"]), sort_keys=True)
    return (record["customer_id"], record["meter"], group, int(record["period_start_ms"]))


def outputs(bootstrap: str, config: Config) -> dict[str, Any]:
    """What the job committed: finals by key, corrections and dead letters as multisets."""
    topics = config.kafka.topics
    finals = [json.loads(value) for value in committed_values(bootstrap, topics.finals)]
    doubled = [key for key, n in Counter(_key(f) for f in finals).items() if n > 1]
    assert not doubled, f"finals emitted twice: {doubled[:5]}"
    corrections = Counter(
        (*_key(c), c["event_id"], Decimal(c["value"]), c["retract"])
        for c in (json.loads(value) for value in committed_values(bootstrap, topics.corrections))
    )
    dead_letters = Counter(
        (d["reason"], d.get("customer_id"), d.get("event_id"), d.get("payload"))
        for d in (json.loads(value) for value in committed_values(bootstrap, topics.dead_letters))
    )
    return {
        "finals": {_key(f): (Decimal(f["value"]), int(f["event_count"])) for f in finals},
        "corrections": corrections,
        "dead_letters": dead_letters,
    }


def partition_decisions_agree(streams: dict[str, list[tuple[datetime, str]]], events: Path, config: Config) -> list[str]:
    """Events whose fate the live order and their own partition's order would decide differently (a bad workload)."""
    live_late = {}
    for counted in accepted(events, config):
        policy = config.billing.policy_for(counted.event.customer_id)
        final_at = epoch_millis(billing_period(counted.event.timestamp, policy.cycle).end + policy.grace)
        live_late[(counted.event.customer_id, counted.event.event_id)] = (
            counted.watermark_ms is not None and final_at <= counted.watermark_ms
        )
    disagreements = []
    for customer, stream in streams.items():
        one = events.with_name(f"{customer}.jsonl")
        one.write_text("".join(line + "\n" for _, line in stream))
        for counted in accepted(one, config):
            policy = config.billing.policy_for(customer)
            final_at = epoch_millis(billing_period(counted.event.timestamp, policy.cycle).end + policy.grace)
            late = counted.watermark_ms is not None and final_at <= counted.watermark_ms
            if late != live_late[(customer, counted.event.event_id)]:
                disagreements.append(f"{customer}/{counted.event.event_id}")
    return disagreements


def test_a_skewed_backfill_gives_the_invoice_of_live_processing(
    tmp_path: Path, bootstrap: str, stack_settings: StackSettings
) -> None:
    streams = workload(seed=25)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in live_order(streams)))
    live, live_path = configuration(tmp_path, bootstrap, "live", partitions=1, parallelism=1)
    expected = recompute(events, live)
    assert not expected.undecided, expected.undecided[:10]
    assert not partition_decisions_agree(streams, events, live)
    assert sum(count for _, count in expected.corrections.values()) == 20 + 5 * len(CUSTOMERS)
    produce_to(bootstrap, live.kafka.topics.events, [live_order(streams)])
    run_bounded_job(live_path, stack_settings, "backfill-live")
    one = outputs(bootstrap, live)

    # The live run against the recomputation: every final exact, every late event in a correction.
    assert sum(one["dead_letters"].values()) == sum(expected.dead_letters.values())
    assert one["finals"] == expected.finals, sorted(set(one["finals"].items()) ^ set(expected.finals.items()))[:5]
    corrected: dict[Key, tuple[Decimal, int]] = {}
    for (customer, meter, group, start, _event_id, value, retract), n in one["corrections"].items():
        total, count = corrected.get((customer, meter, group, start), (Decimal(0), 0))
        sign = -n if retract else n
        corrected[(customer, meter, group, start)] = (total + sign * value, count + sign)
    assert corrected == expected.corrections
    tail_periods = {rfc3339_millis(datetime.fromtimestamp(key[3] / 1000, UTC)) for key in corrected if key[0] == TAIL_CUSTOMER}
    assert "2026-02-15T05:00:00.000Z" in tail_periods  # the US-DST period, final weeks before its late events

    # The same events on skewed partitions, at parallelism 1 and 2: the same invoice.
    for parallelism in (1, 2):
        skewed, skewed_path = configuration(tmp_path, bootstrap, f"skewed-p{parallelism}", len(CUSTOMERS), parallelism)
        produce_to(bootstrap, skewed.kafka.topics.events, [[line for _, line in stream] for stream in streams.values()])
        run_bounded_job(skewed_path, stack_settings, f"backfill-skewed-p{parallelism}")
        many = outputs(bootstrap, skewed)
        assert many["dead_letters"] == one["dead_letters"], parallelism
        assert many["corrections"] == one["corrections"], (
            parallelism,
            sorted(one["corrections"] - many["corrections"])[:5],
            sorted(many["corrections"] - one["corrections"])[:5],
        )
        assert many["finals"] == one["finals"], (
            parallelism,
            sorted(set(many["finals"].items()) ^ set(one["finals"].items()))[:5],
        )
