"""The pipeline's configuration: one YAML file, typed, validated at start.

One settings object, :class:`Config`, for every command and process: the pipeline (``kafka``,
``pipeline``, ``billing``, ``meters``), where its data lives (``storage``), the local stack's
folders and ports (``stack``), read access (``access``), the HTTP ingestion service
(``ingest``) and, optionally, the prices of the meters (``rating``: udfs/pricing.py,
docs/pricing.md). Precedence: built-in defaults → the YAML file → environment variables
``METERING__SECTION__KEY`` (double underscores separate path parts, e.g.
``METERING__PIPELINE__DEDUP_RETENTION=3d``, ``METERING__STORAGE__PASSWORD`` or
``METERING__STACK__KAFKA_PORT``). The older single-underscore names (``METERING_HOME``,
``METERING_CLICKHOUSE_URL`` …, :data:`DEPRECATED_ENV`) still work until release
:data:`DEPRECATED_UNTIL`, with a :class:`DeprecatedSetting` warning naming the new one.
Every value is read by the type of the key it sets, from the file and from the environment
alike: text stays text as written (``password: 0123`` is ``"0123"``, not YAML 1.1's octal 83),
integers, booleans and durations are parsed strictly, and every duration has the range in
:data:`DURATIONS`. Unknown keys are errors (a typo must not silently fall back to a default; the
closest known key is suggested), and every problem is reported at once with its path, e.g.::

    meters[2].aggregation: 'avg' must be one of sum, count, max, min, unique_count, latest
    billing.customers.acme.timezone: unknown IANA time zone 'Europe/Berln'
    pipeline.idle_timeot: unknown key; did you mean pipeline.idle_timeout? (set by METERING__PIPELINE__IDLE_TIMEOT)

Whatever building the job would refuse (an interval its SQL cannot express, a parallelism above
its max parallelism, no meters) is refused here, so ``metering config validate`` catches it.
Identifiers matched against events (customer ids, event types, property names) must be values
the event schema allows: one that no event can carry would never match, silently.

``config/metering.example.yaml`` documents every key; a test parses it.

Why one module: every key's reading, range and checks stand together, so a key cannot be added
without its validation; split by section, the checks across sections (the transaction timeout
against the checkpoint interval, the stack's defaults for the broker and the chDB folder) would have
no home.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clickhouse.access import MAX_TOKEN_CHARS, MIN_KEY_CHARS, AccessSettings
from clickhouse.client import Backend, StorageError, StorageSettings
from infra.kafka_security import MECHANISMS, PROTOCOLS, KafkaSecurity
from infra.settings import StackSettings
from schemas.validate import string_rule
from udfs.alerting import AlertRule, AlertSettings, RuleKind, Webhook
from udfs.credits import CreditSettings, Exhaustion, Policy, policy_problems
from udfs.durations import DurationTooLong, format_duration, parse_duration
from udfs.meters import Aggregation, Meter
from udfs.periods import BillingCycle, PeriodKind
from udfs.pricing import (
    CURRENCY_CODE,
    MAX_PLACES,
    MINOR_UNITS,
    ROUNDING_MODES,
    CustomerRating,
    Graduated,
    ModelKind,
    Money,
    Package,
    PackageRounding,
    Percentage,
    PerUnit,
    PriceModel,
    RateCard,
    RatePlan,
    RateVersion,
    Rating,
    Rounding,
    Tier,
    Volume,
)

T = TypeVar("T")
ENV_PREFIX = "METERING__"
#: Upper bound for rescaling (the job's key groups, ``pipeline.max-parallelism``); changing it
#: makes every savepoint unusable. ``pipeline.parallelism`` may not exceed it.
MAX_PARALLELISM = 128


class DeprecatedSetting(FutureWarning):
    """A setting read from a variable of the older style; the message names its replacement."""


#: The release that stops reading :data:`DEPRECATED_ENV`.
DEPRECATED_UNTIL = "0.2.0"
#: Variables of the older style -> the key each sets (its variable is ``METERING__`` + the key's
#: parts in capitals, joined by ``__``).
DEPRECATED_ENV: Mapping[str, str] = {
    "METERING_HOME": "stack.home",
    "METERING_JAR_CACHE": "stack.jar_cache",
    "METERING_UDF_JAR": "stack.udf_jar",
    "METERING_PYTHON": "stack.python",
    "METERING_KAFKA_PORT": "stack.kafka_port",
    "METERING_KAFKA_CONTROLLER_PORT": "stack.kafka_controller_port",
    "METERING_FLINK_REST_PORT": "stack.flink_rest_port",
    "METERING_FLINK_RPC_PORT": "stack.flink_rpc_port",
    "METERING_FLINK_SLOTS": "stack.taskmanager_slots",
    "METERING_CLICKHOUSE_URL": "storage.url",
    "METERING_CLICKHOUSE_USER": "storage.username",
    "METERING_CLICKHOUSE_PASSWORD": "storage.password",
    "METERING_CLICKHOUSE_DATABASE": "storage.database",
    "METERING_CHDB_PATH": "storage.path",
}


def variable_of(key: str) -> str:
    """The environment variable that sets ``key``: ``stack.kafka_port`` -> ``METERING__STACK__KAFKA_PORT``."""
    return ENV_PREFIX + "__".join(part.upper() for part in key.split("."))


class ConfigError(ValueError):
    """Invalid configuration: ``problems`` holds one ``path: message`` per error."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        super().__init__(f"{source} is invalid ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Topics:
    events: str = "usage-events"
    raw: str = "usage-raw"
    aggregates: str = "usage-aggregates"
    finals: str = "usage-finals"
    corrections: str = "usage-corrections"
    dead_letters: str = "usage-dead-letters"

    @property
    def duplicates(self) -> str:
        """The duplicates topic (upserts), named after the events topic."""
        return f"{self.events}{DUPLICATES_SUFFIX}"

    @property
    def amendments(self) -> str:
        """The amendments' outcomes (the audit trail), named after the events topic."""
        return f"{self.events}{AMENDMENTS_SUFFIX}"


DUPLICATES_SUFFIX = "-duplicates"
AMENDMENTS_SUFFIX = "-amendments"
#: The alerts topic and the evaluator's state topic are named after the events topic unless configured
#: (jobs/topics.py); the prepaid credit ledger's topic always is.
ALERTS_SUFFIX = "-alerts"
ALERTS_STATE_SUFFIX = "-alerts-state"
CREDIT_LEDGER_SUFFIX = "-credit-ledger"
#: The evaluator's cost records (``alerts.costs``).
COSTS_SUFFIX = "-costs"
#: Kafka's rule for topic names (its ``Topic.validate``): legal characters, at most 249 of them.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class KafkaSettings:
    #: Default: the local stack's broker (``stack.kafka_port`` on 127.0.0.1).
    bootstrap_servers: str = StackSettings().bootstrap_servers
    topics: Topics = field(default_factory=Topics)
    #: Kafka transaction timeout of the job's exactly-once sinks; must not exceed the broker's
    #: transaction.max.timeout.ms (15 min by default on a stock broker).
    transaction_timeout: timedelta = timedelta(minutes=15)
    consumer_group: str = "metering-job"
    #: How every client authenticates (infra/kafka_security.py); the password from
    #: ``METERING__KAFKA__SECURITY__PASSWORD``.
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


