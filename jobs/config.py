"""The pipeline's configuration: one YAML file, typed, validated at start.

Precedence: built-in defaults → the YAML file → environment variables
``METERING__SECTION__KEY`` (double underscores separate path parts, e.g.
``METERING__PIPELINE__DEDUP_RETENTION=3d`` or ``METERING__STORAGE__PASSWORD``).
Unknown keys are errors (a typo must not silently fall back to a default), and
every problem is reported at once with its path, e.g.::

    meters[2].aggregation: 'avg' must be one of sum, count, max, min, unique_count, latest
    billing.customers.acme.timezone: unknown IANA time zone 'Europe/Berln'

``config.example.yaml`` at the repository root documents every key; a test parses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clickhouse.client import Backend, StorageSettings
from udfs.durations import format_duration, parse_duration
from udfs.meters import Aggregation, Meter
from udfs.periods import BillingCycle, PeriodKind

T = TypeVar("T")
ENV_PREFIX = "METERING__"


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


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    topics: Topics = field(default_factory=Topics)
    #: Kafka transaction timeout of the job's exactly-once sinks; must not exceed the broker's
    #: transaction.max.timeout.ms (15 min by default on a stock broker).
    transaction_timeout: timedelta = timedelta(minutes=15)
    consumer_group: str = "metering-job"


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
    #: watermark moves while the whole topic is quiet (jobs/heartbeat.py); zero turns it off.
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
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    billing: Billing = field(default_factory=Billing)
    meters: tuple[Meter, ...] = ()

    def meters_for(self, event_type: str) -> list[Meter]:
        return [m for m in self.meters if m.event_type == event_type]


# --- validation helpers -------------------------------------------------------------------------


class _Reader:
    """Reads typed values out of nested mappings, recording every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def section(self, raw: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.problems.append(f"{path}: must be a mapping, got {type(raw).__name__}")
            return {}
        for key in sorted(set(raw) - allowed, key=str):
            self.problems.append(
                f"{path}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
                if path
                else f"{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
            )
        return dict(raw)

    def get(self, raw: Mapping[str, Any], key: str, path: str, parse: Callable[[Any], T], default: T) -> T:
        if key not in raw or raw[key] is None:
            return default
        try:
            return parse(raw[key])
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{_join(path, key)}: {exc}")
            return default


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _text(value: Any) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"{value!r} must be a string")
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} must be a positive integer")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} must be true or false")
    return value


def _positive_duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError(f"{value!r} must be longer than zero")
    return duration


