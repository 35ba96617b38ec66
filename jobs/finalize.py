"""The finalization operator: :class:`udfs.ledger.PeriodLedger` wrapped in a keyed Flink function.

Input: partials of one (customer, meter, group_key) key — one row per step of a minute from the
group window, holding that step's on-time events (``window_end_ms`` > 0), and single-event rows of
late events (``window_end_ms`` = -1, with the watermark of the Kafka partition they were read from,
``partition_wm_ms``). A late event is a correction when its period's end + grace is at or behind
the operator's watermark or its partition's. Outputs (JSON strings):

- main output: ``aggregate`` rows (one per minute segment: the on-time running value of the
  minute with its step end as version, or one late event), annotated with the customer's local
  day and billing period;
- side output ``finals``: one row per (key, period), once, when the watermark passes end + grace;
- side output ``corrections``: partials that arrived for an already final period.

State per key: the open periods and the running partial of each open minute (plain tuples,
pickled, in one ``ValueState``: :func:`encode_state`), cleared by the finalization timer when
nothing is open; plus the timestamp of the key's newest finalization (one long, kept: it decides
finality right after a restore).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from jobs.config import Config
from jobs.metrics import FINALIZE_METRICS
from jobs.sql import PARTIAL_COLUMNS, SEP
from udfs.aggregators import EncodedPartial, Partial, decode, encode, merge
from udfs.ledger import (
    Correction,
    EncodedLedger,
    Final,
    MinuteChange,
    PeriodLedger,
    decode_ledger,
    encode_ledger,
    local_day_start_ms,
)
from udfs.meters import Aggregation

FINALS = OutputTag("finals", Types.STRING())
CORRECTIONS = OutputTag("corrections", Types.STRING())
#: Dead letters (reason ``processing_error``) of partials and timers the operator failed on.
PROCESSING_ERRORS = OutputTag("processing-errors", Types.STRING())
#: The names of a partial row's fields (jobs/sql.py), for its dead letter.
PARTIAL_FIELDS = tuple(name.strip() for name in PARTIAL_COLUMNS.split(","))
#: ``kafka_partition`` of such a dead letter: it comes from no single Kafka record. Its
#: ``kafka_offset`` is a digest of its payload, so a replayed failure collapses onto the same key.
NO_PARTITION = 2**32 - 1


def processing_error_json(what: dict[str, Any], error: BaseException) -> str:
    """A dead letter (the job's dead-letter record format) for a partial or a timer the operator failed on."""
    payload = json.dumps({**what, "error": f"{type(error).__name__}: {error}"}, default=str, sort_keys=True).encode()
    offset = int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 1
    return json.dumps(
        {
            "reason": "processing_error",
            "meter": what.get("meter"),
            "customer_id": what.get("customer_id"),
            "event_id": what.get("event_id") or None,
            "payload_base64": base64.b64encode(payload).decode(),
            "payload_size": len(payload),
            "kafka_partition": NO_PARTITION,
            "kafka_offset": offset,
            "kafka_ts": None,
        }
    )


def partial_from_row(aggregation: Aggregation, row: Any) -> Partial:
    """Decode a partial row (see jobs/sql.PARTIAL_COLUMNS) into an exact :class:`Partial`."""
    count = int(row[5])
    if row[6] is None and count and aggregation is Aggregation.SUM and int(row[4]) > 0:
        # Flink's DECIMAL(38, 9) SUM gives NULL when it overflows: never read that as zero.
        raise ArithmeticError(f"the sum of {count} values of one step exceeds DECIMAL(38, 9)")
    total = Decimal(row[6]) if row[6] is not None else Decimal(0)
    extreme = row[7] if aggregation is Aggregation.MAX else row[8]
    distinct = frozenset(row[9].split(SEP)) if aggregation is Aggregation.UNIQUE_COUNT and row[9] is not None else frozenset()
    latest = None
    if aggregation is Aggregation.LATEST and row[10]:
        millis, rest = row[10].split(SEP, 1)
        event_id, value = rest.rsplit(SEP, 1)
        latest = (int(millis), event_id, Decimal(value))
    return Partial(
        aggregation,
        count,
        total=total if aggregation is Aggregation.SUM else Decimal(0),
        extreme=Decimal(extreme) if extreme is not None and aggregation in (Aggregation.MAX, Aggregation.MIN) else None,
        distinct=distinct,
        latest=latest,
    )


def partial_json(partial: Partial) -> dict[str, Any]:
    """The wire form of a partial: exact decimals as strings."""
    return {
        "value": str(partial.result()),
        "event_count": partial.count,
        "sum": str(partial.total),
        "max": None if partial.extreme is None or partial.aggregation is not Aggregation.MAX else str(partial.extreme),
        "min": None if partial.extreme is None or partial.aggregation is not Aggregation.MIN else str(partial.extreme),
        "distinct_values": sorted(partial.distinct),
        "latest_ms": partial.latest[0] if partial.latest else None,
        "latest_value": str(partial.latest[2]) if partial.latest else None,
    }


@dataclass
class _KeyState:
    ledger: PeriodLedger
    open_minutes: dict[int, Partial] = field(default_factory=dict)


#: The stored form of a key's state: a format tag, the ledger, then ``(minute_ms, partial)`` per open minute.
EncodedState = tuple[int, EncodedLedger, tuple[tuple[int, EncodedPartial], ...]]
#: Tag of :data:`EncodedState`. Before it, the state was the pickled :class:`_KeyState` itself
#: (savepoints of those versions still restore: :func:`decode_state` reads both).
STATE_FORMAT = 2


def encode_state(state: _KeyState) -> bytes:
    """A key's state as the bytes kept in Flink state: plain tuples, pickled."""
    minutes = tuple((minute_ms, encode(partial)) for minute_ms, partial in sorted(state.open_minutes.items()))
    encoded: EncodedState = (STATE_FORMAT, encode_ledger(state.ledger), minutes)
    return pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL)


