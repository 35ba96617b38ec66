"""The finalization operator's stored state: its format, and state written by earlier versions."""

from __future__ import annotations

import pickle
from datetime import timedelta
from decimal import Decimal

import pytest

from jobs.finalize import STATE_FORMAT, _KeyState, decode_state, encode_state
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
