"""The end-to-end demo: generate a realistic workload, and recompute its expected totals independently.

The recomputation shares nothing with the job but the period arithmetic (udfs/periods.py, tested
on its own): it validates with the Python schema validator, deduplicates in file order, and sums
with plain ``Decimal`` arithmetic. ``compare`` then checks what the pipeline loaded into ClickHouse
against it, exactly.

Why one module: the workload and its independent recomputation stay together and apart from the
pipeline's code, so the check shares no code with what it checks.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from clickhouse.queries import Reader
from jobs.config import Config
from jobs.demo_money import DEMO_CREDITS, demo_alerts
from schemas.amendments import Amendment, is_amendment
from schemas.amendments import judge as judge_amendment
from schemas.validate import UsageEvent, decode, parse_timestamp, validate_line
from udfs.amendments import REFUSALS, AmendmentLedger, amendable_types
from udfs.meters import Aggregation, Meter
from udfs.periods import billing_period, epoch_millis, from_epoch_millis, rfc3339_millis

START = datetime(2026, 3, 29, tzinfo=UTC)  # Berlin's DST day, then month ends in five time zones
SPAN = timedelta(days=3, hours=12)
LATE_BEYOND_GRACE_DAY = datetime(2026, 2, 10, tzinfo=UTC)  # its periods are long final by then

CUSTOMERS: dict[str, dict[str, Any]] = {
    "acme": {"timezone": "UTC"},
    "globex": {"timezone": "Europe/Berlin"},
    "initech": {"timezone": "America/New_York", "anchor": 31},
    "bharat-ai": {"timezone": "Asia/Kolkata", "anchor": 31},
    "kiwi-labs": {"timezone": "Pacific/Auckland", "period": "day"},
    "weekly-co": {"timezone": "Europe/Berlin", "period": "week", "anchor": 1},
}
MODELS = ["small-1", "medium-2", "large-3"]
GPUS = ["a100", "h100"]


def demo_document(run_id: str, bootstrap: str, chdb_path: Path, events: int = 1_000_000) -> dict[str, Any]:
    """The demo's configuration (as YAML would hold it): its own topics and database per run; ``events``: the workload's size."""
    prefix = f"demo-{run_id}"
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "consumer_group": f"{prefix}-job",
            "topics": {
                "events": f"{prefix}-events",
                "raw": f"{prefix}-raw",
                "aggregates": f"{prefix}-aggregates",
                "finals": f"{prefix}-finals",
                "corrections": f"{prefix}-corrections",
                "dead_letters": f"{prefix}-dead-letters",
            },
        },
        "storage": {"backend": "chdb", "path": str(chdb_path), "database": f"demo_{run_id.replace('-', '_')}"},
        "pipeline": {
            "checkpoint_interval": "5s",
            "provisional_interval": "10s",
            "max_out_of_orderness": "30s",
            "idle_timeout": "10s",
        },
        "billing": {
            "default": {"period": "month", "timezone": "UTC", "grace": "48h"},
            # A copy: a caller adding a customer must not change what generate() produces afterwards.
            "customers": {name: dict(policy) for name, policy in CUSTOMERS.items()},
        },
        "meters": [
            {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
            {"name": "tokens", "event_type": "tokens", "aggregation": "sum", "group_by": ["model"]},
            {"name": "gpu_seconds", "event_type": "gpu_seconds", "aggregation": "sum", "group_by": ["gpu_type"]},
            {"name": "storage_peak_bytes", "event_type": "storage_snapshot", "aggregation": "max"},
            {"name": "active_users", "event_type": "api_call", "aggregation": "unique_count", "value": "properties.user"},
            {"name": "credits", "event_type": "credits", "aggregation": "sum", "allow_negative": True},
        ],
        "rating": DEMO_RATING,
        "credits": DEMO_CREDITS,
        "alerts": demo_alerts(events),
    }


#: The demo's prices (docs/pricing.md): one plan for every customer, a card for every meter, so each
#: customer's final cost can be checked against the recomputed totals priced the same way.
DEMO_RATING: dict[str, Any] = {
    "currency": "USD",
    "default_plan": "standard",
    "plans": {
        "standard": {
            "meters": {
                "api_calls": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "model": "graduated",
                        "included": "1000",
                        "tiers": [{"up_to": "100000", "unit_price": "0.0002"}, {"unit_price": "0.0001"}],
                    }
                ],
                "tokens": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "model": "package",
                        "package_size": "1000",
                        "package_price": "0.002",
                        "package_rounding": "up",
                    }
                ],
                "gpu_seconds": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "model": "per_unit",
                        "unit_price": "0.000694444444",
                        "quantity_rounding": {"places": 0, "mode": "ROUND_UP"},
                    }
                ],
                "storage_peak_bytes": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "model": "volume",
                        "tiers": [
                            {"up_to": "0", "unit_price": "0"},
                            {"up_to": "100000000000", "flat_price": "5.00"},
                            {"unit_price": "0.0000000002"},
                        ],
                    }
                ],
                "active_users": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "0.25"}],
                "credits": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1"}],
            }
        }
    },
}


@dataclass
class Workload:
    lines: int = 0
    duplicates: int = 0
    conflicts: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    late_within_grace: int = 0
    late_beyond_grace: int = 0
    #: amendment lines by what the job makes of them: void, amend, repeated, unknown_event, not_amendable
    amendments: Counter[str] = field(default_factory=Counter)


#: The share of the workload's first lines that carries no amendment: the demo sends them through
#: the events endpoint of the ingestion API, which takes events only (API_SHARE is below it).
AMENDMENT_FREE_SHARE = 0.05
#: Per event after those: the chance of a void or an amend of a recent event of an amendable type,
#: and of each amendment the job refuses or ignores (of an api_call event, of an unknown event, a retry).
AMENDMENT_RATE = 0.004
AMENDMENT_MISTAKE_RATE = 0.0005
AMENDABLE_DEMO_TYPES = ("tokens", "gpu_seconds", "credits")


def amendment_line(action: str, amendment_id: str, target: dict[str, Any], quantity: str | None = None) -> str:
    """An amendment of ``target`` (an event as a dict) as the ingestion API writes it (schemas/amendments.py)."""
    record: dict[str, Any] = {
        "amendment": action,
        "amendment_id": amendment_id,
        "customer_id": target["customer_id"],
        "event_id": target["event_id"],
        "requested_at": target["timestamp"],
        "requested_by": "demo",
        "reason": "the demo's workload",
    }
    if quantity is not None:
        record["quantity"] = quantity
    return json.dumps(record, separators=(",", ":"))


def _new_quantity(rng: random.Random, event: dict[str, Any]) -> str:
    if event["event_type"] == "tokens":
        return str(rng.randrange(1, 5000))
    return f"{rng.randrange(0, 100)}.{rng.randrange(100):02d}"


def random_event(rng: random.Random, n: int, customer: str, moment: datetime) -> dict[str, Any]:
    """One valid demo event of a random type (api call, tokens, GPU seconds, storage snapshot, credits)."""
    kind = rng.choices(["api_call", "tokens", "gpu_seconds", "storage_snapshot", "credits"], [50, 30, 10, 8, 2])[0]
    event: dict[str, Any] = {
        "event_id": f"{customer}-{n:08d}",
        "customer_id": customer,
        "event_type": kind,
        "timestamp": rfc3339_millis(moment),
    }
    if kind == "api_call":
        event.update(quantity=1, properties={"user": f"u{rng.randrange(400)}", "endpoint": rng.choice(["/v1/chat", "/v1/embed"])})
    elif kind == "tokens":
        event.update(quantity=str(rng.randrange(1, 5000)), properties={"model": rng.choice(MODELS)})
    elif kind == "gpu_seconds":
        event.update(quantity=f"{rng.randrange(0, 3600)}.{rng.randrange(1000):03d}", properties={"gpu_type": rng.choice(GPUS)})
    elif kind == "storage_snapshot":
        event.update(quantity=str(rng.randrange(10**9, 10**12)))
    else:
        event.update(quantity=f"{rng.choice(['', '-'])}{rng.randrange(1, 100)}.{rng.randrange(100):02d}")
    return event


MALFORMED = {
    "malformed_json": lambda e: json.dumps(e)[:-7],
    "missing_field": lambda e: json.dumps({k: v for k, v in e.items() if k != "quantity"}),
    "bad_timestamp": lambda e: json.dumps({**e, "timestamp": e["timestamp"].replace("Z", "")}),
    "unknown_meter": lambda e: json.dumps({**e, "event_type": "teleportation"}),
    "future_timestamp": lambda e: json.dumps({**e, "timestamp": "2030-01-01T00:00:00Z"}),
    "bad_quantity": lambda e: json.dumps({**e, "quantity": "1e9"}),
}


#: A customer the demo's API key does not send for (its events are ``customer_not_allowed``).
OUTSIDER = "umbrella-corp"


def client_mistakes(valid_line: str) -> dict[str, str]:
    """Lines a buggy client sends the ingestion API, made from one valid event: reason -> line.

    One per :data:`MALFORMED` reason, and one for a customer outside the demo key's scope. The API
    must reject every one (never write it); the demo checks that against its own judgement.
    """
    event = json.loads(valid_line)
    mistakes: dict[str, str] = {}
    for reason in sorted(MALFORMED):
        make: Callable[[dict[str, Any]], str] = MALFORMED[reason]
        mistakes[reason] = make({**event, "event_id": f"{event['event_id']}-{reason}"})
    mistakes["customer_not_allowed"] = json.dumps({**event, "customer_id": OUTSIDER}, separators=(",", ":"))
    return mistakes


def generate(path: Path, events: int, seed: int = 7, span: timedelta = SPAN) -> Workload:
    """Write ``events`` JSON lines (plus duplicates and malformed lines) in Kafka order per customer.

    Their event times run over ``span`` from :data:`START`: a shorter span is denser traffic.
    """
    rng = random.Random(seed)
    stats = Workload()
    customers = list(CUSTOMERS)
    step = span / events
    pending_late: list[tuple[int, str]] = []  # (emit at index, line)
    recent: list[str] = []
    # Amendments draw from their own generator: the events are the same with or without them.
    amend_rng = random.Random(seed * 7919 + 1)
    amendable: list[dict[str, Any]] = []  # recent events sent as they are, of an amendable type, not voided
    api_calls: list[dict[str, Any]] = []
    amendments_sent: list[str] = []
    with path.open("w") as out:

        def emit(line: str) -> None:
            out.write(line + "\n")
            stats.lines += 1

        def amend(n: int) -> None:
            """Maybe an amendment after event ``n`` (none in the first lines, which go to the events endpoint)."""
            if n < events * AMENDMENT_FREE_SHARE:
                return
            roll = amend_rng.random()
            mistake = AMENDMENT_MISTAKE_RATE
            if roll < AMENDMENT_RATE and amendable:
                target = amendable[amend_rng.randrange(len(amendable))]
                if amend_rng.random() < 0.5:
                    line = amendment_line("void", f"amd-{n:08d}", target)
                    amendable.remove(target)
                    stats.amendments["void"] += 1
                else:
                    line = amendment_line("amend", f"amd-{n:08d}", target, _new_quantity(amend_rng, target))
                    stats.amendments["amend"] += 1
                amendments_sent.append(line)
            elif roll < AMENDMENT_RATE + mistake and api_calls:
                line = amendment_line("void", f"amd-{n:08d}", api_calls[amend_rng.randrange(len(api_calls))])
                stats.amendments["not_amendable"] += 1
            elif roll < AMENDMENT_RATE + 2 * mistake:
                missing = {
                    "customer_id": amend_rng.choice(customers),
                    "event_id": f"missing-{n:08d}",
                    "timestamp": rfc3339_millis(START),
                }
                line = amendment_line("void", f"amd-{n:08d}", missing)
                stats.amendments["unknown_event"] += 1
            elif roll < AMENDMENT_RATE + 3 * mistake and amendments_sent:
                line = amendments_sent[amend_rng.randrange(len(amendments_sent))]  # a client's retry
                stats.amendments["repeated"] += 1
            else:
                return
            emit(line)

        for n in range(events):
            moment = START + step * n + timedelta(milliseconds=rng.randrange(-20_000, 20_000))
            event = random_event(rng, n, rng.choice(customers), moment)
            line = json.dumps(event, separators=(",", ":"))
            roll = rng.random()
            if roll < 0.01:  # late but inside grace: sent 1–20 hours of event time later
                pending_late.append((n + int(timedelta(hours=rng.randrange(1, 20)) / step), line))
                stats.late_within_grace += 1
            elif roll < 0.011:  # late beyond grace: a tokens event for a period final for weeks
                late = random_event(rng, n, event["customer_id"], LATE_BEYOND_GRACE_DAY + timedelta(minutes=rng.randrange(1440)))
                late.update(event_type="tokens", quantity=str(rng.randrange(1, 500)), properties={"model": rng.choice(MODELS)})
                late["event_id"] = f"{event['customer_id']}-late-{n:08d}"
                pending_late.append((events + n, json.dumps(late, separators=(",", ":"))))
                stats.late_beyond_grace += 1
            elif roll < 0.016:
                reason = rng.choice(sorted(MALFORMED))
                emit(MALFORMED[reason](event))
                stats.malformed[reason] += 1
            else:
                emit(line)
                recent.append(line)
                if len(recent) > 500:
                    recent.pop(0)
                kept = amendable if event["event_type"] in AMENDABLE_DEMO_TYPES else api_calls
                if event["event_type"] in (*AMENDABLE_DEMO_TYPES, "api_call"):
                    kept.append(event)
                    if len(kept) > 500:
                        kept.pop(0)
            if rng.random() < 0.10 and recent:  # a retry of a recent event
                original = rng.choice(recent)
                if rng.random() < 0.01:  # a conflicting retry (producer bug): first one wins
                    changed = json.loads(original)
                    changed["quantity"] = "999999"
                    emit(json.dumps(changed, separators=(",", ":")))
                    stats.conflicts += 1
                else:
                    emit(original)
                stats.duplicates += 1
            while pending_late and pending_late[0][0] <= n:
                emit(pending_late.pop(0)[1])
            pending_late.sort()
            amend(n)
        beyond_grace = []
        for _, line in sorted(pending_late):
            emit(line)
            if "-late-" in line:
                beyond_grace.append(json.loads(line))
        # Amendments of events whose period is final: corrections that take back what they added.
        for number, target in enumerate(beyond_grace[:2]):
            quantity = None if number == 0 else _new_quantity(amend_rng, target)
            emit(amendment_line("void" if quantity is None else "amend", f"amd-final-{number}", target, quantity))
            stats.amendments["void" if quantity is None else "amend"] += 1
    return stats


# --- independent recomputation ---------------------------------------------------------------


Key = tuple[str, str, str, int]  # customer, meter, group_by JSON (sorted keys), period start ms


@dataclass
class Expected:
    finals: dict[Key, tuple[Decimal, int]] = field(default_factory=dict)
    corrections: dict[Key, tuple[Decimal, int]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    duplicates_dropped: int = 0
    events_counted: int = 0
    #: events whose period end + grace lies within ``LATENESS_MARGIN`` of the watermark when they
    #: are read: final or correction would depend on watermark timing (a workload that wants an
    #: exact comparison has none)
    undecided: list[str] = field(default_factory=list)


#: How close to the watermark an event's period end + grace may be before the recomputation calls
#: its fate undecided: the job's watermark trails the file-order one by up to a periodic emission
#: step and, on several partitions, by the alignment drift plus what one fetch reads ahead.
LATENESS_MARGIN = timedelta(hours=6)


def _group(meter: Meter, event: UsageEvent) -> str:
    """The event's group-by values for ``meter`` as JSON, keys sorted (a missing property is '')."""
    return json.dumps({d: str(event.properties.get(d, "")) for d in meter.group_by}, sort_keys=True)


