"""What every variant of bench/compare.py agrees on: the event rule, the output rows, the shapes.

Standard library only: the peers (run as their own processes) and the harness import it, and so
do the unit tests (no broker, no peer packages).

The rule a peer applies (the project's schema is stricter; the generated lines are either valid
under both or broken in a way both refuse): a line is a JSON object with non-empty string
``customer_id`` and ``event_id``, an ``event_type`` among :data:`METERS`, an RFC 3339 UTC
``timestamp`` and a decimal-string ``quantity``. The first occurrence of (customer_id, event_id)
counts; later ones (retries, conflicting retries included) do not. Totals are the exact
``Decimal`` sum of quantities per (customer, meter = event_type, UTC minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

#: The event types, each one meter of its own (``sum`` of the quantity, no group-by).
METERS = ("api_call", "tokens", "gpu_seconds", "bytes_out")
#: Customers' billing time zones in the project's configuration (whole, half and quarter hours:
#: a UTC minute is a minute in every one of them).
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Auckland")
#: How late (event time) a delayed event arrives at most, and the lateness every windowed peer
#: allows (its watermark delay / grace): larger than the delay plus the jitter, so no variant may
#: drop a generated event as too late.
MAX_DELAY = timedelta(minutes=5)
JITTER = timedelta(seconds=20)
ALLOWED_LATENESS = timedelta(minutes=6)
LATENESS_MS = int(ALLOWED_LATENESS.total_seconds() * 1000)
#: The backlog's event time ends this long before it is generated; one tick event per partition
#: ``TICK_AFTER`` after the end closes every peer's last windows (they are valid events, counted).
END_BEFORE_NOW = timedelta(minutes=15)
TICK_AFTER = timedelta(minutes=10)
MINUTE_MS = 60_000
#: Tick customers' own minutes are the last of their partitions: no later event closes them in a
#: peer that waits for event time, so the checksum leaves them out (their events still count).
TICK_PREFIX = "tick-"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, str, int]  # customer, meter, minute start (epoch ms, UTC)


@dataclass(frozen=True)
class Shape:
    name: str
    customers: int
    #: events per second of event time: events per (customer, minute) = rate * 60 / customers
    nominal_rate: int


SHAPES = {
    # 500 customers at 5,000 events/s: ~600 events per (customer, minute)
    "dense": Shape("dense", 500, 5000),
    # 100,000 customers at 1,000 events/s: ~0.6 events per (customer, minute)
    "sparse": Shape("sparse", 100_000, 1000),
}


def timezone_of(index: int) -> str:
    return TIMEZONES[index % len(TIMEZONES)]


def customer_name(shape: Shape, index: int) -> str:
    return f"{shape.name[0]}{index:06d}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quantity(rng: random.Random, kind: str) -> str:
    if kind == "api_call":
        return "1"
    if kind == "tokens":
        return str(rng.randrange(1, 5000))
    if kind == "gpu_seconds":
        return f"{rng.randrange(0, 3600)}.{rng.randrange(1000):03d}"
    return str(rng.randrange(1, 10**9))  # bytes_out


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


#: Broken lines (about 1 % of the lines): what every variant refuses.
MALFORMED = (
    lambda e: _dumps(e)[:-9],  # truncated JSON
    lambda e: _dumps({k: v for k, v in e.items() if k != "quantity"}),  # no quantity
    lambda e: _dumps({k: v for k, v in e.items() if k != "event_id"}),  # no event_id
    lambda e: _dumps({**e, "event_type": "teleportation"}),  # unknown meter
)


@dataclass
class BacklogStats:
    lines: int = 0
    events: int = 0  # distinct valid events (ticks excluded)
    retries: int = 0
    conflicting_retries: int = 0
    malformed: int = 0
    delayed: int = 0


def backlog(
    shape: Shape, events: int, end: datetime, seed: int = 17, stats: BacklogStats | None = None
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, line) of ``events`` distinct valid events of ``shape`` whose event time ends at ``end``.

    Event time advances at ``shape.nominal_rate`` per second with ±20 s of jitter (out of order);
    about 2 % of the events are held back and sent 1–5 minutes of event time later (late); after
    an event, with probability 0.10 a recent line is sent again (a retry; 1 in 200 retries carries a
    different quantity, a producer bug: the first one counts); about 1 % of the lines are broken
    (:data:`MALFORMED`, an extra line each). Keys are the customer ids (None for a broken line
    without one), so one customer's lines keep their order in one partition.
    """
    stats = stats if stats is not None else BacklogStats()
    rng = random.Random(seed)
    rate = shape.nominal_rate
    recent: deque[tuple[bytes, bytes]] = deque(maxlen=500)
    held: list[tuple[int, bytes, bytes]] = []  # (send after event index, key, line), sorted
    jitter_ms = int(JITTER / timedelta(milliseconds=1))

    def sent(key: bytes | None, line: bytes) -> tuple[bytes | None, bytes]:
        stats.lines += 1
        return key, line

    for n in range(events):
        moment = end - timedelta(seconds=(events - n) / rate) + timedelta(milliseconds=rng.randrange(-jitter_ms, 0))
        customer = customer_name(shape, rng.randrange(shape.customers))
        kind = rng.choices(METERS, (50, 30, 10, 10))[0]
        event = {
            "event_id": f"e{n:09d}",
            "customer_id": customer,
            "event_type": kind,
            "timestamp": rfc3339(moment),
            "quantity": _quantity(rng, kind),
        }
        key, line = customer.encode(), _dumps(event)
        stats.events += 1
        if rng.random() < 0.02:
            delay_s = rng.uniform(60, MAX_DELAY.total_seconds())
            held.append((n + int(delay_s * rate), key, line))
            held.sort()
            stats.delayed += 1
        else:
            yield sent(key, line)
            recent.append((key, line))
        if rng.random() < 0.01:
            broken = rng.choice(MALFORMED)({**event, "event_id": f"x{n:09d}"})
            yield sent(key, broken)
            stats.malformed += 1
        if recent and rng.random() < 0.10:
            retry_key, retry = rng.choice(recent)
            if rng.random() < 0.005:
                changed = json.loads(retry)
                changed["quantity"] = "999999"
                retry = _dumps(changed)
                stats.conflicting_retries += 1
            stats.retries += 1
            yield sent(retry_key, retry)
        while held and held[0][0] <= n:
            _, held_key, held_line = held.pop(0)
            yield sent(held_key, held_line)
    for _, held_key, held_line in held:
        yield sent(held_key, held_line)


