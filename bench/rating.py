"""Rating overhead per event: what pricing costs, per aggregate record and per event, in one run on one workload.

The job prices nothing: rating runs on aggregates, in the alert evaluator (``spend`` and
``projected_spend`` rules price a period on every record read) and in ``metering invoice`` / ``metering
query cost`` (stored totals). This bench measures, in-process and single-threaded, on one workload
(the demo's generator, jobs/demo.py ``generate``: ``--events`` events of six customers over ``--hours``
of event time, its 84 h by default; fewer hours is denser traffic):

- **records per event**: the aggregate records the job would emit for the workload, derived from its
  accepted events (jobs/demo.py ``accepted``, the independent recomputation's reading of the file):
  one per (customer, meter, group, provisional step of event time) with on-time events (the job's
  group window, then one ``on_time`` record per step, jobs/flink/sql.py ``ontime_partials_view``),
  one ``late:`` record per late event (at or behind the watermark), one correction per event of a
  period final when it is read, and one final per (customer, meter, group, period) finalized within
  the workload; per accepted (distinct, valid) event;
- **the evaluator per record** (jobs/alerts/evaluator.py ``Evaluator.apply`` over those records as
  decoded dicts, ``take_changed`` every 500 records as the service's batches do), with two rules per
  meter either way: ``usage`` + ``entitlement_pct`` (no pricing) or ``spend`` + ``projected_spend``
  (every group of the period priced by a rate card with graduated tiers, included quantity and a
  minimum); their difference is the pricing share;
- **the peer**: ``schemas.validate.validate_line`` over the same file's lines, the per-event Python
  check ``metering produce`` and the ingestion API run (the job's own hot path is in the JVM);
- **invoices**: ``udfs.invoicing.build_invoice`` for every (customer, period) of the workload's
  totals (and its corrections), per final total row, repeated for at least 0.3 CPU seconds.

Variants alternate (usage, spend, peer, then the reverse) for ``--rounds`` rounds; the figures are
each variant's median. Rating per event = pricing share per record x records per event.

Usage::

    python -m bench.rating [--events 200000] [--hours 84] [--rounds 3] [--seed 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobs.alerts.evaluator import AGGREGATE, CORRECTION, FINAL, Evaluator  # noqa: E402
from jobs.config import Config, load_config  # noqa: E402
from jobs.demo import CUSTOMERS, DEMO_RATING, SPAN, accepted, demo_document, generate  # noqa: E402
from schemas.validate import validate_line  # noqa: E402
from udfs.alerting import AlertSettings  # noqa: E402
from udfs.invoicing import CorrectionRecord, FinalTotal, build_invoice  # noqa: E402
from udfs.periods import Period, billing_period, epoch_millis, from_epoch_millis  # noqa: E402

MINUTE_MS = 60_000
#: The service's batch (jobs/alerts/service.py MAX_BATCH): state records are taken once per batch.
BATCH = 500
#: Graduated tiers, an included quantity and a period minimum on the two busiest meters; the demo's
#: other cards (package, per unit with quantity rounding, volume) for the rest.
BENCH_CARDS: dict[str, Any] = {
    "api_calls": {
        "model": "graduated",
        "included": "1000",
        "minimum": "10.00",
        "tiers": [
            {"up_to": "10000", "unit_price": "0.0004"},
            {"up_to": "100000", "unit_price": "0.0002"},
            {"unit_price": "0.0001"},
        ],
    },
    "tokens": {
        "model": "graduated",
        "included": "100000",
        "minimum": "5.00",
        "tiers": [
            {"up_to": "1000000", "unit_price": "0.000004"},
            {"up_to": "10000000", "unit_price": "0.000002"},
            {"unit_price": "0.000001"},
        ],
    },
}
#: The invoices of a workload are few (one per customer and period): made again for this long, for a steady figure.
INVOICE_SECONDS = 0.3
USAGE_RULES = ("usage", "entitlement_pct")
SPEND_RULES = ("spend", "projected_spend")


def bench_rating() -> dict[str, Any]:
    """The demo's rating section with :data:`BENCH_CARDS` in place of its api_calls and tokens cards."""
    rating = copy.deepcopy(DEMO_RATING)
    cards = rating["plans"]["standard"]["meters"]
    for meter, card in BENCH_CARDS.items():
        cards[meter] = [{"starts_at": "2026-01-01T00:00:00Z", **card}]
    return rating


