"""The finalization operator's stored state: its format, and state written by earlier versions."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from jobs.config import load_config
from jobs.finalize import (
    NO_PARTITION,
    PROCESSING_ERRORS,
    STATE_FORMAT,
    FinalizeFunction,
    _KeyState,
    decode_state,
    encode_state,
    processing_error_json,
)
from jobs.metrics import FINALIZE_METRICS
from udfs.aggregators import Partial
from udfs.ledger import PeriodLedger, _OpenPeriod
from udfs.meters import Aggregation
from udfs.periods import BillingCycle, PeriodKind

#: ``pickle.dumps(_KeyState(...))`` as jobs/finalize.py stored it up to af7a27d: a LATEST ledger of
#: one open period (Asia/Kolkata, anchor 31, 48 h grace) and one open minute. Savepoints and
#: retained checkpoints of those versions hold such bytes; a new job must still read them.
STORED_BEFORE_THE_FORMAT_TAG = bytes.fromhex(
    "80059580020000000000008c0d6a6f62732e66696e616c697a65948c095f4b657953746174659493942981947d94288c066c"
    "6564676572948c0b756466732e6c6564676572948c0c506572696f644c65646765729493942981947d94288c0b6167677265"
    "676174696f6e948c0b756466732e6d6574657273948c0b4167677265676174696f6e9493948c066c61746573749485945294"
    "8c056379636c65948c0c756466732e706572696f6473948c0c42696c6c696e674379636c659493942981947d94288c046b69"
    "6e649468138c0a506572696f644b696e649493948c056d6f6e746894859452948c0874696d657a6f6e65948c0c417369612f"
    "4b6f6c6b617461948c06616e63686f72944b1f75628c056772616365948c086461746574696d65948c0974696d6564656c74"
    "619493944b024b004b00879452948c0c6f70656e5f706572696f6473947d948a064088ac759b0168068c0b5f4f70656e5065"
    "72696f649493942981947d94288c06656e645f6d73948a0640ac51159c018c077061727469616c948c10756466732e616767"
    "72656761746f7273948c075061727469616c9493942981947d9428680b68118c05636f756e74944b038c05746f74616c948c"
    "07646563696d616c948c07446563696d616c9493948c013094859452948c0765787472656d65944e8c0864697374696e6374"
    "94289194680f8a0600a8da769b018c03652d379468388c05322e3530309485945294879475628c0776657273696f6e944b04"
    "8c056469727479948875627375628c0c6f70656e5f6d696e75746573947d948a0600a8da769b0168312981947d9428680b68"
    "1168344b016835683b683c4e683d289194680f8a0600a8da769b01683f68388c05322e3530309485945294879475627375622e"
)


def sample_state() -> _KeyState:
    ledger = PeriodLedger(Aggregation.LATEST, BillingCycle(PeriodKind.MONTH, "Asia/Kolkata", 31), timedelta(hours=48))
    latest = (1767225600000, "e-7", Decimal("2.500"))
    ledger.open_periods[1767205800000] = _OpenPeriod(1769884200000, Partial(Aggregation.LATEST, 3, latest=latest), 4, True)
    return _KeyState(ledger, {1767225600000: Partial(Aggregation.LATEST, 1, latest=latest)})


def test_state_written_before_the_format_tag_still_restores() -> None:
    assert decode_state(STORED_BEFORE_THE_FORMAT_TAG) == sample_state()


def test_state_round_trips_through_its_stored_form() -> None:
    state = sample_state()
    stored = encode_state(state)
    assert decode_state(stored) == state
    assert pickle.loads(stored)[0] == STATE_FORMAT
    # plain values only: the stored bytes name no class, so refactoring one cannot break a savepoint
    assert b"udfs" not in stored and b"jobs" not in stored and b"decimal" not in stored


def test_state_of_a_newer_format_is_refused_with_the_fix() -> None:
    stored = pickle.dumps((STATE_FORMAT + 1, (), ()))
    with pytest.raises(ValueError, match="newer than this job"):
        decode_state(stored)


class _Value:
    def __init__(self) -> None:
        self.stored: Any = None

    def value(self) -> Any:
        return self.stored

    def update(self, value: Any) -> None:
        self.stored = value

    def clear(self) -> None:
        self.stored = None


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self) -> None:
        self.count += 1


class _Context:
    def __init__(self, key: tuple[str, str, str], watermark: int) -> None:
        self.key, self.watermark = key, watermark
        self.timers: list[int] = []

    def timer_service(self) -> _Context:
        return self

    def current_watermark(self) -> int:
        return self.watermark

    def register_event_time_timer(self, at: int) -> None:
        self.timers.append(at)

    def get_current_key(self) -> tuple[str, str, str]:
        return self.key


def finalize_function() -> FinalizeFunction:
    config = load_config(Path(__file__).resolve().parents[2] / "config" / "metering.example.yaml", env={})
    function = FinalizeFunction(config)
    function.state, function.final_through = _Value(), _Value()
    function.counters = {name: _Counter() for name in FINALIZE_METRICS}
    return function


def test_a_partial_finalization_fails_on_becomes_a_dead_letter_and_the_next_one_is_processed() -> None:
    """No partial can fail the job: the one that throws is a dead letter (processing_error), the state is unchanged."""
    function = finalize_function()
    meter = function.config.meters[0]
    minute = 1_767_225_600_000
    good = ("acme", meter.name, "{}", minute, minute + 60_000, 2, "3", "2", "1", None, None, "", None)
    bad = ("acme", meter.name, "{}", minute, minute + 60_000, 1, "not a number", None, None, None, None, "", None)
    context = _Context(("acme", meter.name, "{}"), minute - 1)

    [(tag, dead_letter)] = list(function.process_element(bad, context))
    assert tag is PROCESSING_ERRORS and function.state.value() is None and context.timers == []
    record = json.loads(dead_letter)
    payload = json.loads(base64.b64decode(record["payload_base64"]))
    assert (record["reason"], record["customer_id"], record["meter"], record["kafka_partition"]) == (
        "processing_error",
        "acme",
        meter.name,
        NO_PARTITION,
    )
    assert payload["total"] == "not a number" and payload["error"].startswith("InvalidOperation")
    assert record["payload_size"] == len(base64.b64decode(record["payload_base64"]))
    assert function.counters["meteringProcessingErrors"].count == 1

    outputs = list(function.process_element(good, context))
    assert len(outputs) == 1 and isinstance(outputs[0], str) and json.loads(outputs[0])["event_count"] == 2
    assert function.state.value() is not None and len(context.timers) == 1


def test_the_same_failure_gives_the_same_dead_letter_key() -> None:
    """Replayed after a restore, a failure collapses onto its first dead letter (same partition and offset)."""
    error = ValueError("boom")
    first = json.loads(processing_error_json({"customer_id": "acme", "meter": "m"}, error))
    again = json.loads(processing_error_json({"customer_id": "acme", "meter": "m"}, error))
    other = json.loads(processing_error_json({"customer_id": "acme", "meter": "n"}, error))
    assert (first["kafka_partition"], first["kafka_offset"]) == (again["kafka_partition"], again["kafka_offset"])
    assert first["kafka_offset"] != other["kafka_offset"] and 0 <= first["kafka_offset"] < 2**63