def live_line(rng: random.Random, n: int, customer: str, moment: datetime) -> bytes:
    """bench/compare.py's latency mode: the line of live event ``n`` of ``customer`` at ``moment`` (the wall clock at sending).

    A distinct valid event (no retries, no broken lines): the meters and quantities of :func:`backlog`."""
    kind = rng.choices(METERS, (50, 30, 10, 10))[0]
    event = {
        "event_id": f"l{n:09d}",
        "customer_id": customer,
        "event_type": kind,
        "timestamp": rfc3339(moment),
        "quantity": _quantity(rng, kind),
    }
    return _dumps(event)


def tick_line(partition: int, end: datetime) -> tuple[bytes, bytes]:
    """The tick event sent to ``partition`` after the backlog: its event time closes every window of the backlog."""
    customer = f"{TICK_PREFIX}{partition}"
    event = {
        "event_id": "tick",
        "customer_id": customer,
        "event_type": "api_call",
        "timestamp": rfc3339(end + TICK_AFTER),
        "quantity": "1",
    }
    return customer.encode(), _dumps(event)


# --- the event rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    customer_id: str
    event_id: str
    meter: str
    millis: int  # event time, epoch ms
    quantity: Decimal

    @property
    def minute_ms(self) -> int:
        return self.millis - self.millis % MINUTE_MS


def parse_timestamp_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp ending in ``Z`` (ValueError otherwise)."""
    if not text.endswith("Z"):
        raise ValueError(text)
    return (datetime.fromisoformat(text[:-1] + "+00:00") - EPOCH) // timedelta(milliseconds=1)


def event_of(document: Any) -> Event | None:
    """The event a decoded line carries under the rule above, or None if it is refused."""
    if not isinstance(document, dict):
        return None
    customer, event_id, meter = document.get("customer_id"), document.get("event_id"), document.get("event_type")
    timestamp, quantity = document.get("timestamp"), document.get("quantity")
    if not (isinstance(customer, str) and customer and isinstance(event_id, str) and event_id):
        return None
    if meter not in METERS or not isinstance(timestamp, str) or not isinstance(quantity, str):
        return None
    try:
        millis = parse_timestamp_ms(timestamp)
        value = Decimal(quantity)
    except (ValueError, InvalidOperation):
        return None
    if not value.is_finite():
        return None
    return Event(customer, event_id, meter, millis, value)


def parse_line(line: bytes, loads: Callable[[bytes], Any] = json.loads) -> Event | None:
    """The event of a raw line (``loads``: the peer's JSON decoder, orjson's included), or None if it is refused."""
    try:
        return event_of(loads(line))
    except ValueError:  # orjson.JSONDecodeError is one too
        return None


def peer_parser(name: str) -> argparse.ArgumentParser:
    """A peer's command line: the broker, the input topic, the output topic, its consumer group, its lateness."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.peers.{name}")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument(
        "--lateness-ms",
        type=int,
        default=LATENESS_MS,
        help="how far behind the newest event time a minute closes (default: the backlog's allowed lateness; "
        "the latency mode's live events are in order)",
    )
    return parser