def rules(kinds: Iterable[str], meters: Iterable[str]) -> list[dict[str, Any]]:
    """One rule of each kind per meter, thresholds a busy period crosses."""
    thresholds = {
        "usage": [1000, 10000, 100000],
        "entitlement_pct": [50, 80, 100],
        "spend": ["10.00", "100.00", "1000.00"],
        "projected_spend": ["10.00", "100.00", "1000.00"],
    }
    out = []
    for meter in meters:
        for kind in kinds:
            rule: dict[str, Any] = {"name": f"{kind}-{meter}", "kind": kind, "meter": meter, "thresholds": thresholds[kind]}
            if kind == "entitlement_pct":
                rule["entitlement"] = "100000"
            out.append(rule)
    return out


def bench_config(workdir: Path) -> tuple[Config, AlertSettings, AlertSettings]:
    """The demo's configuration with the bench's rating; the usage and the spend rule sets."""
    document = demo_document("bench", "127.0.0.1:9", workdir / "chdb")
    document["rating"] = bench_rating()
    meters = [m["name"] for m in document["meters"]]
    settings = []
    for kinds in (USAGE_RULES, SPEND_RULES):
        # cost records off: the rule sets alone are compared (with them, every priced meter's state is kept)
        document["alerts"] = {"rules": rules(kinds, meters), "costs": False}
        path = workdir / f"metering-{kinds[0]}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        config = load_config(path, env={})
        settings.append(config.alerts)
    return config, settings[0], settings[1]


# --- the workload's records ------------------------------------------------------------------------


@dataclass
class _Fold:
    """A running value of one meter's contributions (the job's partial: count, sum, max, min, distinct)."""

    count: int = 0
    total: Decimal = Decimal(0)
    high: Decimal | None = None
    low: Decimal | None = None
    distinct: set[str] = field(default_factory=set)

    def add(self, value: Decimal | str | None, sign: int) -> None:
        self.count += sign
        if isinstance(value, str):
            self.distinct.add(value)
            return
        if value is None:
            return
        self.total += value if sign > 0 else -value
        if sign > 0:
            self.high = value if self.high is None else max(self.high, value)
            self.low = value if self.low is None else min(self.low, value)

    def merge(self, other: _Fold) -> _Fold:
        merged = _Fold(self.count + other.count, self.total + other.total, self.high, self.low, self.distinct | other.distinct)
        for value in (other.high, other.low):
            if value is not None:
                merged.high = value if merged.high is None else max(merged.high, value)
                merged.low = value if merged.low is None else min(merged.low, value)
        return merged

    def value(self, aggregation: str) -> Decimal:
        match aggregation:
            case "count":
                return Decimal(self.count)
            case "max":
                return self.high or Decimal(0)
            case "min":
                return self.low or Decimal(0)
            case "unique_count":
                return Decimal(len(self.distinct))
            case _:
                return self.total


@dataclass
class Workload:
    """The generated file, its accepted events and the records the job would emit for them, in emission order."""

    lines: list[str]
    events: int
    #: (kind, record) in emission order: aggregate, final, correction.
    records: list[tuple[str, dict[str, Any]]]
    counts: dict[str, int]
    #: aggregate records per accepted event if the job ran bounded from scratch (one row per key-minute)
    backfill_records_per_event: float
    finals: list[tuple[str, FinalTotal]]
    corrections: list[tuple[str, CorrectionRecord]]


