"""Voids and amends through the real pipeline: Kafka, the job on the MiniCluster, the loader, chDB, a replay.

A deterministic workload of two customers sends events in January, traffic in March that makes
January final, then amendments of January events (corrections of a final period), of March ones
(into the open period), and the ones the job refuses or ignores. Checked:

1. the finals and corrections equal the independent recomputation (jobs/demo.py with
   udfs/amendments.py), the refused amendments are dead letters with their reasons;
2. the amendments table holds every amendment's outcome, what it replaced and who asked why;
3. the recompute check of `metering check` agrees with what is stored;
4. `metering replay` of January, which recomputes from raw events with the applied amendments,
   gives each period the total of its final and its corrections: the same invoice;
5. the recompute check agrees again after the replay (the corrections it absorbed are hidden).
"""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from infra.settings import StackSettings
from jobs.config import load_config
from jobs.demo import _key_of, demo_document, recompute
from jobs.topics import ensure_topics
from tests.e2e.harness import load_and_compare, run_bounded_job
from tests.e2e.test_replay_bug import metering, sql


def event(customer: str, event_id: str, event_type: str, timestamp: str, quantity: str, **properties: str) -> str:
    return json.dumps(
        {"event_id": event_id, "customer_id": customer, "event_type": event_type, "timestamp": timestamp}
        | {"quantity": quantity, "properties": properties}
    )


def amendment(customer: str, amendment_id: str, event_id: str, quantity: str | None = None) -> str:
    record: dict[str, Any] = {"amendment": "void" if quantity is None else "amend", "amendment_id": amendment_id}
    record |= {"customer_id": customer, "event_id": event_id, "requested_at": "2026-03-05T09:00:00Z"}
    record |= {"requested_by": "key:ops", "reason": f"ticket {amendment_id}"}
    return json.dumps(record | ({} if quantity is None else {"quantity": quantity}))


def workload() -> list[str]:
    """Both customers' lines, interleaved: in file order, as the recomputation reads a one-partition topic."""
    per_customer: list[list[str]] = []
    for customer in ("acme", "globex"):
        c = customer[0]
        per_customer.append(
            [
                event(customer, f"{c}1", "tokens", "2026-01-10T10:00:00Z", "100", model="m1"),
                event(customer, f"{c}2", "tokens", "2026-01-11T10:00:00Z", "50", model="m1"),
                event(customer, f"{c}3", "tokens", "2026-01-12T10:00:00Z", "7", model="m2"),
                event(customer, f"{c}4", "api_call", "2026-01-12T11:00:00Z", "1", user="u1"),
                event(customer, f"{c}5", "gpu_seconds", "2026-01-13T10:00:00Z", "3.5", gpu_type="h100"),
                amendment(customer, f"{c}-amd-1", f"{c}3"),  # January still open: into its final
                event(customer, f"{c}6", "tokens", "2026-03-02T10:00:00Z", "10", model="m1"),  # January is final now
                amendment(customer, f"{c}-amd-2", f"{c}1"),  # a correction: -100
                amendment(customer, f"{c}-amd-3", f"{c}2", "60"),  # corrections: -50, +60
                amendment(customer, f"{c}-amd-3", f"{c}2", "60"),  # the client's retry: repeated, nothing
                amendment(customer, f"{c}-amd-4", f"{c}2", "61.25"),  # corrections: -60, +61.25
                amendment(customer, f"{c}-amd-5", f"{c}4"),  # api_call feeds a unique_count meter: not_amendable
                amendment(customer, f"{c}-amd-6", f"{c}-nope"),  # unknown_event
                amendment(customer, f"{c}-amd-7", f"{c}6", "11"),  # March, open: -10 +11 into its final
                amendment(customer, f"{c}-amd-8", f"{c}1", "5"),  # already_voided
                event(customer, f"{c}1", "tokens", "2026-01-10T10:00:00Z", "100", model="m1"),  # a retry: a duplicate
                amendment(customer, f"{c}-amd-9", f"{c}5", "4.25"),  # gpu_seconds, final: -3.5 +4.25
                event(customer, f"{c}7", "tokens", "2026-04-03T10:00:00Z", "1", model="m1"),
            ]
        )
    return [line for pair in zip(*per_customer, strict=True) for line in pair]


OUTCOMES = {
    "amd-1": ("applied", "void", "7"),
    "amd-2": ("applied", "void", "100"),
    "amd-3": ("applied", "amend", "50"),
    "amd-4": ("applied", "amend", "60"),
    "amd-5": ("not_amendable", "void", None),
    "amd-6": ("unknown_event", "void", None),
    "amd-7": ("applied", "amend", "10"),
    "amd-8": ("already_voided", "amend", None),
    "amd-9": ("applied", "amend", "3.5"),
}