def _value(meter: Meter, event: UsageEvent) -> Decimal | str | None:
    if meter.value_property is None:
        return event.quantity
    raw = event.properties.get(meter.value_property)
    return None if raw is None else str(raw)


def _amendment(line: str) -> Amendment | None:
    """The line as a valid amendment (schemas/amendments.py), or None."""
    try:
        document = decode(line)
    except ValueError:
        return None
    return judge_amendment(document)[2] if is_amendment(document) else None


def _iter_lines(path: Path) -> Iterator[str]:
    with path.open() as handle:
        yield from (line.rstrip("\n") for line in handle)


@dataclass(frozen=True)
class Counted:
    """An accepted (valid, first-seen) event as one meter counts it."""

    event: UsageEvent
    meter: Meter
    group: str  # group-by values as JSON, sorted keys
    value: Decimal | str | None
    #: the watermark (epoch ms) when the event is read in file order, None before the first one
    watermark_ms: int | None = None
    #: -1 for an amendment's retraction of what the event counted (udfs/amendments.py), else +1
    sign: int = 1


def _rowtime_ms(line: str, latest_ms: int) -> int | None:
    """The event time a line gives the watermark (the job's rule): a real timestamp no later than ``latest_ms``."""
    try:
        document = json.loads(line)
        moment = parse_timestamp(document["timestamp"]) if isinstance(document, dict) else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if moment is None:
        return None
    millis = epoch_millis(moment)
    return millis if millis <= latest_ms else None