def _record(
    customer: str,
    meter: str,
    group: str,
    aggregation: str,
    period: Period,
    minute_ms: int,
    segment: str,
    version: int,
    fold: _Fold,
) -> dict[str, Any]:
    """An aggregate record in the job's shape (schemas/records.py), as the evaluator reads it."""
    value = fold.value(aggregation)
    return {
        "customer_id": customer,
        "meter": meter,
        "group_key": group,
        "aggregation": aggregation,
        "minute_ms": minute_ms,
        "period_start_ms": epoch_millis(period.start),
        "period_end_ms": epoch_millis(period.end),
        "segment": segment,
        "version": version,
        "value": f"{value:f}",
        "event_count": fold.count,
        "sum": f"{fold.total:f}",
        "max": None if fold.high is None else f"{fold.high:f}",
        "min": None if fold.low is None else f"{fold.low:f}",
        "distinct_values": sorted(fold.distinct),
        "latest_ms": None,
        "latest_value": None,
    }


def workload(path: Path, config: Config, events: int, seed: int, span: timedelta = SPAN) -> Workload:
    """Generate the demo's workload into ``path`` (event times over ``span``); derive the job's records from it."""
    generate(path, events, seed, span)
    lines = path.read_text().splitlines()
    step_ms = int(config.pipeline.provisional_interval / timedelta(milliseconds=1))
    lag_ms = int(config.pipeline.max_out_of_orderness / timedelta(milliseconds=1))
    aggregation = {m.name: m.aggregation.value for m in config.meters}
    # (customer, meter, group, period start ms) -> period; ... -> {step start: fold}
    periods: dict[tuple[str, str, str, int], Period] = {}
    steps: dict[tuple[str, str, str, int], dict[int, _Fold]] = defaultdict(dict)
    totals: dict[tuple[str, str, str, int], _Fold] = defaultdict(_Fold)
    late: list[tuple[int, dict[str, Any]]] = []
    corrections: list[tuple[int, dict[str, Any]]] = []
    correction_rows: list[tuple[str, CorrectionRecord]] = []
    event_ids: set[tuple[str, str]] = set()
    newest_ms = 0
    for counted in accepted(path, config):
        event, meter = counted.event, counted.meter.name
        event_ids.add((event.customer_id, event.event_id))
        policy = config.billing.policy_for(event.customer_id)
        period = billing_period(event.timestamp, policy.cycle)
        key = (event.customer_id, meter, counted.group, epoch_millis(period.start))
        periods[key] = period
        event_ms = epoch_millis(event.timestamp)
        watermark = counted.watermark_ms
        newest_ms = max(newest_ms, event_ms)
        single = _Fold()
        single.add(counted.value, counted.sign)
        read_ms = event_ms if watermark is None else max(event_ms, watermark + lag_ms)
        if watermark is not None and epoch_millis(period.end + policy.grace) <= watermark:
            record = {
                "customer_id": event.customer_id,
                "meter": meter,
                "group_key": counted.group,
                "aggregation": aggregation[meter],
                "period_start_ms": key[3],
                "period_end_ms": epoch_millis(period.end),
                "value": f"{single.value(aggregation[meter]).copy_abs():f}",
                "retract": counted.sign < 0,
            }
            corrections.append((read_ms, record))
            loaded = from_epoch_millis(read_ms)
            correction_rows.append(
                (
                    event.customer_id,
                    CorrectionRecord(
                        meter,
                        counted.group,
                        aggregation[meter],
                        period,
                        counted.sign,
                        abs(single.value(aggregation[meter])),
                        loaded,
                    ),
                )
            )
            continue
        totals[key].add(counted.value, counted.sign)
        if watermark is not None and event_ms <= watermark:
            minute = event_ms - event_ms % MINUTE_MS
            segment = f"late:{event.event_id}"
            late.append((read_ms, _record(*key[:3], aggregation[meter], period, minute, segment, 1, single)))
            continue
        step = event_ms - event_ms % step_ms
        steps[key].setdefault(step, _Fold()).add(counted.value, counted.sign)
    emitted: list[tuple[int, int, str, dict[str, Any]]] = []
    minutes_backfill = 0
    for key, by_step in steps.items():
        running: dict[int, _Fold] = {}
        for step in sorted(by_step):
            minute = step - step % MINUTE_MS
            running[minute] = running[minute].merge(by_step[step]) if minute in running else by_step[step]
            end = step + step_ms
            record = _record(*key[:3], aggregation[key[1]], periods[key], minute, "on_time", end, running[minute])
            emitted.append((end + lag_ms, 0, AGGREGATE, record))
        minutes_backfill += len(running)
    emitted += [(at, 1, AGGREGATE, record) for at, record in late]
    emitted += [(at, 2, CORRECTION, record) for at, record in corrections]
    watermark_end = newest_ms - lag_ms
    final_rows: list[tuple[str, FinalTotal]] = []
    for key, fold in totals.items():
        period = periods[key]
        policy = config.billing.policy_for(key[0])
        final_total = FinalTotal(key[1], key[2], aggregation[key[1]], period, fold.value(aggregation[key[1]]))
        final_rows.append((key[0], final_total))
        final_at = epoch_millis(period.end + policy.grace)
        if final_at <= watermark_end:
            record = {
                "customer_id": key[0],
                "meter": key[1],
                "group_key": key[2],
                "aggregation": aggregation[key[1]],
                "period_start_ms": key[3],
                "period_end_ms": epoch_millis(period.end),
                "value": f"{final_total.quantity:f}",
                "finalized_at_watermark_ms": final_at,
            }
            emitted.append((final_at, 3, FINAL, record))
    emitted.sort(key=lambda item: (item[0], item[1]))
    counts: dict[str, int] = defaultdict(int)
    for _, _, kind, record in emitted:
        counts["late" if str(record.get("segment", "")).startswith("late:") else kind] += 1
    return Workload(
        lines,
        len(event_ids),
        [(kind, record) for _, _, kind, record in emitted],
        dict(counts),
        (minutes_backfill + counts["late"]) / max(1, len(event_ids)),
        final_rows,
        correction_rows,
    )