def _choice(options: type[Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            return options(value)
        except ValueError:
            raise ValueError(f"{value!r} must be one of {', '.join(o.value for o in options)}") from None

    return parse


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
            r.problems.append(f"{path}.plan: unknown plan {plan!r} (defined plans: {', '.join(sorted(plans)) or 'none'})")
    kind = r.get(data, "period", path, _choice(PeriodKind), base.cycle.kind)
    default_anchor = base.cycle.anchor if kind == base.cycle.kind else 1
    anchor = r.get(data, "anchor", path, _positive_int, default_anchor)
    timezone = r.get(data, "timezone", path, _text, base.cycle.timezone)
    grace = r.get(data, "grace", path, parse_duration, base.grace)
    try:
        cycle = BillingCycle(kind, timezone, anchor)
    except ValueError as exc:
        field_name = "timezone" if "time zone" in str(exc) else "anchor"
        r.problems.append(f"{path}.{field_name}: {exc}")
        cycle = base.cycle
    return BillingPolicy(cycle, grace)


def _billing(r: _Reader, raw: Any) -> Billing:
    data = r.section(raw, "billing", {"default", "plans", "customers"})
    default = _policy(r, data.get("default"), "billing.default", BillingPolicy())
    plans: dict[str, BillingPolicy] = {}
    for name, plan in r.section(data.get("plans"), "billing.plans", set(data.get("plans") or {})).items():
        plans[str(name)] = _policy(r, plan, f"billing.plans.{name}", default)
    customers: dict[str, BillingPolicy] = {}
    for name, customer in r.section(data.get("customers"), "billing.customers", set(data.get("customers") or {})).items():
        customers[str(name)] = _policy(r, customer, f"billing.customers.{name}", default, plans=plans)
    return Billing(default, plans, customers)


def _meters(r: _Reader, raw: Any) -> tuple[Meter, ...]:
    if raw is None:
        r.problems.append("meters: at least one meter is required")
        return ()
    if not isinstance(raw, list):
        r.problems.append(f"meters: must be a list, got {type(raw).__name__}")
        return ()
    meters: list[Meter] = []
    for index, item in enumerate(raw):
        path = f"meters[{index}]"
        data = r.section(item, path, {"name", "event_type", "aggregation", "value", "group_by", "allow_negative"})
        for required in ("name", "event_type", "aggregation"):
            if required not in data:
                r.problems.append(f"{path}.{required}: required")
        group_by = data.get("group_by") or []
        if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
            r.problems.append(f"{path}.group_by: must be a list of property names")
            group_by = []
        meter = Meter(
            name=r.get(data, "name", path, _text, ""),
            event_type=r.get(data, "event_type", path, _text, ""),
            aggregation=r.get(data, "aggregation", path, _choice(Aggregation), Aggregation.SUM),
            value=r.get(data, "value", path, _text, "quantity"),
            group_by=tuple(group_by),
            allow_negative=r.get(data, "allow_negative", path, _bool, False),
        )
        if "name" in data and "event_type" in data:
            r.problems.extend(f"{path}.{f}: {m}" for f, m in meter.problems())
        meters.append(meter)
    names = [m.name for m in meters if m.name]
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.problems.append(f"meters: meter name {name!r} is defined more than once")
    return tuple(meters)


def _storage(r: _Reader, raw: Any, base_dir: Path) -> StorageSettings:
    data = r.section(raw, "storage", {"backend", "path", "url", "username", "password", "database"})
    defaults = StorageSettings()
    backend_text: str = r.get(data, "backend", "storage", _text, str(defaults.backend))
    backend: Backend = "server" if backend_text == "server" else "chdb"
    if backend_text not in ("chdb", "server"):
        r.problems.append(f"storage.backend: {backend_text!r} must be 'chdb' or 'server'")
    path = Path(r.get(data, "path", "storage", _text, str(defaults.path)))
    try:
        return StorageSettings(
            backend=backend,
            path=(path if path.is_absolute() else base_dir / path).resolve(),
            url=r.get(data, "url", "storage", _text, ""),
            username=r.get(data, "username", "storage", _text, defaults.username),
            password=str(data.get("password") or ""),
            database=r.get(data, "database", "storage", _text, defaults.database),
        )
    except ValueError as exc:
        r.problems.append(str(exc))
        return defaults


def _kafka(r: _Reader, raw: Any) -> KafkaSettings:
    data = r.section(raw, "kafka", {"bootstrap_servers", "topics", "transaction_timeout", "consumer_group"})
    defaults = KafkaSettings()
    topic_fields = set(Topics.__dataclass_fields__)
    topics_raw = r.section(data.get("topics"), "kafka.topics", topic_fields)
    topics = Topics(**{k: r.get(topics_raw, k, "kafka.topics", _text, getattr(defaults.topics, k)) for k in topic_fields})
    names = [getattr(topics, k) for k in sorted(topic_fields)]
    if len(set(names)) != len(names):
        r.problems.append("kafka.topics: every topic must have its own name")
    timeout = r.get(data, "transaction_timeout", "kafka", _positive_duration, defaults.transaction_timeout)
    return KafkaSettings(
        bootstrap_servers=r.get(data, "bootstrap_servers", "kafka", _text, defaults.bootstrap_servers),
        topics=topics,
        transaction_timeout=timeout,
        consumer_group=r.get(data, "consumer_group", "kafka", _text, defaults.consumer_group),
    )


def _pipeline(r: _Reader, raw: Any) -> PipelineSettings:
    names = set(PipelineSettings.__dataclass_fields__)
    data = r.section(raw, "pipeline", names)
    defaults = PipelineSettings()
    values: dict[str, Any] = {}
    for name in names:
        parse = {
            "parallelism": _positive_int,
            "heartbeat_interval": parse_duration,
            "loader_max_batch_delay": parse_duration,
            "alignment_max_drift": parse_duration,
        }.get(name, _positive_duration)
        values[name] = r.get(data, name, "pipeline", parse, getattr(defaults, name))
    settings = PipelineSettings(**values)
    step_ms = settings.provisional_interval / timedelta(milliseconds=1)
    if step_ms != int(step_ms) or 60_000 % int(step_ms) != 0:
        r.problems.append(
            "pipeline.provisional_interval: must divide one minute exactly (e.g. 5s, 10s, 15s, 30s, 1m): "
            f"got {format_duration(settings.provisional_interval)}; open minutes are re-emitted once per step"
        )
    if settings.provisional_interval < settings.checkpoint_interval:
        r.problems.append(
            "pipeline.provisional_interval: must be >= pipeline.checkpoint_interval "
            f"({format_duration(settings.checkpoint_interval)}): exactly-once output becomes visible at checkpoints"
        )
    return settings


# --- environment overrides -----------------------------------------------------------------------


def _apply_env(document: dict[str, Any], env: Mapping[str, str]) -> None:
    """Set ``METERING__A__B=v`` as ``document['a']['b'] = v`` (values parsed as YAML scalars)."""
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        target = document
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        target[parts[-1]] = yaml.safe_load(value) if value.strip() else ""


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load, override from the environment, validate; raises :class:`ConfigError` listing every problem."""
    env = os.environ if env is None else env
    source = str(path) if path else "configuration"
    document: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError([f"{path}: file not found"], source) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {exc}"], source) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"], source)
        document = loaded or {}
        base_dir = path.resolve().parent
    _apply_env(document, env)
    r = _Reader()
    r.section(document, "", {"kafka", "storage", "pipeline", "billing", "meters"})
    config = Config(
        kafka=_kafka(r, document.get("kafka")),
        storage=_storage(r, document.get("storage"), base_dir),
        pipeline=_pipeline(r, document.get("pipeline")),
        billing=_billing(r, document.get("billing")),
        meters=_meters(r, document.get("meters")),
    )
    if r.problems:
        raise ConfigError(r.problems, source)
    return config