def accepted(
    path: Path, config: Config, expected: Expected | None = None, unwritten: Collection[int] = frozenset()
) -> Iterator[Counted]:
    """The generated file's events as the meters must count them (refusals and duplicates tallied in ``expected``).

    Each carries the watermark a one-partition topic of the file would have when it is read: the
    newest valid, not future-dated event time of the lines before it (duplicates and refused
    events included, as in the job) minus ``pipeline.max_out_of_orderness``. ``unwritten``: the
    lines (numbered from 0) that never reached Kafka (the ingestion API rejected them): no dead
    letter, no part of the watermark.
    """
    expected = expected if expected is not None else Expected()
    seen: set[tuple[str, str]] = set()
    ledger = AmendmentLedger(amendable_types(config.meters))
    types = {m.event_type for m in config.meters}
    latest_ms = epoch_millis(datetime.now(UTC) + config.pipeline.allowed_future_skew)
    lag_ms = int(config.pipeline.max_out_of_orderness / timedelta(milliseconds=1))
    newest_ms: int | None = None
    for number, line in enumerate(_iter_lines(path)):
        if number in unwritten:
            continue
        watermark_ms = None if newest_ms is None else newest_ms - lag_ms
        rowtime_ms = _rowtime_ms(line, latest_ms)
        if rowtime_ms is not None:
            newest_ms = rowtime_ms if newest_ms is None else max(newest_ms, rowtime_ms)
        result = validate_line(line)
        if not result.ok and (amendment := _amendment(line)) is not None:
            outcome, contributions = ledger.apply(amendment)
            if outcome in REFUSALS:
                expected.dead_letters["other"] += 1
            for contribution in contributions:
                for meter in config.meters_for(contribution.event.event_type):
                    event = contribution.event
                    yield Counted(event, meter, _group(meter, event), _value(meter, event), watermark_ms, contribution.sign)
            continue
        if not result.ok or result.event is None:
            reasons = {p.reason for p in result.problems}
            expected.dead_letters["malformed_json" if "malformed_json" in reasons else "other"] += 1
            continue
        event = result.event
        if event.event_type not in types:
            expected.dead_letters["unknown_meter"] += 1
            continue
        if rowtime_ms is None:
            expected.dead_letters["future_timestamp"] += 1
            continue
        if (event.customer_id, event.event_id) in seen:
            expected.duplicates_dropped += 1
            continue
        seen.add((event.customer_id, event.event_id))
        ledger.first_seen(event)
        expected.events_counted += 1
        for meter in config.meters_for(event.event_type):
            yield Counted(event, meter, _group(meter, event), _value(meter, event), watermark_ms)