def decode_state(stored: bytes) -> _KeyState:
    """The inverse of :func:`encode_state`; also reads a pickled :class:`_KeyState` (state written before the format tag)."""
    loaded = pickle.loads(stored)
    if isinstance(loaded, _KeyState):
        return loaded
    tag, ledger, minutes = loaded
    if tag != STATE_FORMAT:
        raise ValueError(f"finalization state format {tag} is newer than this job ({STATE_FORMAT}): run the newer job version")
    decoded = decode_ledger(ledger)
    return _KeyState(decoded, {minute_ms: decode(decoded.aggregation, partial) for minute_ms, partial in minutes})


class FinalizeFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by (customer_id, meter, group_key)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.aggregation_of = {m.name: m.aggregation for m in config.meters}

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("ledger", Types.PICKLED_BYTE_ARRAY()))
        # The newest finalization timer that fired for this key; kept when the ledger is cleared
        # (one long per key that ever had a final). See _finality_watermark.
        self.final_through = runtime_context.get_state(ValueStateDescriptor("final_through", Types.LONG()))
        # The job's own counters (Flink metrics, read by `metering job status`; see FINALIZE_METRICS).
        metrics = runtime_context.get_metrics_group()
        self.counters = {name: metrics.counter(name) for name in FINALIZE_METRICS}

    def _load(self, customer_id: str, meter: str) -> _KeyState:
        stored = self.state.value()
        if stored is not None:
            return decode_state(stored)
        policy = self.config.billing.policy_for(customer_id)
        return _KeyState(PeriodLedger(self.aggregation_of[meter], policy.cycle, policy.grace))

    def _save(self, state: _KeyState, watermark: int) -> None:
        # A minute whose end the watermark has passed gets no more steps (the group window fired
        # them all before forwarding that watermark); a minute's last step may have had no events.
        for minute_ms in [m for m in state.open_minutes if m + 60_000 <= watermark]:
            del state.open_minutes[minute_ms]
        if state.ledger.open_periods or state.open_minutes:
            self.state.update(encode_state(state))
        else:
            self.state.clear()

    def _finality_watermark(self, watermark: int) -> int:
        """The watermark that decides whether a period is final: the operator's, or this key's last finalization if ahead.

        Flink does not restore an operator's watermark: after a restore it starts from nothing and
        is rebuilt from the sources. Until it passes where it was, a row for a period this key
        finalized before the restore would look open and be finalized a second time (a second
        final with only the late rows) instead of becoming a correction.
        """
        through = self.final_through.value()
        return watermark if through is None or through <= watermark else int(through)

    def process_element(self, row: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        """One partial; if anything about it fails, it alone becomes a dead letter and the job goes on.

        The key's state is written only at the end of :meth:`_process`, so a failed partial leaves
        it as it was.
        """
        try:
            outputs = list(self._process(row, ctx))
        except Exception as exc:
            self.counters["meteringProcessingErrors"].inc()
            what = dict(zip(PARTIAL_FIELDS, (None if v is None else str(v) for v in row), strict=False))
            yield PROCESSING_ERRORS, processing_error_json(what, exc)
            return
        yield from outputs

    def _process(self, row: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        customer_id, meter, group_key, minute_ms, window_end_ms = row[0], row[1], row[2], int(row[3]), int(row[4])
        state = self._load(customer_id, meter)
        watermark = ctx.timer_service().current_watermark()  # for pruning open minutes: the window's progress
        partial = partial_from_row(state.ledger.aggregation, row)
        late_event_id = ""
        if window_end_ms > 0:  # one step's events of a minute: the minute's segment is its running value
            previous = state.open_minutes.pop(minute_ms, None)
            segment_value = partial if previous is None else merge(previous, partial)
            if window_end_ms < minute_ms + 60_000:
                state.open_minutes[minute_ms] = segment_value  # until its last step, or pruned by _save
            segment, version = "on_time", window_end_ms
        else:
            late_event_id = str(row[11])
            segment, version, segment_value = f"late:{late_event_id}", 1, partial  # one row per late event
            self.counters["meteringLateEvents"].inc()
        start, end = state.ledger.period_of(minute_ms)
        was_open = start in state.ledger.open_periods
        finality = self._finality_watermark(watermark)
        if window_end_ms <= 0 and row[12] is not None:
            # A late event is judged by its own partition's watermark too (docs/semantics.md,
            # "Backfills"): the job's is the minimum over partitions and depends on how the source
            # interleaved them; the partition's depends only on that partition's order.
            finality = max(finality, int(row[12]))
        correction = state.ledger.apply(MinuteChange(minute_ms, partial), finality)
        if correction is not None:
            self.counters["meteringCorrectionsEmitted"].inc()
            yield CORRECTIONS, self._correction_json(customer_id, meter, group_key, correction, late_event_id)
        else:
            if not was_open:
                # One timer per open period, registered when it opens: it stays registered (and in
                # checkpoints) until it fires and on_timer closes the period. Re-registering it for
                # every row would cost a call into the JVM each time and change nothing.
                ctx.timer_service().register_event_time_timer(end + state.ledger.grace_ms)
            self.counters["meteringAggregateUpdates"].inc()
            yield self._aggregate_json(customer_id, meter, group_key, minute_ms, start, end, segment, version, segment_value)
        self._save(state, watermark)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        """Finalize the key's periods due at ``timestamp``; a failure becomes a dead letter, the periods stay open."""
        try:
            outputs = list(self._finalize(timestamp, ctx))
        except Exception as exc:
            self.counters["meteringProcessingErrors"].inc()
            customer_id, meter, group_key = ctx.get_current_key()
            what = {"customer_id": customer_id, "meter": meter, "group_key": group_key, "timer_ms": timestamp}
            yield PROCESSING_ERRORS, processing_error_json(what, exc)
            return
        yield from outputs

    def _finalize(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        customer_id, meter, group_key = ctx.get_current_key()
        state = self._load(customer_id, meter)
        for final in state.ledger.finalize(timestamp):
            self.counters["meteringFinalsEmitted"].inc()
            yield FINALS, self._final_json(customer_id, meter, group_key, final)
        self.final_through.update(timestamp)  # timers fire in order: the newest
        self._save(state, timestamp)

    # --- wire formats -----------------------------------------------------------------------------
    @staticmethod
    def _record(customer_id: str, meter: str, group_key: str, partial: Partial, **fields: Any) -> str:
        """One output record: the key, the aggregation, ``fields``, then the partial's values (exact text)."""
        record = {"customer_id": customer_id, "meter": meter, "group_key": group_key, "aggregation": partial.aggregation.value}
        return json.dumps({**record, **fields, **partial_json(partial)}, separators=(",", ":"))

    def _aggregate_json(
        self,
        customer_id: str,
        meter: str,
        group_key: str,
        minute_ms: int,
        start: int,
        end: int,
        segment: str,
        version: int,
        partial: Partial,
    ) -> str:
        timezone = self.config.billing.policy_for(customer_id).cycle.timezone
        return self._record(
            customer_id,
            meter,
            group_key,
            partial,
            minute_ms=minute_ms,
            day_start_ms=local_day_start_ms(minute_ms, timezone),
            period_start_ms=start,
            period_end_ms=end,
            segment=segment,
            version=version,
        )

    def _final_json(self, customer_id: str, meter: str, group_key: str, final: Final) -> str:
        return self._record(
            customer_id,
            meter,
            group_key,
            final.partial,
            period_start_ms=final.period_start_ms,
            period_end_ms=final.period_end_ms,
            finalized_at_watermark_ms=final.finalized_at_watermark_ms,
        )

    def _correction_json(self, customer_id: str, meter: str, group_key: str, correction: Correction, event_id: str) -> str:
        """A correction; ``event_id`` names the late event it carries ('' for an on-time window step)."""
        return self._record(
            customer_id,
            meter,
            group_key,
            correction.partial,
            period_start_ms=correction.period_start_ms,
            period_end_ms=correction.period_end_ms,
            minute_ms=correction.minute_ms,
            retract=correction.retract,
            event_id=event_id,
        )