def peer_arguments(name: str, argv: list[str] | None, *, state_dir: bool = False) -> argparse.Namespace:
    parser = peer_parser(name)
    if state_dir:
        parser.add_argument("--state-dir", required=True)
    return parser.parse_args(argv)


def missing_extra(name: str, exc: ImportError) -> int:
    print(f"{name}: {exc}; install the bench extra: pip install -e '.[bench]'", file=sys.stderr)
    return 2


# --- the independent recomputation and the checksum ---------------------------------------------


@dataclass
class Recomputation:
    """Expected totals of a backlog, line by line in topic order (one customer's lines in order)."""

    totals: dict[Key, Decimal] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0

    def add(self, line: bytes) -> None:
        event = parse_line(line)
        if event is None:
            self.refused += 1
            return
        identity = (event.customer_id, event.event_id)
        if identity in self.seen:
            self.duplicates += 1
            return
        self.seen.add(identity)
        self.accepted += 1
        key = (event.customer_id, event.meter, event.minute_ms)
        self.totals[key] = self.totals.get(key, Decimal(0)) + event.quantity


def recompute(lines: Iterable[bytes]) -> Recomputation:
    result = Recomputation()
    for line in lines:
        result.add(line)
    return result


def output_row(customer: str, meter: str, minute_ms: int, total: Decimal) -> dict[str, str | int]:
    """A peer's output record: one (customer, meter, minute) sum; several rows of one key add up."""
    return {"customer_id": customer, "meter": meter, "window_start": minute_ms, "total": str(total)}


def window_start_ms(value: Any) -> int:
    """A row's ``window_start``: epoch ms, or ``YYYY-MM-DD HH:MM:SS[.fff]`` / ISO text in UTC (Flink SQL)."""
    if isinstance(value, int):
        return value
    text = str(value).replace(" ", "T").removesuffix("Z")
    return (datetime.fromisoformat(text).replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


def totals_of(rows: Iterable[Mapping[str, Any]]) -> dict[Key, Decimal]:
    """Per key, the sum of the rows' totals (a late update is a row of its own)."""
    totals: dict[Key, Decimal] = {}
    for row in rows:
        key = (str(row["customer_id"]), str(row["meter"]), window_start_ms(row["window_start"]))
        totals[key] = totals.get(key, Decimal(0)) + Decimal(str(row["total"]))
    return totals


def digest(totals: Mapping[Key, Decimal]) -> str:
    """A short fingerprint of totals (keys sorted, values normalised: 1.500 == 1.5)."""
    sha = hashlib.sha256()
    for key in sorted(totals):
        value = totals[key]
        if value == 0:
            continue
        sha.update(f"{key[0]}|{key[1]}|{key[2]}|{value.normalize():f}\n".encode())
    return sha.hexdigest()[:12]


@dataclass(frozen=True)
class Checksum:
    ok: bool
    keys: int
    wrong: int
    missing: int
    extra: int
    digest: str
    example: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"OK ({self.keys:,} keys, {self.digest})"
        return f"MISCOUNT (wrong {self.wrong:,}, missing {self.missing:,}, extra {self.extra:,} of {self.keys:,}; {self.example})"


def checksum(expected: Mapping[Key, Decimal], got: Mapping[Key, Decimal]) -> Checksum:
    """Compare totals exactly (``Decimal`` equality; a zero total and an absent key are the same; ticks left out)."""
    expected = {key: value for key, value in expected.items() if not key[0].startswith(TICK_PREFIX)}
    nonzero = {key: value for key, value in got.items() if value != 0 and not key[0].startswith(TICK_PREFIX)}
    wrong = [key for key in expected if key in nonzero and nonzero[key] != expected[key]]
    missing = [key for key in expected if key not in nonzero and expected[key] != 0]
    extra = [key for key in nonzero if key not in expected]
    example = ""
    if wrong:
        example = f"e.g. {wrong[0]}: got {nonzero[wrong[0]]}, expected {expected[wrong[0]]}"
    elif missing:
        example = f"e.g. {missing[0]} missing, expected {expected[missing[0]]}"
    elif extra:
        example = f"e.g. {extra[0]}: got {nonzero[extra[0]]}"
    return Checksum(
        not (wrong or missing or extra), len(expected), len(wrong), len(missing), len(extra), digest(nonzero), example
    )