def recompute(path: Path, config: Config, unwritten: Collection[int] = frozenset()) -> Expected:
    """Expected finals/corrections/dead letters from the generated file, by plain arithmetic.

    An event is a correction when its period's end + grace is at or behind the watermark when it is
    read (docs/semantics.md), the file's order being the order of a one-partition topic: what live
    processing sees. Events too close to call are listed in ``undecided``. ``unwritten``: the
    lines (numbered from 0) the ingestion API rejected, so never written (see :func:`accepted`).
    """
    expected = Expected()
    values: dict[Key, list[Any]] = defaultdict(list)
    late_values: dict[Key, list[Any]] = defaultdict(list)
    margin_ms = int(LATENESS_MARGIN / timedelta(milliseconds=1))
    for counted in accepted(path, config, expected, unwritten):
        event = counted.event
        policy = config.billing.policy_for(event.customer_id)
        period = billing_period(event.timestamp, policy.cycle)
        start = epoch_millis(period.start)
        final_at = epoch_millis(period.end + policy.grace)
        key = (event.customer_id, counted.meter.name, counted.group, start)
        watermark = counted.watermark_ms
        late = watermark is not None and final_at <= watermark
        if watermark is not None and abs(final_at - watermark) < margin_ms:
            expected.undecided.append(f"{event.customer_id}/{event.event_id}")
        bucket = late_values if late else values
        bucket[key].append((event.timestamp, event.event_id, counted.value, counted.sign))
    aggregation_of = {m.name: m.aggregation for m in config.meters}
    for source, target in ((values, expected.finals), (late_values, expected.corrections)):
        for key, items in source.items():
            target[key] = (_aggregate(aggregation_of[key[1]], items), sum(sign for *_, sign in items))
    return expected


