"""What a void or an amend does to what the pipeline counted: the rules the job's dedup state applies.

The job applies them in its keyed dedup state (``udfs/jvm``, FirstSeen, whose rules are
``dev.metering.rules.DedupState``; tests/flink/test_first_seen.py runs the cases below through it);
this module is the same state machine in plain Python, for the independent recomputations
(jobs/demo.py) and the tests. tests/unit/test_amendment_agreement.py feeds both the same sequences.
Per (customer_id, event_id), in Kafka order:

* the first occurrence of an event is counted; when every meter of its type is a sum or a count
  (:func:`amendable_types`), what it counted is kept for amendments;
* an amendment whose id the key has processed is ``repeated``: a retry, no effect, no dead letter;
* otherwise it is refused with ``unknown_event`` (no event on the key: never seen within the dedup
  retention, or the amendment came first), ``already_voided`` or ``not_amendable``;
* or ``applied``: a void retracts what is counted (a contribution with sign -1); an amend retracts it
  and counts the event with the new quantity (sign +1), which is then what the key counts.

Retractions and replacements are counted like late events at the amendment's place in the stream:
into the period if it is still open, as corrections once it is final.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from schemas.amendments import AMEND, Amendment
from schemas.validate import UsageEvent
from udfs.meters import Meter

APPLIED = "applied"
REPEATED = "repeated"
UNKNOWN_EVENT = "unknown_event"
ALREADY_VOIDED = "already_voided"
NOT_AMENDABLE = "not_amendable"
#: The outcomes that are dead letters (the job's reasons).
REFUSALS = (UNKNOWN_EVENT, NOT_AMENDABLE, ALREADY_VOIDED)


def amendable_types(meters: Iterable[Meter]) -> frozenset[str]:
    """Event types every meter of which is a sum or a count: only their contributions can be taken back exactly."""
    by_type: dict[str, bool] = {}
    for meter in meters:
        by_type[meter.event_type] = by_type.get(meter.event_type, True) and meter.aggregation.amendable
    return frozenset(t for t, amendable in by_type.items() if amendable)


@dataclass(frozen=True)
class Contribution:
    """An event counted ``sign`` times (+1 a replacement, -1 a retraction)."""

    sign: int
    event: UsageEvent


@dataclass
class _Key:
    counted: UsageEvent | None  # None: its type is not amendable
    voided: bool = False
    processed: set[str] = field(default_factory=set)


@dataclass
class AmendmentLedger:
    """The dedup keys' memory: :meth:`first_seen` for each first occurrence, :meth:`apply` for each amendment."""

    amendable: frozenset[str]
    _keys: dict[tuple[str, str], _Key] = field(default_factory=dict)

    def first_seen(self, event: UsageEvent) -> None:
        """Record an event's first occurrence (a duplicate never reaches here)."""
        counted = event if event.event_type in self.amendable else None
        self._keys[(event.customer_id, event.event_id)] = _Key(counted)

    def apply(self, amendment: Amendment) -> tuple[str, list[Contribution]]:
        """The outcome of an amendment and the contributions it adds (none unless ``applied``)."""
        key = self._keys.get((amendment.customer_id, amendment.event_id))
        if key is None:
            return UNKNOWN_EVENT, []
        if amendment.amendment_id in key.processed:
            return REPEATED, []
        key.processed.add(amendment.amendment_id)
        if key.voided:
            return ALREADY_VOIDED, []
        if key.counted is None:
            return NOT_AMENDABLE, []
        retraction = Contribution(-1, key.counted)
        if amendment.action == AMEND:
            assert amendment.quantity is not None
            key.counted = replace(key.counted, quantity=amendment.quantity)
            return APPLIED, [retraction, Contribution(1, key.counted)]
        key.voided = True
        return APPLIED, [retraction]