@dataclass(frozen=True)
class PipelineSettings:
    dedup_retention: timedelta = timedelta(days=7)
    allowed_future_skew: timedelta = timedelta(minutes=5)
    max_out_of_orderness: timedelta = timedelta(seconds=30)
    idle_timeout: timedelta = timedelta(seconds=30)
    checkpoint_interval: timedelta = timedelta(seconds=10)
    provisional_interval: timedelta = timedelta(seconds=10)
    parallelism: int = 1
    #: ``metering load`` (unbounded) sends a heartbeat to every events partition this often, so the
    #: watermark moves while the whole topic is quiet (jobs/loader/heartbeat.py); zero turns it off.
    heartbeat_interval: timedelta = timedelta(seconds=10)
    #: The longest a row waits in ``metering load`` before it is inserted (it inserts sooner when
    #: caught up or holding 100k rows); zero inserts every poll. Fewer, larger inserts are what
    #: ClickHouse wants: each insert makes a part that its merges then rewrite.
    loader_max_batch_delay: timedelta = timedelta(seconds=1)
    #: Watermark alignment of the events source (docs/semantics.md, "Backfills"): no partition is
    #: read further than this ahead of the slowest one's watermark, so which events end in a final
    #: and which in a correction does not depend on the order Flink reads partitions in. Zero
    #: turns alignment off.
    alignment_max_drift: timedelta = timedelta(minutes=1)
    #: How often the source readers report their watermarks and learn the slowest one.
    alignment_update_interval: timedelta = timedelta(seconds=1)


@dataclass(frozen=True)
class IngestSettings:
    """``ingest``: the HTTP ingestion service (``metering serve``, jobs/ingest/, docs/ingest.md)."""

    #: Loopback by default; another interface needs ``metering serve --public``.
    host: str = "127.0.0.1"
    port: int = 8090
    #: Most events one request may carry (413 beyond).
    max_events: int = 1000
    #: Most bytes of a request body as sent (413 beyond) and, for a gzip body, once decompressed.
    max_body_bytes: int = 8 * 1024 * 1024
    max_decompressed_bytes: int = 16 * 1024 * 1024
    #: The token bucket of each API key: requests per second, and how many may come at once.
    rate: int = 50
    burst: int = 100
    #: How long a request waits for Kafka to acknowledge its events before answering 503.
    delivery_timeout: timedelta = timedelta(seconds=10)
    #: Event requests handled at once; one more is answered 503 at once (while Kafka is away,
    #: each request holds a thread for up to ``delivery_timeout``).
    max_in_flight: int = 64
    #: The API keys' register (hashes only) and revocation list; default <stack.home>/ingest-keys.
    keys: Path = Path(".metering/ingest-keys")


@dataclass(frozen=True)
class BillingPolicy:
    """How one customer (or plan) is billed: period cycle plus the late-event grace window."""

    cycle: BillingCycle = field(default_factory=BillingCycle)
    grace: timedelta = timedelta(hours=48)


@dataclass(frozen=True)
class Billing:
    default: BillingPolicy = field(default_factory=BillingPolicy)
    plans: Mapping[str, BillingPolicy] = field(default_factory=dict)
    customers: Mapping[str, BillingPolicy] = field(default_factory=dict)

    def policy_for(self, customer_id: str) -> BillingPolicy:
        """The customer's own policy, else the default (plans are resolved at load time)."""
        return self.customers.get(customer_id, self.default)


@dataclass(frozen=True)
class Config:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    billing: Billing = field(default_factory=Billing)
    meters: tuple[Meter, ...] = ()
    #: ``rating``: price plans per meter (udfs/pricing.py, docs/pricing.md); empty rates nothing.
    rating: Rating = field(default_factory=Rating)
    #: ``alerts``: threshold alert rules (udfs/alerting.py, docs/pricing.md "Alerts"); empty alerts nothing.
    alerts: AlertSettings = field(default_factory=AlertSettings)
    #: ``credits``: the exhaustion policy of prepaid credits and the refresh cadence (udfs/credits.py).
    credits: CreditSettings = field(default_factory=CreditSettings)

    def meters_for(self, event_type: str) -> list[Meter]:
        return [m for m in self.meters if m.event_type == event_type]


# --- duration bounds: the one place they are declared --------------------------------------------


@dataclass(frozen=True)
class DurationRange:
    """The values a duration setting accepts: ``low``–``high``, and 0 when ``zero`` says what it means."""

    low: timedelta
    high: timedelta
    zero: str = ""
    why: str = ""

    def describe(self) -> str:
        span = f"{_show(self.low)} to {_show(self.high)}"
        return f"0 ({self.zero}) or {span}" if self.zero else span

    def parse(self, value: Any) -> timedelta:
        """A duration within range; ``ValueError`` naming the range otherwise (never another exception)."""
        out_of_range = f"{_shortened(value)} is out of range: must be {self.describe()}" + (f"; {self.why}" if self.why else "")
        # A bare number means seconds, in the file and the environment alike (YAML's 30 was an int).
        bare = isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value)
        try:
            duration = parse_duration(value.strip() + "s" if bare else value)
        except DurationTooLong:
            raise ValueError(out_of_range) from None
        if duration == timedelta(0) and self.zero:
            return duration
        if not self.low <= duration <= self.high:
            raise ValueError(out_of_range)
        return duration


def _shortened(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}…{text[-6:]}"


def _show(value: timedelta) -> str:
    return format_duration(value) if value else "0"


MS = timedelta(milliseconds=1)
#: Every duration setting's range (``billing.*.grace``: the default's, every plan's and customer's).
#: Bounds a real deployment stays far inside; the job's own limits are the hard ones behind them:
#: settings that become SQL intervals (``allowed_future_skew``, ``max_out_of_orderness``,
#: ``provisional_interval``) must stay below jobs/flink/sql.py's 99-day ``LONGEST_INTERVAL``, Flink
#: refuses checkpoints more often than every 10 ms, Kafka's ``transaction.timeout.ms`` is an int of ms.
DURATIONS: dict[str, DurationRange] = {
    "kafka.transaction_timeout": DurationRange(
        timedelta(seconds=2),  # above the shortest checkpoint_interval: a transaction spans one
        timedelta(days=1),
        why="Kafka transactions of the exactly-once sinks; the broker's transaction.max.timeout.ms must allow it",
    ),
    "pipeline.dedup_retention": DurationRange(
        timedelta(minutes=1), timedelta(days=366), why="the dedup state holds every id seen this long"
    ),
    "pipeline.allowed_future_skew": DurationRange(
        timedelta(seconds=1),
        timedelta(days=1),
        why="an event up to this far in the future advances the watermark and can finalize periods early",
    ),
    "pipeline.max_out_of_orderness": DurationRange(
        MS, timedelta(days=7), why="every final waits this long; later events are still counted, as late ones"
    ),
    "pipeline.idle_timeout": DurationRange(
        timedelta(seconds=1), timedelta(days=1), why="a quiet partition holds the watermark back this long"
    ),
    "pipeline.checkpoint_interval": DurationRange(
        timedelta(seconds=1),
        timedelta(minutes=1),
        why="each checkpoint commits a Kafka transaction per sink; at most provisional_interval",
    ),
    "pipeline.provisional_interval": DurationRange(timedelta(seconds=1), timedelta(minutes=1), why="it must divide one minute"),
    "pipeline.heartbeat_interval": DurationRange(
        timedelta(seconds=1), timedelta(hours=1), zero="off", why="finals on a quiet topic wait up to this long"
    ),
    "pipeline.loader_max_batch_delay": DurationRange(
        MS, timedelta(minutes=1), zero="insert every poll", why="rows wait this long before ClickHouse has them"
    ),
    "pipeline.alignment_max_drift": DurationRange(
        timedelta(seconds=1), timedelta(days=1), zero="alignment off", why="how far partitions may run apart"
    ),
    "pipeline.alignment_update_interval": DurationRange(
        timedelta(milliseconds=100), timedelta(minutes=1), why="how often source readers exchange watermarks"
    ),
    "ingest.delivery_timeout": DurationRange(
        timedelta(seconds=1), timedelta(minutes=5), why="a request waits this long for Kafka before answering 503"
    ),
    "billing.*.grace": DurationRange(timedelta(0), timedelta(days=366), why="a period's final waits for its end plus grace"),
    "alerts.open_minutes": DurationRange(
        timedelta(minutes=2), timedelta(days=1), why="an on_time segment's versions are kept this long behind its key's newest"
    ),
    "alerts.retention": DurationRange(
        timedelta(days=1), timedelta(days=3660), why="a period's alert state is kept this long after its end (stream time)"
    ),
}