def expected_costs(expected: Expected, config: Config) -> dict[tuple[str, int], Decimal]:
    """Each customer's final cost per billing period (start, epoch ms): the recomputed finals priced by the rate cards.

    What ``metering invoice`` must say for each final period (before any correction, which is priced on a later
    invoice); rounded per line, as invoices are.
    """
    costs: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for (customer, meter, _group, start_ms), (quantity, _count) in expected.finals.items():
        period = billing_period(from_epoch_millis(start_ms), config.billing.policy_for(customer).cycle)
        charge = config.rating.price(customer, meter, period, quantity)
        if charge is not None:
            costs[(customer, start_ms)] += charge.rounded
    return dict(costs)


def invoiced_costs(
    reader: Reader, config: Config, finals: Sequence[dict[str, Any]], now: datetime
) -> dict[tuple[str, int], Decimal]:
    """The pipeline's side: ``metering invoice``'s total (clickhouse/billing.py) for each final period loaded."""
    from clickhouse.billing import read_invoice

    costs: dict[tuple[str, int], Decimal] = {}
    for customer, start in sorted({(r["customer_id"], r["period_start"]) for r in finals}):
        instant = datetime.fromisoformat(start.replace("Z", "+00:00"))
        period = billing_period(instant, config.billing.policy_for(customer).cycle)
        costs[(customer, epoch_millis(instant))] = read_invoice(reader, config.rating, customer, period, now=now).rounded
    return costs