def test_voids_and_amends_reach_finals_corrections_the_audit_trail_and_a_replay(
    tmp_path: Path, bootstrap: str, stack_settings: StackSettings
) -> None:
    run_id = uuid.uuid4().hex[:8]
    config_path = tmp_path / "metering.yaml"
    config_path.write_text(yaml.safe_dump(demo_document(run_id, bootstrap, tmp_path / "chdb")))
    config = load_config(config_path, env={})
    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in workload()))
    ensure_topics(config)
    assert metering("migrate", "--config", str(config_path), timeout=180).returncode == 0
    produced = metering("produce", str(events), "--topic", config.kafka.topics.events, "--bootstrap", bootstrap, "--no-validate")
    assert produced.returncode == 0, produced.stderr[-3000:]
    run_bounded_job(config_path, stack_settings, f"e2e-amendments-{run_id}")

    # 1. Finals and corrections as the recomputation says; the refusals are dead letters.
    comparison, got = load_and_compare(dict(os.environ), config_path, config, events)
    assert comparison.passed, comparison.checks
    expected = recompute(events, config)
    assert not expected.undecided and expected.corrections, expected
    assert sorted((d["customer_id"], d["reason"]) for d in got["dead-letters"]) == sorted(
        (customer, reason) for customer in ("acme", "globex") for reason in ("not_amendable", "unknown_event", "already_voided")
    )

    # 2. The audit trail: every amendment read, its outcome, what it replaced, who asked and why.
    audit = sql(
        config_path,
        rows="SELECT customer_id, amendment_id, action, outcome, previous_quantity, quantity, requested_by, reason"
        " FROM amendments FINAL ORDER BY customer_id, kafka_offset",
    )["rows"]
    for customer in ("acme", "globex"):
        rows = [r for r in audit if r["customer_id"] == customer]
        prefix = f"{customer[0]}-"
        outcomes = [(r["amendment_id"].removeprefix(prefix), r["outcome"]) for r in rows]
        assert outcomes == [
            ("amd-1", "applied"),
            ("amd-2", "applied"),
            ("amd-3", "applied"),
            ("amd-3", "repeated"),
            ("amd-4", "applied"),
            ("amd-5", "not_amendable"),
            ("amd-6", "unknown_event"),
            ("amd-7", "applied"),
            ("amd-8", "already_voided"),
            ("amd-9", "applied"),
        ]
        for row in rows:
            outcome, action, previous = OUTCOMES[row["amendment_id"].removeprefix(prefix)]
            assert row["action"] == action and row["requested_by"] == "key:ops", row
            assert row["reason"] == f"ticket {row['amendment_id']}", row
            if row["outcome"] == outcome == "applied":
                assert row["previous_quantity"] == previous, row

    # 3. The data-quality recomputation (metering check) agrees with what is stored.
    checked = metering("check", "--config", str(config_path), "--format", "json", "--no-docs")
    failed = checked.json()["failed"]
    assert not [f for f in failed if f.startswith("aggregates")], failed

    # 4. A replay of January from the raw events and the applied amendments: final + corrections.
    replayed = metering(
        "replay", "--config", str(config_path), "--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z",
        "--reason", "amendments", "--format", "json",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    after = {_key_of(f): (Decimal(f["total"]), int(f["event_count"])) for f in metering(
        "query", "finals", "--config", str(config_path), "--format", "jsonl").jsonl()}  # fmt: skip
    invoice: dict[Any, tuple[Decimal, int]] = {}
    for key in set(expected.finals) | set(expected.corrections):
        value, count = expected.finals.get(key, (Decimal(0), 0))
        more, extra = expected.corrections.get(key, (Decimal(0), 0))
        invoice[key] = (value + more, count + extra)
    # periods that start before 2026-02-01; a group whose every event was voided has no event left to
    # replay, so no final (the live job's final of it is 0 for 0 events: the same invoice)
    january = {k: v for k, v in invoice.items() if k[3] < 1769904000000 and v != (Decimal(0), 0)}
    assert january and {k: v for k, v in after.items() if k in january} == january

    # 5. And again after the replay: its segments, and the live corrections it did not absorb.
    checked = metering("check", "--config", str(config_path), "--format", "json", "--no-docs")
    failed = checked.json()["failed"]
    assert not [f for f in failed if f.startswith("aggregates")], failed