# --- the measurements ------------------------------------------------------------------------------


def evaluate(records: list[tuple[str, dict[str, Any]]], settings: AlertSettings, config: Config) -> tuple[float, int]:
    """CPU seconds of one evaluator over ``records`` (state taken every :data:`BATCH`), and the alerts it made."""
    evaluator = Evaluator(settings, config.rating)
    apply, take = evaluator.apply, evaluator.take_changed
    alerts = 0
    started = time.process_time()
    for index, (kind, record) in enumerate(records, start=1):
        alerts += len(apply(kind, record, arrival_ms=0, now_ms=0))
        if index % BATCH == 0:
            take()
    take()
    return time.process_time() - started, alerts


def validate(lines: list[str]) -> float:
    """CPU seconds of the per-line Python verdict over ``lines``."""
    started = time.process_time()
    for line in lines:
        validate_line(line)
    return time.process_time() - started


def invoices(work: Workload, config: Config, at_least: float = INVOICE_SECONDS) -> tuple[float, int, int]:
    """CPU seconds of every (customer, period) invoice of the workload's totals, (seconds, invoices, final rows).

    The invoices are made again until ``at_least`` CPU seconds have passed; the seconds are per pass.
    """
    by_customer: dict[str, list[FinalTotal]] = defaultdict(list)
    for customer, final in work.finals:
        by_customer[customer].append(final)
    corrections: dict[str, list[CorrectionRecord]] = defaultdict(list)
    for customer, correction in work.corrections:
        corrections[customer].append(correction)
    jobs = [
        (customer, period, finals)
        for customer, finals in sorted(by_customer.items())
        for period in sorted({f.period for f in finals}, key=lambda p: p.start)
    ]
    as_of = datetime(2026, 12, 1, tzinfo=UTC)
    rows = sum(1 for _, period, finals in jobs for f in finals if f.period == period)
    passes, started = 0, time.process_time()
    while not passes or time.process_time() - started < at_least:
        for customer, period, finals in jobs:
            build_invoice(customer, period, finals, corrections[customer], config.rating, as_of=as_of, is_final=True)
        passes += 1
    return (time.process_time() - started) / passes, len(jobs), rows