def check_costs(result: Comparison, expected: dict[tuple[str, int], Decimal], invoiced: dict[tuple[str, int], Decimal]) -> None:
    """Every final period's invoice total equals the recomputed totals priced by the same rate cards, exactly."""
    wrong = sorted(k for k in set(expected) | set(invoiced) if expected.get(k, Decimal(0)) != invoiced.get(k, Decimal(0)))
    result.check(
        "final cost",
        not wrong,
        f"{len(invoiced)} final periods invoiced (metering invoice), {sum(invoiced.values())} in all; "
        f"{len(wrong)} differ from the recomputation priced by the rate cards"
        + (f" (e.g. {wrong[0]}: invoiced {invoiced.get(wrong[0])}, expected {expected.get(wrong[0])})" if wrong else ""),
    )


def _aggregate(aggregation: Aggregation, items: list[tuple[datetime, str, Any, int]]) -> Decimal:
    """The value of ``items`` (time, event id, value, sign); signs other than +1 occur only for sum and count."""
    if aggregation is Aggregation.SUM:
        return sum((sign * Decimal(v) for _, _, v, sign in items), Decimal(0))
    if aggregation is Aggregation.COUNT:
        return Decimal(sum(sign for *_, sign in items))
    if aggregation is Aggregation.MAX:
        return max(Decimal(v) for _, _, v, _ in items)
    if aggregation is Aggregation.MIN:
        return min(Decimal(v) for _, _, v, _ in items)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return Decimal(len({v for _, _, v, _ in items if v is not None}))
    return Decimal(max(items, key=lambda t: (t[0], t[1]))[2])


def api_disagreements(lines: Sequence[str], statuses: Sequence[tuple[str, str | None]], config: Config) -> list[str]:
    """Where the ingestion API's verdicts differ from this module's own judgement of the same lines.

    ``statuses``: per line, ``(status, reason)`` as the API answered (``accepted`` or ``rejected``).
    A line is acceptable when the Python validator finds no problem, a meter reads its type, it is
    not dated beyond ``pipeline.allowed_future_skew`` (what :func:`accepted` refuses) and its
    customer is one of :data:`CUSTOMERS` (the demo key's scope); a rejected line's reason must be
    one of the problems the validator names (or ``unknown_meter``, ``future_timestamp``,
    ``customer_not_allowed``). Returns one description per disagreement (empty: they agree).
    """
    types = {m.event_type for m in config.meters}
    latest_ms = epoch_millis(datetime.now(UTC) + config.pipeline.allowed_future_skew)
    wrong: list[str] = []
    for number, (line, (status, reason)) in enumerate(zip(lines, statuses, strict=True)):
        result = validate_line(line)
        if not result.ok or result.event is None:
            reasons = {p.reason for p in result.problems} or {"malformed_json"}
        elif result.event.event_type not in types:
            reasons = {"unknown_meter"}
        elif _rowtime_ms(line, latest_ms) is None:
            reasons = {"future_timestamp"}
        elif result.event.customer_id not in CUSTOMERS:
            reasons = {"customer_not_allowed"}
        else:
            reasons = set()
        if (status == "accepted") != (not reasons) or (status == "rejected" and reason not in reasons):
            wrong.append(f"line {number}: the API said {status} {reason or ''}, the recomputation {sorted(reasons) or 'valid'}")
    return wrong