# --- validation helpers -------------------------------------------------------------------------


class _Reader:
    """Reads typed values out of nested mappings, recording every problem with its path.

    ``origins`` maps paths set from the environment to their variable, which each problem at or
    below such a path names.
    """

    def __init__(self, origins: Mapping[str, str] | None = None) -> None:
        self.problems: list[str] = []
        self.origins = dict(origins or {})

    def add(self, path: str, message: str) -> None:
        origin = self._origin(path)
        self.problems.append(f"{path}: {message}" + (f" (set by {origin})" if origin else ""))

    def _origin(self, path: str) -> str | None:
        probe = path
        while probe:
            if probe in self.origins:
                return self.origins[probe]
            probe = probe[: max(probe.rfind("."), probe.rfind("["), 0)]
        return None

    def section(self, raw: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.add(path or "(top level)", f"must be a mapping, got {_kind(raw)}")
            return {}
        for key in sorted(set(raw) - allowed, key=str):
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {_join(path, close[0])}?" if close else f" (allowed: {', '.join(sorted(allowed))})"
            self.add(_join(path, str(key)), "unknown key" + hint)
        return dict(raw)

    def get(self, raw: Mapping[str, Any], key: str, path: str, parse: Callable[[Any], T], default: T) -> T:
        if key not in raw or raw[key] is None:
            return default
        try:
            return parse(raw[key])
        except (ValueError, TypeError) as exc:
            self.add(_join(path, key), str(exc))
            return default


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return "text" if isinstance(value, str) else type(value).__name__


def _shown(value: Any) -> str:
    """A value in a message: as written when it reads as a number, else quoted."""
    return value if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value) else repr(value)


def _text(value: Any) -> str:
    """Text, surrounding blanks dropped (not for identifiers matched against events: :func:`_identifier`)."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{value!r} must be text")
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _identifier(value: Any) -> str:
    """Text exactly as written: compared with events' fields, where blanks would never match."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be text")
    if not value:
        raise ValueError("must not be empty")
    return value