@dataclass
class Figures:
    command: str
    events: int
    hours: float
    events_per_customer_minute: float
    lines: int
    records: dict[str, int]
    records_per_event: float
    #: the on-time steps alone: the records per event of a producer whose disorder stays within max_out_of_orderness
    steps_per_event: float
    backfill_records_per_event: float
    usage_us_per_record: float
    spend_us_per_record: float
    pricing_us_per_record: float
    pricing_share: float
    rating_us_per_event: float
    rating_us_per_event_steps_only: float
    evaluator_us_per_event: float
    validate_us_per_event: float
    validate_us_per_line: float
    rating_per_validate: float
    evaluator_per_validate: float
    usage_alerts: int
    spend_alerts: int
    invoices: int
    final_rows: int
    invoice_us_per_final_row: float
    invoice_us_per_event: float
    rounds: dict[str, list[float]]


def measure(events: int, rounds: int, seed: int, workdir: Path, command: str = "", span: timedelta = SPAN) -> Figures:
    """Every figure of the module docstring, measured in this process."""
    config, usage, spend = bench_config(workdir)
    work = workload(workdir / "events.jsonl", config, events, seed, span)
    records = work.records
    seconds: dict[str, list[float]] = {"usage": [], "spend": [], "validate": [], "invoice": []}
    alerts = {"usage": 0, "spend": 0}
    invoice_count = final_rows = 0

    def run_usage() -> None:
        cpu, alerts["usage"] = evaluate(records, usage, config)
        seconds["usage"].append(cpu)

    def run_spend() -> None:
        cpu, alerts["spend"] = evaluate(records, spend, config)
        seconds["spend"].append(cpu)

    def run_validate() -> None:
        seconds["validate"].append(validate(work.lines))

    def run_invoice() -> None:
        nonlocal invoice_count, final_rows
        cpu, invoice_count, final_rows = invoices(work, config)
        seconds["invoice"].append(cpu)

    variants: dict[str, Callable[[], None]] = {
        "usage": run_usage,
        "spend": run_spend,
        "validate": run_validate,
        "invoice": run_invoice,
    }
    order = list(variants)
    for number in range(rounds):
        for name in order if number % 2 == 0 else reversed(order):
            variants[name]()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    n = max(1, len(records))
    usage_us, spend_us = median["usage"] / n * 1e6, median["spend"] / n * 1e6
    pricing_us = spend_us - usage_us
    per_event = len(records) / max(1, work.events)
    steps = work.counts.get(AGGREGATE, 0) / max(1, work.events)
    validate_us = median["validate"] / max(1, work.events) * 1e6
    invoice_us = median["invoice"] / max(1, final_rows) * 1e6
    return Figures(
        command=command,
        events=work.events,
        hours=span / timedelta(hours=1),
        events_per_customer_minute=round(work.events / len(CUSTOMERS) / (span / timedelta(minutes=1)), 2),
        lines=len(work.lines),
        records={"total": len(records), **work.counts},
        records_per_event=round(per_event, 4),
        steps_per_event=round(steps, 4),
        backfill_records_per_event=round(work.backfill_records_per_event, 4),
        usage_us_per_record=round(usage_us, 2),
        spend_us_per_record=round(spend_us, 2),
        pricing_us_per_record=round(pricing_us, 2),
        pricing_share=round(pricing_us / spend_us, 3) if spend_us else 0.0,
        rating_us_per_event=round(pricing_us * per_event, 2),
        rating_us_per_event_steps_only=round(pricing_us * steps, 2),
        evaluator_us_per_event=round(spend_us * per_event, 2),
        validate_us_per_event=round(validate_us, 2),
        validate_us_per_line=round(median["validate"] / max(1, len(work.lines)) * 1e6, 2),
        rating_per_validate=round(pricing_us * per_event / validate_us, 3) if validate_us else 0.0,
        evaluator_per_validate=round(spend_us * per_event / validate_us, 3) if validate_us else 0.0,
        usage_alerts=alerts["usage"],
        spend_alerts=alerts["spend"],
        invoices=invoice_count,
        final_rows=final_rows,
        invoice_us_per_final_row=round(invoice_us, 1),
        invoice_us_per_event=round(median["invoice"] / max(1, work.events) * 1e6, 4),
        rounds={name: [round(v, 4) for v in values] for name, values in seconds.items()},
    )


