"""``metering replay``: recompute whole, closed billing periods from ``raw_events`` as a new revision.

The steps (docs/replay.md has the rules and a worked example):

1. **Cut**: per partition of the events topic, the newest offset in ``raw_events``. Records after it are
   not part of this replay; the live pipeline handles them.
2. **Scope**: the customers with raw events in the range (or those named), every configured meter (or
   those named), and per customer every billing period of its cycle that overlaps the range. Periods
   that are still open, or whose stored periods differ from the configured cycle, are refused.
3. **Examine** (``replay_examine.sql``, in ClickHouse, one customer batch at a time for progress): per
   event and meter, counted with value, group and minute, or refused with the reason, into
   ``replay_events`` under the new, uncommitted revision.
4. **Combine**: minutes (``replay_minutes.sql``) into segments and period finals, in Python with the
   same :mod:`udfs` code as the job.
5. **Diff**: against the visible finals and the live corrections the revision absorbs.
6. **Write and commit**: segments, finals and adjustments, then the scope rows in one insert (the atomic
   switch), then the run's ``committed`` state. ``--dry-run`` stops after 5 and drops the scratch rows.

The revision's rows are invisible until the commit, so a replay that dies half-way changes nothing a
reader sees; its rows stay orphaned under a revision number that is never reused.

Why one module: a replay is one ordered sequence (examine, recompute, write the revision, commit its
scope) whose order is its safety; the pure rules are in udfs/revisions.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse.client import Storage
from clickhouse.queries import sql_of
from clickhouse.tables import (
    ADJUSTMENT_COLUMNS,
    REPLAY_FINAL_COLUMNS,
    REPLAY_SEGMENT_COLUMNS,
    RUN_COLUMNS,
    SCOPE_COLUMNS,
)
from jobs.config import Config
from udfs.aggregators import Partial
from udfs.ledger import local_day_start_ms, period_bounds
from udfs.meters import Aggregation, Meter
from udfs.periods import as_utc, epoch_millis, from_epoch_millis
from udfs.revisions import (
    Absorbed,
    Adjustment,
    FinalKey,
    NewTotal,
    OldFinal,
    ScopeKey,
    diff_finals,
    group_key,
    minute_partial,
    open_periods,
    period_totals,
    periods_overlapping,
)

SOURCE = "raw_events"
#: Customers examined per ClickHouse statement (the unit of progress).
CUSTOMER_BATCH = 50


def _aware(value: datetime) -> datetime:
    """A ClickHouse DateTime64(3, 'UTC') as read (naive on chDB) as an aware UTC datetime."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ReplayError(ValueError):
    """A replay that cannot be run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ReplayRequest:
    range_from: datetime
    range_to: datetime
    customers: tuple[str, ...] = ()
    meters: tuple[str, ...] = ()
    reason: str = ""
    dry_run: bool = False


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int
    total: int
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ReplayReport:
    revision: int
    dry_run: bool
    source: str
    cut: dict[int, int]
    customers: list[str]
    scope: list[ScopeKey]
    events_examined: int = 0
    events_counted: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    segments: int = 0
    finals: int = 0
    adjustments: list[Adjustment] = field(default_factory=list)
    seconds: float = 0.0
    range_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_examined / self.seconds if self.seconds > 0 else 0.0

    @property
    def realtime_ratio(self) -> float:
        """Event time replayed (the requested range) per second of wall time."""
        return self.range_seconds / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        from clickhouse.queries import plain

        return {
            "revision": self.revision,
            "dry_run": self.dry_run,
            "source": self.source,
            "cut": {str(p): o for p, o in sorted(self.cut.items())},
            "customers": len(self.customers),
            "periods": len(self.scope),
            "events_examined": self.events_examined,
            "events_counted": self.events_counted,
            "refusals": dict(sorted(self.refusals.items())),
            "segments_written": self.segments,
            "finals_written": self.finals,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "realtime_ratio": round(self.realtime_ratio, 1),
            "adjustments": [
                {
                    "customer_id": a.customer_id,
                    "meter": a.meter,
                    "group_by": json.loads(a.group_key or "{}"),
                    "period_start": plain(from_epoch_millis(a.period_start_ms)),
                    "period_end": plain(from_epoch_millis(a.period_end_ms)),
                    "old_revision": a.old_revision,
                    "revision": self.revision,
                    "old_total": plain(a.old_total),
                    "new_total": plain(a.new_total),
                    "delta": plain(a.delta),
                    "old_event_count": a.old_event_count,
                    "new_event_count": a.new_event_count,
                    "superseded_corrections": a.superseded_corrections,
                    "superseded_correction_value": plain(a.superseded_correction_value),
                }
                for a in self.adjustments
            ],
        }


def config_fingerprint(config: Config) -> str:
    """SHA-256 of what a replay's result depends on: the meters and the billing policies."""
    document = {
        "meters": [
            [m.name, m.event_type, m.aggregation.value, m.value, list(m.group_by), m.allow_negative] for m in config.meters
        ],
        "billing": repr(config.billing),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _meter_parameters(meters: Sequence[Meter]) -> dict[str, Any]:
    return {
        "meter_names": [m.name for m in meters],
        "meter_types": [m.event_type for m in meters],
        "meter_aggregations": [m.aggregation.value for m in meters],
        "meter_values": [m.value_property or "" for m in meters],
        "meter_dims": [list(m.group_by) for m in meters],
        "meter_negative": [1 if m.allow_negative else 0 for m in meters],
    }


class Replay:
    """One replay against one storage connection (which must be able to write: it owns chDB)."""

    def __init__(
        self,
        storage: Storage,
        config: Config,
        request: ReplayRequest,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.storage = storage
        self.config = config
        self.request = request
        self.on_progress = on_progress or (lambda _progress: None)
        self.topic = config.kafka.topics.events
        self.started = time.monotonic()
        self.meters = self._meters()

    # --- steps ------------------------------------------------------------------------------------
    def _meters(self) -> list[Meter]:
        names = {m.name for m in self.config.meters}
        unknown = [m for m in self.request.meters if m not in names]
        if unknown:
            raise ReplayError(f"--meter {', '.join(unknown)}: not in the configuration (meters: {', '.join(sorted(names))})")
        return [m for m in self.config.meters if not self.request.meters or m.name in self.request.meters]

    def cut(self) -> dict[int, int]:
        rows = self.storage.query_rows(
            "SELECT kafka_partition, max(kafka_offset) FROM raw_events"
            " WHERE kafka_topic = {topic:String} GROUP BY kafka_partition",
            {"topic": self.topic},
        )
        return {int(p): int(o) for p, o in rows}

    def customers(self) -> list[str]:
        rows = self.storage.query_rows(
            "SELECT DISTINCT customer_id FROM raw_events WHERE kafka_topic = {topic:String}"
            " AND event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}"
            " AND (length({customers:Array(String)}) = 0 OR customer_id IN {customers:Array(String)}) ORDER BY customer_id",
            {
                "topic": self.topic,
                "from": self.request.range_from,
                "to": self.request.range_to,
                "customers": list(self.request.customers),
            },
        )
        return [r[0] for r in rows]

    def live_watermark(self) -> datetime | None:
        """The newest watermark a live final was emitted at: the live pipeline has passed it."""
        rows = self.storage.query_rows("SELECT maxOrNull(finalized_at_watermark) FROM period_finals WHERE revision = 1")
        value = rows[0][0] if rows else None
        return None if value is None else _aware(value)

    def next_revision(self) -> int:
        rows = self.storage.query_rows(
            "SELECT greatest((SELECT max(revision) FROM replay_runs), (SELECT max(revision) FROM period_finals),"
            " (SELECT max(revision) FROM aggregate_segments), (SELECT max(revision) FROM replay_events), 1)"
        )
        return int(rows[0][0]) + 1

    def run(self) -> ReplayReport:
        request = self.request
        if as_utc(request.range_to) <= as_utc(request.range_from):
            raise ReplayError("--to must be after --from")
        if not request.dry_run and not request.reason.strip():
            raise ReplayError("--reason is required: it is recorded with the revision and every adjustment")
        cut = self.cut()
        if not cut:
            raise ReplayError(f"raw_events holds nothing from topic {self.topic!r}: nothing to replay")
        customers = self.customers()
        revision = self.next_revision()
        report = ReplayReport(revision, request.dry_run, SOURCE, cut, customers, [])
        report.range_seconds = (as_utc(request.range_to) - as_utc(request.range_from)).total_seconds()
        if not customers:
            report.seconds = time.monotonic() - self.started
            return report
        watermark = self.live_watermark()
        scope, ranges = self._scope(customers, watermark)
        report.scope = list(scope)
        stored = self._stored(customers, ranges)
        self._check_cycles(scope, ranges, stored)
        if not request.dry_run:
            self._insert("replay_runs", [self._run_row(report, "started")], RUN_COLUMNS)
        try:
            self._examine(report, ranges)
            totals, segments = self._combine(revision)
            old, absorbed = self._live(scope, stored, revision)
            report.adjustments = diff_finals(old, totals, absorbed)
            report.segments, report.finals = len(segments), len(totals)
            if request.dry_run:
                return report
            self._insert("aggregate_segments", segments, REPLAY_SEGMENT_COLUMNS)
            finalized_at = watermark or datetime.now(UTC)
            self._insert("period_finals", self._final_rows(totals, revision, finalized_at), REPLAY_FINAL_COLUMNS)
            self._insert("adjustments", self._adjustment_rows(report.adjustments, revision), ADJUSTMENT_COLUMNS)
            scope_rows = [
                [revision, c, m, from_epoch_millis(start), from_epoch_millis(end)] for (c, m, start), end in scope.items()
            ]
            self._insert("replay_scope", scope_rows, SCOPE_COLUMNS)  # the commit: one block, atomic
            report.seconds = time.monotonic() - self.started
            self._insert("replay_runs", [self._run_row(report, "committed")], RUN_COLUMNS)
        finally:
            if request.dry_run:
                self.storage.command(f"ALTER TABLE replay_events DROP PARTITION {int(revision)}")
            report.seconds = time.monotonic() - self.started
        return report

    def _scope(
        self, customers: list[str], watermark: datetime | None
    ) -> tuple[dict[ScopeKey, int], dict[str, tuple[datetime, datetime]]]:
        """Every (customer, meter, period start) to rewrite, with its period end; per customer the scope's time range."""
        scope: dict[ScopeKey, int] = {}
        ranges: dict[str, tuple[datetime, datetime]] = {}
        still_open: list[str] = []
        for customer in customers:
            policy = self.config.billing.policy_for(customer)
            periods = periods_overlapping(self.request.range_from, self.request.range_to, policy.cycle)
            for period in open_periods(periods, policy.grace, watermark):
                still_open.append(
                    f"{customer} {period.start.isoformat()}..{period.end.isoformat()}"
                    f" (closes at {(period.end + policy.grace).isoformat()})"
                )
            ranges[customer] = (periods[0].start, periods[-1].end)
            for meter in self.meters:
                for period in periods:
                    scope[(customer, meter.name, epoch_millis(period.start))] = epoch_millis(period.end)
        if still_open:
            shown = "; ".join(still_open[:5]) + (f"; and {len(still_open) - 5} more" if len(still_open) > 5 else "")
            seen = watermark.isoformat() if watermark else "none yet"
            raise ReplayError(
                f"{len(still_open)} billing period(s) in the range are still open (live watermark: {seen}): {shown}. "
                "A replay rewrites closed periods only; narrow --from/--to, or replay once they close "
                "(docs/replay.md: fixing a meter while its period is open)."
            )
        return scope, ranges

    def _stored(self, customers: list[str], ranges: dict[str, tuple[datetime, datetime]]) -> list[tuple[Any, ...]]:
        """The visible finals and segment periods of the scope's customers and meters (``replay_scope_live.sql``)."""
        return self.storage.query_rows(
            sql_of("replay_scope_live"),
            {
                "customers": customers,
                "meters": [m.name for m in self.meters],
                "from": min(r[0] for r in ranges.values()),
                "to": max(r[1] for r in ranges.values()),
            },
        )

    @staticmethod
    def _check_cycles(
        scope: dict[ScopeKey, int], ranges: dict[str, tuple[datetime, datetime]], stored: list[tuple[Any, ...]]
    ) -> None:
        """Refuse when stored periods in the scope do not match the configured cycle (a changed billing cycle)."""
        starts = set(scope)
        mismatched = sorted(
            {
                f"{c} {m} {_aware(start).isoformat()}"
                for c, m, _g, _a, start, _end, *_rest in stored
                if ranges[c][0] <= _aware(start) < ranges[c][1] and (c, m, epoch_millis(_aware(start))) not in starts
            }
        )
        if mismatched:
            raise ReplayError(
                f"stored periods do not match the configured billing cycle: {', '.join(mismatched[:5])}. "
                "Changing a customer's cycle or time zone is a new deployment, not a replay (docs/replay.md)."
            )

    def _examine(self, report: ReplayReport, ranges: dict[str, tuple[datetime, datetime]]) -> None:
        customers = list(ranges)
        base = {
            "revision": report.revision,
            "topic": self.topic,
            "skew_ms": int(self.config.pipeline.allowed_future_skew.total_seconds() * 1000),
            "cut_partitions": list(report.cut),
            "cut_offsets": [report.cut[p] for p in report.cut],
            **_meter_parameters(self.meters),
        }
        sql = sql_of("replay_examine")
        for index in range(0, len(customers), CUSTOMER_BATCH):
            batch = customers[index : index + CUSTOMER_BATCH]
            self.storage.command(
                sql,
                parameters={
                    **base,
                    "customers": batch,
                    "scope_from": [ranges[c][0] for c in batch],
                    "scope_to": [ranges[c][1] for c in batch],
                },
            )
            # progress: (event, meter) decisions so far, from the part counters (cheap); exact counts follow
            decided = self.storage.query_rows(
                "SELECT count() FROM replay_events WHERE revision = {r:UInt32}", {"r": report.revision}
            )[0][0]
            report.events_examined = int(decided)
            self.on_progress(
                Progress(
                    "examine",
                    min(index + CUSTOMER_BATCH, len(customers)),
                    len(customers),
                    report.events_examined,
                    time.monotonic() - self.started,
                )
            )
        report.events_examined = int(
            self.storage.query_rows(
                "SELECT uniqExact(customer_id, event_id) FROM replay_events WHERE revision = {r:UInt32}", {"r": report.revision}
            )[0][0]
        )
        for refusal, count in self.storage.query_rows(
            "SELECT refusal, count() FROM replay_events WHERE revision = {r:UInt32} GROUP BY refusal",
            {"r": report.revision},
        ):
            if refusal:
                report.refusals[str(refusal)] += int(count)
        report.events_counted = int(
            self.storage.query_rows(
                "SELECT uniqExact(customer_id, event_id) FROM replay_events WHERE revision = {r:UInt32} AND refusal = ''",
                {"r": report.revision},
            )[0][0]
        )

    def _combine(self, revision: int) -> tuple[dict[FinalKey, NewTotal], list[list[Any]]]:
        meters = {m.name: m for m in self.meters}
        segments: list[list[Any]] = []
        minutes: list[tuple[FinalKey, int, Partial]] = []
        for customer, meter_name, values, minute, count, total, hi, lo, distinct, latest in self.storage.query_rows(
            sql_of("replay_minutes"), {"revision": revision}
        ):
            meter = meters[meter_name]
            policy = self.config.billing.policy_for(customer)
            minute = _aware(minute)
            start_ms, end_ms = period_bounds(epoch_millis(minute), policy.cycle)
            partial = minute_partial(
                meter.aggregation, int(count), total, hi, lo, distinct, (int(latest[0]), str(latest[1]), latest[2])
            )
            key = group_key(meter.group_by, values)
            minutes.append(((customer, meter.name, key, start_ms), end_ms, partial))
            segments.append(
                [
                    customer,
                    meter.name,
                    key,
                    meter.aggregation.value,
                    minute,
                    from_epoch_millis(local_day_start_ms(epoch_millis(minute), policy.cycle.timezone)),
                    from_epoch_millis(start_ms),
                    from_epoch_millis(end_ms),
                    f"replay:{revision}",
                    revision,
                    partial.result(),
                    partial.count,
                    partial.total,
                    partial.extreme if meter.aggregation is Aggregation.MAX else None,
                    partial.extreme if meter.aggregation is Aggregation.MIN else None,
                    sorted(partial.distinct),
                    partial.latest[0] if partial.latest else None,
                    partial.latest[2] if partial.latest else None,
                    revision,
                ]
            )
        return period_totals(minutes), segments

    def _live(
        self, scope: dict[ScopeKey, int], stored: list[tuple[Any, ...]], revision: int
    ) -> tuple[dict[FinalKey, OldFinal], dict[FinalKey, Absorbed]]:
        in_scope = set(scope)
        old: dict[FinalKey, OldFinal] = {}
        for c, m, g, agg, start, end, value, count, rev, is_final in stored:
            start_ms = epoch_millis(_aware(start))
            if is_final and (c, m, start_ms) in in_scope:
                old[(c, m, g, start_ms)] = OldFinal(str(agg), epoch_millis(_aware(end)), value, int(count), int(rev))
        absorbed: dict[FinalKey, Absorbed] = {}
        for c, m, g, start, n, value in self.storage.query_rows(sql_of("replay_superseded"), {"revision": revision}):
            start_ms = epoch_millis(_aware(start))
            if (c, m, start_ms) in in_scope:
                absorbed[(c, m, g, start_ms)] = Absorbed(int(n), value if value is not None else Decimal(0))
        return old, absorbed

    # --- rows ---------------------------------------------------------------------------------------
    @staticmethod
    def _final_rows(totals: dict[FinalKey, NewTotal], revision: int, watermark: datetime) -> list[list[Any]]:
        return [
            [
                c,
                m,
                g,
                t.aggregation,
                from_epoch_millis(s),
                from_epoch_millis(t.period_end_ms),
                t.partial.result(),
                t.partial.count,
                watermark,
                revision,
            ]
            for (c, m, g, s), t in sorted(totals.items())
        ]

    def _adjustment_rows(self, adjustments: list[Adjustment], revision: int) -> list[list[Any]]:
        return [
            [
                a.customer_id,
                a.meter,
                a.group_key,
                a.aggregation,
                from_epoch_millis(a.period_start_ms),
                from_epoch_millis(a.period_end_ms),
                a.old_revision,
                revision,
                a.old_total,
                a.new_total,
                a.old_event_count,
                a.new_event_count,
                a.superseded_corrections,
                a.superseded_correction_value,
                self.request.reason,
            ]
            for a in adjustments
        ]

    def _run_row(self, report: ReplayReport, state: str) -> list[Any]:
        now = datetime.now(UTC)
        return [
            report.revision,
            state,
            {"started": 1, "committed": 2}[state],
            now if state == "started" else datetime.fromtimestamp(time.time() - report.seconds, UTC),
            now,
            as_utc(self.request.range_from),
            as_utc(self.request.range_to),
            list(self.request.customers),
            [m.name for m in self.meters],
            self.request.reason,
            report.source,
            config_fingerprint(self.config),
            report.cut,
            report.events_examined,
            len(report.scope),
            len(report.adjustments),
            report.seconds,
        ]

    def _insert(self, table: str, rows: list[list[Any]], columns: list[str]) -> None:
        if rows:
            self.storage.client.insert(table, rows, column_names=columns)


def replay(
    storage: Storage, config: Config, request: ReplayRequest, on_progress: Callable[[Progress], None] | None = None
) -> ReplayReport:
    """Run one replay (see the module docstring); raises :class:`ReplayError` for a replay that cannot run."""
    return Replay(storage, config, request, on_progress).run()