# --- comparison -----------------------------------------------------------------------------


@dataclass
class Results:
    """What the pipeline loaded, as the documented query output (decimals as strings, `group_by`)."""

    usage: list[dict[str, Any]]
    finals: list[dict[str, Any]]
    corrections: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    health: dict[str, Any]


def collect_results(storage: Any) -> Results:
    """Read usage, finals, corrections, dead letters and health counters through the named queries."""
    from clickhouse.queries import run_query, with_group_by

    everyone = {"customer": ""}
    return Results(
        usage=[with_group_by(r) for r in run_query(storage, "usage", everyone)],
        finals=[with_group_by(r) for r in run_query(storage, "finals", everyone)],
        corrections=[with_group_by(r) for r in run_query(storage, "corrections", everyone)],
        dead_letters=run_query(storage, "dead_letters", everyone),
        health=run_query(storage, "health", {})[0],
    )


@dataclass
class Comparison:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


def _key_of(row: dict[str, Any]) -> Key:
    start = datetime.fromisoformat(row["period_start"].replace("Z", "+00:00"))
    return (row["customer_id"], row["meter"], json.dumps(row["group_by"], sort_keys=True), epoch_millis(start))


def compare(
    expected: Expected,
    finals: list[dict[str, Any]],
    corrections: list[dict[str, Any]],
    dead_letters: list[dict[str, Any]],
    health: dict[str, Any],
) -> Comparison:
    """Check every loaded number against the recomputation, exactly.

    Every final must equal the recomputation, and every event that arrives after its period is
    final must be in a correction, not in the final: which events are which does not depend on how
    Flink interleaves partitions (watermark alignment, docs/semantics.md "Backfills").
    """
    result = Comparison()
    got = {_key_of(r): (Decimal(r["total"]), int(r["event_count"])) for r in finals}
    corrected: dict[Key, tuple[Decimal, int]] = {}
    for row in corrections:
        key = _key_of(row)
        value, count = corrected.get(key, (Decimal(0), 0))
        sign = int(row["sign"])
        corrected[key] = (value + sign * Decimal(row["value"]), count + sign * int(row["event_count"]))
    wrong = sorted(k for k in expected.finals if got.get(k) != expected.finals[k])
    extra = sorted(set(got) - set(expected.finals))
    result.check(
        "final totals",
        not wrong and not extra,
        f"{len(got)} finals compared exactly; {len(expected.finals)} expected; wrong or missing {len(wrong)}, "
        f"unexpected {len(extra)}"
        + (f"; e.g. {wrong[0]}: got {got.get(wrong[0])}, expected {expected.finals[wrong[0]]}" if wrong else "")
        + (f"; e.g. {extra[0]}: got {got[extra[0]]}" if extra else ""),
    )
    late_events = sum(count for _, count in expected.corrections.values())
    as_corrections = sum(count for _, count in corrected.values())
    wrong_corrections = sorted(
        k for k in set(expected.corrections) | set(corrected) if corrected.get(k) != expected.corrections.get(k)
    )
    result.check(
        "late beyond grace: in a correction, never in the final",
        not wrong_corrections and not expected.undecided,
        f"{late_events} events arrived after their period was final; {as_corrections} are in corrections; "
        f"keys that differ {len(wrong_corrections)}"
        + (
            f" (e.g. {wrong_corrections[0]}: got {corrected.get(wrong_corrections[0])}, "
            f"expected {expected.corrections.get(wrong_corrections[0])})"
            if wrong_corrections
            else ""
        )
        + (f"; {len(expected.undecided)} events too close to their period's finalization to call" if expected.undecided else ""),
    )
    result.check(
        "dead letters",
        len(dead_letters) == sum(expected.dead_letters.values()),
        f"{len(dead_letters)} dead letters; {sum(expected.dead_letters.values())} expected",
    )
    dropped = int(health.get("duplicates_dropped") or 0)
    result.check(
        "duplicates dropped", dropped == expected.duplicates_dropped, f"{dropped} dropped; {expected.duplicates_dropped} expected"
    )
    return result