def table(f: Figures) -> str:
    """The figures as the Markdown the docs quote."""
    r = f.records
    rows = [
        f"workload: the demo's generator, {f.events:,} accepted events ({f.lines:,} lines) over {f.hours:g} h of event time, "
        f"{f.events_per_customer_minute} events per customer-minute",
        f"aggregate records: {r['total']:,} ({r.get(AGGREGATE, 0):,} on-time steps, {r.get('late', 0):,} late, "
        f"{r.get(FINAL, 0):,} finals, {r.get(CORRECTION, 0):,} corrections): {f.records_per_event} per event "
        f"(on-time steps alone: {f.steps_per_event}; bounded backfill, one per key-minute: {f.backfill_records_per_event})",
        "",
        "| measurement | CPU µs per record | CPU µs per event | × validate_line |",
        "| --- | ---: | ---: | ---: |",
        f"| validate_line (the peer: per-event Python verdict) | – | {f.validate_us_per_event} | 1.00 |",
        f"| evaluator, usage + entitlement_pct rules | {f.usage_us_per_record} | "
        f"{round(f.usage_us_per_record * f.records_per_event, 2)} | "
        f"{_ratio(f.usage_us_per_record * f.records_per_event, f.validate_us_per_event)} |",
        f"| evaluator, spend + projected_spend rules | {f.spend_us_per_record} | {f.evaluator_us_per_event} | "
        f"{f.evaluator_per_validate} |",
        f"| **rating** (spend − usage: the pricing share, {f.pricing_share:.0%}) | **{f.pricing_us_per_record}** | "
        f"**{f.rating_us_per_event}** | **{f.rating_per_validate}** |",
        f"| rating, were every event on time (on-time steps alone) | {f.pricing_us_per_record} | "
        f"{f.rating_us_per_event_steps_only} | {_ratio(f.rating_us_per_event_steps_only, f.validate_us_per_event)} |",
        f"| invoice (build_invoice; {f.invoices} invoices, {f.final_rows} final rows) | "
        f"{f.invoice_us_per_final_row} per final row | {f.invoice_us_per_event} | "
        f"{_ratio(f.invoice_us_per_event, f.validate_us_per_event)} |",
        "",
        f"alerts: usage rules {f.usage_alerts}, spend rules {f.spend_alerts}; CPU s per round (invoice: per pass): "
        + ", ".join(f"{name} {values}" for name, values in f.rounds.items()),
    ]
    return "\n".join(rows)


def _ratio(value: float, peer: float) -> str:
    return f"{value / peer:.3f}" if peer else "–"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events the demo's generator writes (default 200,000)")
    parser.add_argument(
        "--hours", type=float, default=SPAN / timedelta(hours=1), help="hours of event time they span (default the demo's 84)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant, alternated (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="the generator's seed (default 7)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    command = "python -m bench.rating " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: {command}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-rating-") as scratch:
        figures = measure(args.events, args.rounds, args.seed, Path(scratch), command, timedelta(hours=args.hours))
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