def _int_in(low: int, high: int, why: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ValueError(f"{_shown(value)} must be a positive integer")
        if number < max(low, 1):
            raise ValueError(f"{number} must be a positive integer")
        if number > high:
            raise ValueError(f"{number} is out of range {low}–{high} ({why})")
        return number

    return parse


#: A positive integer whose range its consumer checks (``anchor``: BillingCycle).
_positive_int = _int_in(1, 2**31 - 1, "a 32-bit integer")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{value!r} must be true or false")


def _choice(options: type[Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            return options(value)
        except ValueError:
            raise ValueError(f"{value!r} must be one of {', '.join(o.value for o in options)}") from None

    return parse


def _topic(value: Any) -> str:
    name = _text(value)
    if not TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a Kafka topic name: 1–249 characters of A-Z a-z 0-9 . _ -")
    return name


# --- sections ------------------------------------------------------------------------------------


def _policy(
    r: _Reader, raw: Any, path: str, base: BillingPolicy, *, plans: Mapping[str, BillingPolicy] | None = None
) -> BillingPolicy:
    allowed = {"period", "anchor", "timezone", "grace"} | ({"plan"} if plans is not None else set())
    data = r.section(raw, path, allowed)
    if plans is not None and "plan" in data:
        plan = data["plan"]
        if plan in plans:
            base = plans[plan]
        else:
            close = difflib.get_close_matches(str(plan), sorted(plans), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            r.add(f"{path}.plan", f"unknown plan {plan!r} (defined plans: {', '.join(sorted(plans)) or 'none'}){hint}")
    kind = r.get(data, "period", path, _choice(PeriodKind), base.cycle.kind)
    default_anchor = base.cycle.anchor if kind == base.cycle.kind else 1
    anchor = r.get(data, "anchor", path, _positive_int, default_anchor)
    timezone = r.get(data, "timezone", path, _text, base.cycle.timezone)
    grace = r.get(data, "grace", path, DURATIONS["billing.*.grace"].parse, base.grace)
    try:
        cycle = BillingCycle(kind, timezone, anchor)
    except ValueError as exc:
        field_name = "timezone" if "time zone" in str(exc) else "anchor"
        r.add(f"{path}.{field_name}", str(exc))
        cycle = base.cycle
    return BillingPolicy(cycle, grace)


def _customer_path(name: Any) -> str:
    return f"billing.customers[{name!r}]"


def _billing(r: _Reader, raw: Any) -> Billing:
    data = r.section(raw, "billing", {"default", "plans", "customers"})
    default = _policy(r, data.get("default"), "billing.default", BillingPolicy())
    plans: dict[str, BillingPolicy] = {}
    plans_raw = data.get("plans")
    for name, plan in r.section(plans_raw, "billing.plans", set(plans_raw) if isinstance(plans_raw, Mapping) else set()).items():
        plans[str(name)] = _policy(r, plan, f"billing.plans.{name}", default)
    customers: dict[str, BillingPolicy] = {}
    customers_raw = data.get("customers")
    rule = string_rule("customer_id")
    for name, customer in r.section(
        customers_raw, "billing.customers", set(customers_raw) if isinstance(customers_raw, Mapping) else set()
    ).items():
        # The key is compared with events' customer_id: one no event can carry would never match.
        problem = rule.problem(name) if isinstance(name, str) else f"{name!r} is not a customer id: write it as text"
        if problem is not None:
            r.add(_customer_path(name), f"{problem}; no event's customer_id can match it")
            continue
        customers[name] = _policy(r, customer, f"billing.customers.{name}", default, plans=plans)
    return Billing(default, plans, customers)


def _policy_of(r: _Reader, data: Mapping[str, Any], path: str, default: Policy) -> Policy:
    """An exhaustion policy (``exhaustion``, ``grace_pct``) of ``credits`` or one customer; unset keys from ``default``."""
    exhaustion = r.get(data, "exhaustion", path, _text, default.exhaustion.value)
    percent = r.get(data, "grace_pct", path, _decimal, None)
    if "exhaustion" not in data and percent is None:
        percent = default.percent
    problems = policy_problems(exhaustion, percent)
    for key, message in problems:
        r.add(f"{path}.{key}", message)
    return default if problems else Policy(Exhaustion(exhaustion), percent)


def _credits(r: _Reader, raw: Any) -> CreditSettings:
    """``credits``: the exhaustion policy (default and per customer) and the refresh cadence (udfs/credits.py)."""
    data = r.section(raw, "credits", {"exhaustion", "grace_pct", "refresh_every", "customers", "publish"})
    default = _policy_of(r, data, "credits", Policy())
    every = r.get(data, "refresh_every", "credits", parse_duration, CreditSettings().refresh_every)
    if every < timedelta(seconds=1):
        r.add("credits.refresh_every", f"{format_duration(every)} must be at least 1s")
    customers: dict[str, Policy] = {}
    customers_raw = data.get("customers")
    rule = string_rule("customer_id")
    for name, customer in r.section(
        customers_raw, "credits.customers", set(customers_raw) if isinstance(customers_raw, Mapping) else set()
    ).items():
        problem = rule.problem(name) if isinstance(name, str) else f"{name!r} is not a customer id: write it as text"
        if problem is not None:
            r.add(f"credits.customers[{name!r}]", f"{problem}; no event's customer_id can match it")
            continue
        path = f"credits.customers.{name}"
        customers[name] = _policy_of(r, r.section(customer, path, {"exhaustion", "grace_pct"}), path, default)
    if not r.get(data, "publish", "credits", _bool, True):
        r.add(
            "credits.publish",
            "false is no longer possible: the ledger topic is the credit ledger (grant and void publish to it, the "
            "loader writes credit_ledger); remove the key",
        )
    return CreditSettings(default, customers, every)


def _meters(r: _Reader, raw: Any, *, required: bool) -> tuple[Meter, ...]:
    if raw is None or raw == []:
        if not required:
            return ()
        r.add(
            "meters",
            "at least one meter is required (define `meters:` in the file given with --config; "
            "config/metering.example.yaml shows the form)",
        )
        return ()
    if not isinstance(raw, list):
        r.add("meters", f"must be a list, got {_kind(raw)}")
        return ()
    meters: list[Meter] = []
    for index, item in enumerate(raw):
        path = f"meters[{index}]"
        data = r.section(item, path, {"name", "event_type", "aggregation", "value", "group_by", "allow_negative"})
        for key in ("name", "event_type", "aggregation"):
            if key not in data:
                r.add(f"{path}.{key}", "required")
        group_by = data.get("group_by") or []
        if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
            r.add(f"{path}.group_by", "must be a list of property names")
            group_by = []
        meter = Meter(
            name=r.get(data, "name", path, _text, ""),
            event_type=r.get(data, "event_type", path, _identifier, ""),
            aggregation=r.get(data, "aggregation", path, _choice(Aggregation), Aggregation.SUM),
            value=r.get(data, "value", path, _text, "quantity"),
            group_by=tuple(group_by),
            allow_negative=r.get(data, "allow_negative", path, _bool, False),
        )
        if "name" in data and "event_type" in data:
            for field_name, message in meter.problems():
                r.add(f"{path}.{field_name}", message)
        meters.append(meter)
    names = [m.name for m in meters if m.name]
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.add("meters", f"meter name {name!r} is defined more than once")
    return tuple(meters)


#: Keys of a rate card version: every model's, then each model's own.
_VERSION_KEYS = {"starts_at", "ends_before", "model", "included", "minimum", "quantity_rounding"}
_MODEL_KEYS: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.PER_UNIT: ("unit_price",),
    ModelKind.GRADUATED: ("tiers",),
    ModelKind.VOLUME: ("tiers",),
    ModelKind.PACKAGE: ("package_size", "package_price", "package_rounding"),
    ModelKind.PERCENTAGE: ("percent", "min_amount", "max_amount"),
}
#: Each model's keys without a default.
_MODEL_REQUIRED: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.PER_UNIT: ("unit_price",),
    ModelKind.GRADUATED: ("tiers",),
    ModelKind.VOLUME: ("tiers",),
    ModelKind.PACKAGE: ("package_size", "package_price"),
    ModelKind.PERCENTAGE: ("percent",),
}
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _decimal(value: Any) -> Decimal:
    """An exact decimal written in plain notation (``0.002``, ``1500``); never a float.

    Its range (sign, places) is the rate card's to check (:func:`udfs.pricing.number_problem`).
    """
    text = (
        value.strip()
        if isinstance(value, str)
        else str(value)
        if isinstance(value, int) and not isinstance(value, bool)
        else None
    )
    if text is None or not _DECIMAL.fullmatch(text):
        raise ValueError(f"{_shortened(value)} must be a decimal number written out, e.g. 0.002 or 1500 (no exponent)")
    if len(text) > 80:
        raise ValueError(f"{_shortened(value)} has too many digits")
    return Decimal(text)


def _instant(value: Any) -> datetime:
    """An RFC 3339 instant with its offset (``2026-03-01T00:00:00Z``), as UTC."""
    example = "e.g. 2026-03-01T00:00:00Z or 2026-03-01T00:00:00+01:00"
    if not isinstance(value, str):
        raise ValueError(f"{_shortened(value)} must be an instant with an offset, {example}")
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{_shortened(value)} is not an instant: write one with its offset, {example}") from None
    if instant.tzinfo is None:
        raise ValueError(f"{_shortened(value)} has no offset: instants in other zones would differ; {example}")
    return instant.astimezone(UTC)


def _rounding_mode(value: Any) -> str:
    text = _text(value)
    if text not in ROUNDING_MODES:
        close = difflib.get_close_matches(text.upper(), ROUNDING_MODES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"{_shortened(value)} must be one of {', '.join(ROUNDING_MODES)} (the decimal module's modes){hint}")
    return text


def _places(value: Any) -> int:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not re.fullmatch(r"[0-9]{1,2}", text) or int(text) > MAX_PLACES:
        raise ValueError(f"{_shortened(value)} must be a whole number of decimal places, 0 to {MAX_PLACES}")
    return int(text)


def _money(r: _Reader, data: Mapping[str, Any], path: str, base: Money) -> Money:
    """``currency``, ``minor_units`` and ``rounding`` of ``rating`` or a plan (a plan inherits ``base``)."""
    currency = r.get(data, "currency", path, _text, base.currency)
    mode = r.get(data, "rounding", path, _rounding_mode, base.mode)
    minor_units = r.get(data, "minor_units", path, _places, None)
    if not CURRENCY_CODE.fullmatch(currency):
        r.add(f"{path}.currency", f"{currency!r} is not an ISO 4217 code: three capital letters, e.g. USD")
        return base
    if minor_units is None:
        if "currency" not in data or data["currency"] is None or currency == base.currency:
            minor_units = base.minor_units
        elif currency in MINOR_UNITS:
            minor_units = MINOR_UNITS[currency]
        else:
            r.add(f"{path}.currency", f"unknown currency {currency!r}: set {path}.minor_units to its digits after the point")
            return base
    try:
        return Money(currency, minor_units, mode)
    except ValueError as exc:
        r.add(f"{path}.currency", str(exc))
        return base


def _quantity_rounding(r: _Reader, raw: Any, path: str) -> Rounding | None:
    if raw is None:
        return None
    data = r.section(raw, path, {"places", "mode"})
    if "places" not in data:
        r.add(f"{path}.places", "required: the decimal places quantities are rounded to (0: whole units)")
    return Rounding(r.get(data, "places", path, _places, 0), r.get(data, "mode", path, _rounding_mode, "ROUND_HALF_UP"))


def _tiers(r: _Reader, raw: Any, path: str) -> tuple[Tier, ...]:
    if not isinstance(raw, list):
        r.add(path, f"must be a list of tiers ({{up_to, unit_price, flat_price}}), got {_kind(raw)}")
        return ()
    tiers = []
    for index, item in enumerate(raw):
        data = r.section(item, f"{path}[{index}]", {"up_to", "unit_price", "flat_price"})
        tiers.append(
            Tier(*(r.get(data, key, f"{path}[{index}]", _decimal, None) for key in ("up_to", "unit_price", "flat_price")))
        )
    return tuple(tiers)


def _price_model(r: _Reader, data: Mapping[str, Any], path: str, kind: ModelKind) -> PriceModel:
    def number(key: str) -> Decimal:
        return r.get(data, key, path, _decimal, Decimal(0))

    match kind:
        case ModelKind.PER_UNIT:
            return PerUnit(number("unit_price"))
        case ModelKind.GRADUATED:
            return Graduated(_tiers(r, data.get("tiers"), f"{path}.tiers"))
        case ModelKind.VOLUME:
            return Volume(_tiers(r, data.get("tiers"), f"{path}.tiers"))
        case ModelKind.PACKAGE:
            rounding = r.get(data, "package_rounding", path, _choice(PackageRounding), PackageRounding.UP)
            return Package(r.get(data, "package_size", path, _decimal, Decimal(1)), number("package_price"), rounding)
        case ModelKind.PERCENTAGE:
            bounds = (r.get(data, key, path, _decimal, None) for key in ("min_amount", "max_amount"))
            return Percentage(number("percent"), *bounds)
    raise AssertionError(kind)


def _rate_card(r: _Reader, raw: Any, path: str, meter: str, money: Money) -> RateCard | None:
    """A meter's card: a list of versions; None when any problem was found (each is reported)."""
    if not isinstance(raw, list) or not raw:
        got = "nothing" if raw is None else "an empty list" if raw == [] else _kind(raw)
        r.add(path, f"must be a list of versions (starts_at, model, prices …), got {got}")
        return None
    all_model_keys = {key for keys in _MODEL_KEYS.values() for key in keys}
    versions = []
    complete = True
    for index, item in enumerate(raw):
        at = f"{path}[{index}]"
        before = len(r.problems)
        data = r.section(item, at, _VERSION_KEYS | all_model_keys)
        for key in ("starts_at", "model"):
            if data.get(key) is None:
                r.add(f"{at}.{key}", "required")
        starts_at = r.get(data, "starts_at", at, _instant, datetime(1970, 1, 1, tzinfo=UTC))
        ends_before = r.get(data, "ends_before", at, _instant, None)
        kind = r.get(data, "model", at, _choice(ModelKind), None)
        if kind is None:
            complete = False
            continue
        for key in sorted(all_model_keys & set(data) - set(_MODEL_KEYS[kind])):
            users = ", ".join(k.value for k, keys in _MODEL_KEYS.items() if key in keys)
            r.add(
                f"{at}.{key}",
                f"not a key of model {kind.value} (it belongs to {users}; {kind.value} takes {', '.join(_MODEL_KEYS[kind])})",
            )
        for key in _MODEL_REQUIRED[kind]:
            if data.get(key) is None:
                r.add(f"{at}.{key}", f"required by model {kind.value}")
        before_model = len(r.problems)
        model = _price_model(r, data, at, kind)
        model_parsed = len(r.problems) == before_model
        version = RateVersion(
            starts_at=starts_at,
            model=model,
            ends_before=ends_before,
            included=r.get(data, "included", at, _decimal, Decimal(0)),
            minimum=r.get(data, "minimum", at, _decimal, None),
            quantity_rounding=_quantity_rounding(r, data.get("quantity_rounding"), f"{at}.quantity_rounding"),
        )
        if len(r.problems) > before:  # its own checks would repeat what is said (a default stands in for a bad value)
            complete = False
            if model_parsed:  # the prices themselves are still worth checking now
                for key, message in model.problems(money):
                    r.add(f"{at}.{key}", message)
            continue
        for key, message in version.problems(money):
            r.add(f"{at}.{key}", message)
        versions.append(version)
    card = RateCard(meter, tuple(versions))
    if not complete:
        return None
    for key, message in card.order_problems():
        r.add(f"{path}{key}", message)
    return card


def _rate_cards(r: _Reader, raw: Any, path: str, money: Money) -> dict[str, RateCard]:
    cards: dict[str, RateCard] = {}
    for meter, card in r.section(raw, path, set(raw) if isinstance(raw, Mapping) else set()).items():
        parsed = _rate_card(r, card, f"{path}.{meter}", str(meter), money)
        if parsed is not None:
            cards[str(meter)] = parsed
    return cards


def _rating(r: _Reader, raw: Any, meters: set[str]) -> Rating:
    """``rating``: plans of rate cards per meter, the default plan, customers' plans and own cards (udfs/pricing.py).

    Optional: absent, nothing is rated. Every card is checked against the meters and its plan's currency.
    """
    if raw is None:
        return Rating()
    data = r.section(raw, "rating", {"currency", "minor_units", "rounding", "default_plan", "plans", "customers"})
    money = _money(r, data, "rating", Money())
    plans_raw = data.get("plans")
    plans: dict[str, RatePlan] = {}
    for name, plan in r.section(plans_raw, "rating.plans", set(plans_raw) if isinstance(plans_raw, Mapping) else set()).items():
        path = f"rating.plans.{name}"
        plan_data = r.section(plan, path, {"currency", "minor_units", "rounding", "meters"})
        plan_money = _money(r, plan_data, path, money)
        plans[str(name)] = RatePlan(plan_money, _rate_cards(r, plan_data.get("meters"), f"{path}.meters", plan_money))
    default_plan = r.get(data, "default_plan", "rating", _text, None)
    customers: dict[str, CustomerRating] = {}
    customers_raw = data.get("customers")
    rule = string_rule("customer_id")
    for name, customer in r.section(
        customers_raw, "rating.customers", set(customers_raw) if isinstance(customers_raw, Mapping) else set()
    ).items():
        problem = rule.problem(name) if isinstance(name, str) else f"{name!r} is not a customer id: write it as text"
        if problem is not None:
            r.add(f"rating.customers[{name!r}]", f"{problem}; no event's customer_id can match it")
            continue
        path = f"rating.customers.{name}"
        own = r.section(customer, path, {"plan", "meters"})
        plan_name = r.get(own, "plan", path, _text, None)
        plan = plans.get(plan_name or default_plan or "")
        cards = _rate_cards(r, own.get("meters"), f"{path}.meters", plan.money if plan is not None else money)
        customers[name] = CustomerRating(plan_name, cards)
    rating = Rating(plans, default_plan, customers)
    for key, message in rating.problems(meters):
        r.add(f"rating.{key}", message)
    return rating


_RULE_KEYS = {"name", "kind", "meter", "thresholds", "customers", "entitlement", "webhook"}
#: A Standard Webhooks secret: ``whsec_`` and the base64 of the key.
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/]+={0,2}")


def _webhook(r: _Reader, raw: Any, path: str, env: Mapping[str, str]) -> Webhook | None:
    """``webhook``: ``url`` (http or https) and ``secret_env``, the variable holding the ``whsec_`` secret."""
    if raw is None:
        return None
    data = r.section(raw, path, {"url", "secret_env"})
    url = r.get(data, "url", path, _text, "")
    variable = r.get(data, "secret_env", path, _text, "")
    if not url:
        r.add(f"{path}.url", "required")
    elif not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        r.add(f"{path}.url", f"{_shortened(url)} must be an http:// or https:// URL")
    if not variable:
        r.add(f"{path}.secret_env", "required: the environment variable that holds the signing secret (whsec_…)")
        return None
    secret = env.get(variable, "")
    if not secret:
        r.add(f"{path}.secret_env", f"{variable} is not set: it must hold the signing secret (whsec_…)")
    elif not _WEBHOOK_SECRET.fullmatch(secret):
        r.add(f"{path}.secret_env", f"{variable} must hold whsec_ followed by the base64 of the key (its value not shown)")
    return Webhook(url, secret) if url else None


def _alerts(r: _Reader, raw: Any, config: Config, env: Mapping[str, str]) -> AlertSettings:
    """``alerts``: threshold rules on meters (udfs/alerting.py); each checked against the meters, customers and rating."""
    rated = bool(config.rating.plans)
    if raw is None:
        return AlertSettings(costs=rated)
    data = r.section(raw, "alerts", {"topic", "state_topic", "open_minutes", "retention", "rules", "costs"})
    costs = r.get(data, "costs", "alerts", _bool, rated)
    if costs and not rated:
        r.add("alerts.costs", "true needs a rating section: the cost records are priced by the customers' rate cards")
    meters = {m.name: m for m in config.meters if m.name}
    rules_raw = data.get("rules") or []
    if not isinstance(rules_raw, list):
        r.add("alerts.rules", f"must be a list, got {_kind(rules_raw)}")
        rules_raw = []
    rules: list[AlertRule] = []
    rule = string_rule("customer_id")
    for index, item in enumerate(rules_raw):
        path = f"alerts.rules[{index}]"
        d = r.section(item, path, _RULE_KEYS)
        name = r.get(d, "name", path, _text, "")
        kind = r.get(d, "kind", path, _choice(RuleKind), RuleKind.USAGE)
        for key in ("name", "kind", "meter", "thresholds"):
            if key not in d and not (key == "meter" and kind is RuleKind.CREDIT_REMAINING):
                r.add(f"{path}.{key}", "required")
        meter = r.get(d, "meter", path, _text, "")
        if meter and meter not in meters:
            r.add(f"{path}.meter", _unknown_name("meter", meter, set(meters)))
        thresholds: list[Decimal] = []
        raw_thresholds = d.get("thresholds")
        if "thresholds" in d and (not isinstance(raw_thresholds, list) or not raw_thresholds):
            r.add(f"{path}.thresholds", "must be a non-empty list of numbers, e.g. [80, 100]")
        elif isinstance(raw_thresholds, list):
            for position, value in enumerate(raw_thresholds):
                try:
                    thresholds.append(_decimal(value))
                except ValueError as exc:
                    r.add(f"{path}.thresholds[{position}]", str(exc))
        customers: frozenset[str] | None = None
        if d.get("customers") is not None:
            listed = d["customers"]
            if not isinstance(listed, list) or not listed:
                r.add(f"{path}.customers", "must be a non-empty list of customer ids (leave it out: every customer)")
            else:
                for position, customer in enumerate(listed):
                    problem = rule.problem(customer) if isinstance(customer, str) else f"{customer!r} must be text"
                    if problem is not None:
                        r.add(
                            f"{path}.customers[{position}]", f"unknown customer: {problem}; no event's customer_id can match it"
                        )
                customers = frozenset(c for c in listed if isinstance(c, str))
        entitlement = r.get(d, "entitlement", path, _decimal, None)
        alert_rule = AlertRule(
            name, kind, meter, tuple(thresholds), customers, entitlement, _webhook(r, d.get("webhook"), f"{path}.webhook", env)
        )
        for key, message in alert_rule.problems():
            r.add(f"{path}.{key}", message)
        if kind in (RuleKind.SPEND, RuleKind.PROJECTED_SPEND) and meter in meters:
            for customer in sorted(customers) if customers is not None else [None]:
                priced = config.rating.card_for(customer, meter) if customer is not None else _default_card(config, meter)
                if not priced:
                    who = f"customer {customer!r}" if customer is not None else "the default plan (rules for every customer)"
                    r.add(f"{path}.kind", f"{kind} needs a price: {who} has no rate card for meter {meter!r} (rating)")
        if kind is RuleKind.CREDIT_REMAINING:
            for customer in sorted(customers) if customers is not None else [None]:
                plan = config.rating.plan_of(customer) if customer is not None else config.rating.default_plan
                if plan is None or plan not in config.rating.plans:
                    who = f"customer {customer!r}" if customer is not None else "the default plan (rules for every customer)"
                    r.add(f"{path}.kind", f"credit_remaining needs a plan: {who} has none, so credit has no currency (rating)")
        rules.append(alert_rule)
    names = [x.name for x in rules if x.name]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        r.add("alerts.rules", f"rule name {duplicate!r} is defined more than once (it is part of every alert's id)")
    return AlertSettings(
        tuple(rules),
        r.get(data, "topic", "alerts", _topic, None),
        r.get(data, "state_topic", "alerts", _topic, None),
        r.get(data, "open_minutes", "alerts", DURATIONS["alerts.open_minutes"].parse, AlertSettings().open_minutes),
        r.get(data, "retention", "alerts", DURATIONS["alerts.retention"].parse, AlertSettings().retention),
        costs and rated,
    )


def _default_card(config: Config, meter: str) -> bool:
    plan = config.rating.plans.get(config.rating.default_plan or "")
    return plan is not None and meter in plan.cards


def _unknown_name(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r} (defined: {', '.join(sorted(known)) or 'none'}){hint}"


def _storage(r: _Reader, raw: Any, base_dir: Path, stack: StackSettings) -> StorageSettings:
    """``storage``: a ``url`` selects the server backend unless ``backend`` says otherwise; chDB's
    ``path`` defaults to the stack's (``<stack.home>/chdb``)."""
    data = r.section(raw, "storage", {"backend", "path", "url", "username", "password", "database"})
    defaults = StorageSettings()
    url = r.get(data, "url", "storage", _text, "")
    backend_text: str = r.get(data, "backend", "storage", _text, "server" if url else "chdb")
    backend: Backend = "server" if backend_text == "server" else "chdb"
    if backend_text not in ("chdb", "server"):
        r.add("storage.backend", f"{backend_text!r} must be 'chdb' or 'server'")
    path = Path(r.get(data, "path", "storage", _text, str(stack.chdb_path)))
    password = data.get("password")
    if password is not None and not isinstance(password, str):
        r.add("storage.password", "must be text (quote it)")
        password = None
    try:
        return StorageSettings(
            backend=backend,
            path=(path if path.is_absolute() else base_dir / path).resolve(),
            url=url,
            username=r.get(data, "username", "storage", _text, defaults.username),
            password=password or "",
            database=r.get(data, "database", "storage", _text, defaults.database),
        )
    except (ValueError, StorageError) as exc:  # its own checks (database name, url): a configuration problem
        r.problems.append(str(exc))
        return defaults


def _access(r: _Reader, raw: Any, base_dir: Path, stack: StackSettings) -> AccessSettings:
    """``access``: the tokens' signing key (a secret, from the environment), their store (default <stack.home>/access)
    and the token this process presents to a remote query gateway (a secret too)."""
    data = r.section(raw, "access", {"signing_key", "store", "token"})
    key = data.get("signing_key")
    if key is not None and not isinstance(key, str):
        r.add("access.signing_key", "must be text (quote it)")
        key = None
    if key and len(key) < MIN_KEY_CHARS:
        r.add("access.signing_key", f"at least {MIN_KEY_CHARS} characters (a random secret, the same for every process)")
        key = None
    token = data.get("token")
    if token is not None and (not isinstance(token, str) or not token.strip() or len(token) > MAX_TOKEN_CHARS):
        r.add("access.token", f"must be the text of a token from `metering token create` (at most {MAX_TOKEN_CHARS} characters)")
        token = None
    store = r.get(data, "store", "access", _path_in(base_dir), stack.home / "access")
    return AccessSettings(signing_key=key or "", store=store, token=(token or "").strip())


def _port(value: Any) -> int:
    """A loopback port the stack may bind without privileges."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1024 <= int(text) <= 65535:
        raise ValueError(f"{_shortened(value)} must be a port number (1024-65535)")
    return int(text)


def _path_in(base_dir: Path) -> Callable[[Any], Path]:
    def parse(value: Any) -> Path:
        path = Path(_text(value)).expanduser()
        return (path if path.is_absolute() else base_dir / path).resolve()

    return parse


def _stack(r: _Reader, raw: Any, base_dir: Path) -> StackSettings:
    """``stack``: the local stack's folders and loopback ports (infra/settings.py)."""
    keys = {
        "home",
        "jar_cache",
        "udf_jar",
        "python",
        "kafka_port",
        "kafka_controller_port",
        "flink_rest_port",
        "flink_rpc_port",
        "taskmanager_slots",
    }
    data = r.section(raw, "stack", keys)
    defaults = StackSettings()
    home = r.get(data, "home", "stack", _path_in(base_dir), defaults.home)
    settings = StackSettings(
        home=home,
        # The cache follows a moved home unless it is set itself: it holds downloads, kept per home.
        jar_cache=r.get(data, "jar_cache", "stack", _path_in(base_dir), home / "cache"),
        udf_jar=r.get(data, "udf_jar", "stack", _path_in(base_dir), None),
        python_executable=r.get(data, "python", "stack", _text, sys.executable),
        kafka_port=r.get(data, "kafka_port", "stack", _port, defaults.kafka_port),
        kafka_controller_port=r.get(data, "kafka_controller_port", "stack", _port, defaults.kafka_controller_port),
        flink_rest_port=r.get(data, "flink_rest_port", "stack", _port, defaults.flink_rest_port),
        flink_rpc_port=r.get(data, "flink_rpc_port", "stack", _port, defaults.flink_rpc_port),
        taskmanager_slots=r.get(data, "taskmanager_slots", "stack", _int_in(1, 256, "task slots"), defaults.taskmanager_slots),
    )
    ports = settings.ports
    if len(set(ports)) != len(ports):
        names = ("kafka_port", "kafka_controller_port", "flink_rest_port", "flink_rpc_port")
        taken = ", ".join(f"{name}={port}" for name, port in zip(names, ports, strict=True))
        r.add("stack", f"the stack's four ports must differ, got {taken}")
    return settings


def _kafka(r: _Reader, raw: Any, stack: StackSettings, base_dir: Path) -> KafkaSettings:
    data = r.section(raw, "kafka", {"bootstrap_servers", "topics", "transaction_timeout", "consumer_group", "security"})
    defaults = KafkaSettings()
    topic_fields = set(Topics.__dataclass_fields__)
    topics_raw = r.section(data.get("topics"), "kafka.topics", topic_fields)
    topics = Topics(**{k: r.get(topics_raw, k, "kafka.topics", _topic, getattr(defaults.topics, k)) for k in topic_fields})
    # topics named after the events topic: the job's, the credit ledger's and the alert evaluator's
    longest = max(DUPLICATES_SUFFIX, AMENDMENTS_SUFFIX, ALERTS_STATE_SUFFIX, CREDIT_LEDGER_SUFFIX, COSTS_SUFFIX, key=len)
    if len(topics.events) + len(longest) > 249:
        r.add("kafka.topics.events", f"at most {249 - len(longest)} characters: {topics.events + longest!r} is a topic too")
    names = [getattr(topics, k) for k in sorted(topic_fields)] + [topics.duplicates, topics.amendments]
    if len(set(names)) != len(names):
        r.add("kafka.topics", "every topic must have its own name")
    timeout = r.get(
        data, "transaction_timeout", "kafka", DURATIONS["kafka.transaction_timeout"].parse, defaults.transaction_timeout
    )
    return KafkaSettings(
        bootstrap_servers=r.get(data, "bootstrap_servers", "kafka", _text, stack.bootstrap_servers),
        topics=topics,
        transaction_timeout=timeout,
        consumer_group=r.get(data, "consumer_group", "kafka", _text, defaults.consumer_group),
        security=_kafka_security(r, data.get("security"), base_dir),
    )


def _kafka_security(r: _Reader, raw: Any, base_dir: Path) -> KafkaSecurity:
    """``kafka.security``: protocol, SASL mechanism and credentials, the CA file (infra/kafka_security.py).

    The password is a secret: text as written, never shown in a problem.
    """
    path = "kafka.security"
    data = r.section(raw, path, {"protocol", "sasl_mechanism", "username", "password", "ssl_ca_file"})
    defaults = KafkaSecurity()
    password = data.get("password")
    if password is not None and not isinstance(password, str):
        r.add(f"{path}.password", "must be text (quote it)")
        password = None
    ca_file = r.get(data, "ssl_ca_file", path, _path_in(base_dir), None)
    if ca_file is not None and not ca_file.is_file():
        r.add(f"{path}.ssl_ca_file", f"{str(ca_file)!r} is not a file")
    security = KafkaSecurity(
        protocol=r.get(data, "protocol", path, _one_of(PROTOCOLS), defaults.protocol),
        sasl_mechanism=r.get(data, "sasl_mechanism", path, _one_of(MECHANISMS), defaults.sasl_mechanism),
        username=r.get(data, "username", path, _text, ""),
        password=password or "",
        ssl_ca_file=ca_file,
    )
    if not any(f"{path}.{key}" in problem for problem in r.problems for key in ("protocol", "sasl_mechanism")):
        for key, message in security.problems():
            r.add(f"{path}.{key}", message)
    return security


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    """One of ``choices``, as written (case matters: Kafka's own names)."""

    def parse(value: Any) -> str:
        text = _text(value)
        if text not in choices:
            raise ValueError(f"{_shortened(value)} must be one of {', '.join(choices)}")
        return text

    return parse


def _ingest(r: _Reader, raw: Any, base_dir: Path, stack: StackSettings) -> IngestSettings:
    """``ingest``: where ``metering serve`` listens, its limits, the keys' token buckets and store."""
    data = r.section(raw, "ingest", set(IngestSettings.__dataclass_fields__))
    d = IngestSettings()
    settings = IngestSettings(
        host=r.get(data, "host", "ingest", _text, d.host),
        port=r.get(data, "port", "ingest", _port, d.port),
        max_events=r.get(data, "max_events", "ingest", _int_in(1, 1000, "the API's limit per request"), d.max_events),
        max_body_bytes=r.get(data, "max_body_bytes", "ingest", _int_in(1024, 2**30, "1 GiB"), d.max_body_bytes),
        max_decompressed_bytes=r.get(
            data, "max_decompressed_bytes", "ingest", _int_in(1024, 2**30, "1 GiB"), d.max_decompressed_bytes
        ),
        rate=r.get(data, "rate", "ingest", _int_in(1, 1_000_000, "requests per second"), d.rate),
        burst=r.get(data, "burst", "ingest", _int_in(1, 1_000_000, "requests at once"), d.burst),
        delivery_timeout=r.get(
            data, "delivery_timeout", "ingest", DURATIONS["ingest.delivery_timeout"].parse, d.delivery_timeout
        ),
        max_in_flight=r.get(data, "max_in_flight", "ingest", _int_in(1, 4096, "requests at once"), d.max_in_flight),
        keys=r.get(data, "keys", "ingest", _path_in(base_dir), stack.home / "ingest-keys"),
    )
    if settings.max_decompressed_bytes < settings.max_body_bytes:
        r.add("ingest.max_decompressed_bytes", f"must be >= ingest.max_body_bytes ({settings.max_body_bytes})")
    return settings


def _pipeline(r: _Reader, raw: Any) -> PipelineSettings:
    names = set(PipelineSettings.__dataclass_fields__)
    data = r.section(raw, "pipeline", names)
    defaults = PipelineSettings()
    values: dict[str, Any] = {}
    for name in sorted(names):
        parse: Callable[[Any], Any] = (
            _int_in(1, MAX_PARALLELISM, "the job's max parallelism")
            if name == "parallelism"
            else DURATIONS[f"pipeline.{name}"].parse
        )
        values[name] = r.get(data, name, "pipeline", parse, getattr(defaults, name))
    settings = PipelineSettings(**values)
    step_ms = settings.provisional_interval // MS
    if 60_000 % step_ms != 0:
        r.add(
            "pipeline.provisional_interval",
            "must divide one minute exactly (e.g. 5s, 10s, 15s, 30s, 1m): "
            f"got {format_duration(settings.provisional_interval)}; open minutes are re-emitted once per step",
        )
    if settings.provisional_interval < settings.checkpoint_interval:
        r.add(
            "pipeline.provisional_interval",
            "must be >= pipeline.checkpoint_interval "
            f"({format_duration(settings.checkpoint_interval)}): exactly-once output becomes visible at checkpoints",
        )
    return settings


# --- loading -------------------------------------------------------------------------------------

_KEPT_RESOLVERS = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:merge", "tag:yaml.org,2002:yaml"}


class _TextLoader(yaml.SafeLoader):
    """YAML without guessing types: ``0123``, ``yes`` and ``1_000`` stay the text they are written as.

    The key a value sets decides its type (the readers above), as for environment values; YAML
    1.1's guesses turned a password ``0123`` into 83 and a customer ``0123`` into ``"83"``. Only
    ``null`` (and merge keys) keep their YAML meaning. A key written twice in one mapping is an
    error, not "the last one wins".
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 (a class attribute of PyYAML's resolvers)
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEPT_RESOLVERS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the constructor below reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"key {key!r} is defined more than once", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def _set(document: dict[str, Any], parts: list[str], value: str) -> None:
    target = document
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[parts[-1]] = value


def _apply_env(document: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Set ``METERING__A__B=v`` as ``document['a']['b'] = 'v'``; returns ``{'a.b': 'METERING__A__B'}``.

    Values stay the text they are: the key they set parses them (:func:`load_config`), exactly as
    that key's value in the file, so a password ``0123`` stays ``0123`` and a bad integer or
    duration is a problem naming the variable. A variable of :data:`DEPRECATED_ENV` sets its key
    unless the new variable does too, with a :class:`DeprecatedSetting` warning either way.
    """
    origins: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        _set(document, parts, value)
        origins[".".join(parts)] = name
    for name, key in DEPRECATED_ENV.items():
        old_value = env.get(name)
        if old_value is None or old_value == "":
            continue
        new = variable_of(key)
        if key in origins:
            message = f"{name} is ignored: {origins[key]} is set too (the old name goes in release {DEPRECATED_UNTIL})"
        else:
            _set(document, key.split("."), old_value)
            origins[key] = name
            message = f"{name} is deprecated and goes in release {DEPRECATED_UNTIL}: set {new} instead"
        warnings.warn(message, DeprecatedSetting, stacklevel=3)
    return origins


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None, *, require_meters: bool = True) -> Config:
    """Load, override from the environment, validate; raises :class:`ConfigError` listing every problem.

    ``path`` None: the built-in defaults and the environment. ``require_meters`` False is for the
    commands that use no meter (the stack, migrations, queries, the dashboard, ``produce``).
    """
    env = os.environ if env is None else env
    source = str(path) if path else "configuration"
    document: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        try:
            loaded = yaml.load(path.read_text(), Loader=_TextLoader)  # a SafeLoader
        except FileNotFoundError:
            raise ConfigError([f"{path}: file not found"], source) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {exc}"], source) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"], source)
        document = loaded or {}
        base_dir = path.resolve().parent
    r = _Reader(_apply_env(document, env))
    r.section(
        document,
        "",
        {"kafka", "storage", "stack", "access", "ingest", "pipeline", "billing", "meters", "rating", "credits", "alerts"},
    )
    stack = _stack(r, document.get("stack"), base_dir)
    config = Config(
        kafka=_kafka(r, document.get("kafka"), stack, base_dir),
        storage=_storage(r, document.get("storage"), base_dir, stack),
        stack=stack,
        access=_access(r, document.get("access"), base_dir, stack),
        ingest=_ingest(r, document.get("ingest"), base_dir, stack),
        pipeline=_pipeline(r, document.get("pipeline")),
        billing=_billing(r, document.get("billing")),
        meters=_meters(r, document.get("meters"), required=require_meters),
    )
    config = replace(config, rating=_rating(r, document.get("rating"), {m.name for m in config.meters if m.name}))
    config = replace(config, alerts=_alerts(r, document.get("alerts"), config, env))
    config = replace(config, credits=_credits(r, document.get("credits")))
    if config.kafka.transaction_timeout <= config.pipeline.checkpoint_interval:
        r.add(
            "kafka.transaction_timeout",
            f"must be longer than pipeline.checkpoint_interval ({format_duration(config.pipeline.checkpoint_interval)}): "
            "a transaction stays open from one checkpoint to the next",
        )
    if r.problems:
        raise ConfigError(r.problems, source)
    return config


def load_stack(env: Mapping[str, str] | None = None) -> StackSettings:
    """The local stack's settings, for the commands without a configuration file (``metering stack``)."""
    return load_config(None, env, require_meters=False).stack
