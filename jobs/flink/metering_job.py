"""The metering job: Kafka usage events -> exact aggregates, finals, corrections, dead letters.

Graph (every record stays in the JVM: Flink SQL, Java functions of ``udfs/jvm``; one statement
set, so the planner shares what several outputs read)::

    events (Kafka, raw bytes + partition/offset/timestamp)
      -> parsed: validation with reason codes (metering_read_event); rowtime = event time, or the
         epoch when the event is invalid or future-dated (it never advances the watermark);
         heartbeats (jobs/loader/heartbeat.py) move the watermark and go no further
      -> first_seen: keyed by (customer_id, event_id), one state (TTL = dedup retention) counting
         each id's events and distinct payloads; every record passes with `seen` and
         `behind_watermark` (judged once, against the function's own watermark)
         -> dead letters (reason != NULL)                                   [Kafka, exactly-once]
         -> duplicates (seen > 1): count/variants per id seen twice         [Kafka upserts, idempotent]
         -> deduped (seen = 1): the first occurrence
            -> metered: one row per (event, meter), value + group key + meter-level reason
               -> flagged: late = behind the watermark at dedup, or behind its partition's
                  -> meter dead letters (negative_value, missing_value, …)   [Kafka, exactly-once]
                  -> on-time rows: group window TUMBLE(step = provisional interval) partials (never drops, see sql.py)
                  -> late rows: single-event partials
                     -> keyed (customer, meter, group_key): metering_finalize (the ledger rules, timers)
                        -> aggregates / finals / corrections / processing errors [Kafka, exactly-once]

Delivery: EXACTLY_ONCE checkpoints, Kafka source offsets in the checkpoint, transactional Kafka
sinks (visible to read_committed consumers at each checkpoint). The duplicates topic is an upsert
stream keyed by (customer_id, event_id): at-least-once writes are idempotent there.

State compatibility (savepoints): DataStream operators carry fixed uids, SQL operators generated
ones that depend only on the plan's shape (see :func:`operator_uids`); docs/operations.md lists
which changes keep a savepoint usable.

Why one module: the job's graph (sources, sinks, their DDL, the statement set) reads top to bottom
as one pipeline; the per-record SQL is in sql.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from infra.flink import STATE_BACKENDS, state_backend_settings
from infra.kafka_security import flink_connector_options
from jobs.config import MAX_PARALLELISM as MAX_PARALLELISM  # declared with the configuration, which bounds parallelism by it
from jobs.config import Config, ConfigError
from jobs.flink import sql
from schemas import records

UID_PREFIX = "metering-v1"


@dataclass(frozen=True)
class Rebuild:
    """How a job that replaces another one rebuilds its state from the events topic (jobs/cluster/upgrade.py).

    It starts reading at ``start_offsets`` (per partition, from before the oldest open billing
    period and the dedup retention) instead of its consumer group's offsets. Records below
    ``replayed_until`` (the replaced job's committed offsets) rebuild state only: their dead
    letters, duplicates and corrections were already written. Every period whose end + grace is at
    or behind ``finalized_through_ms`` was finalized by the replaced job (None: none was).
    """

    start_offsets: Mapping[int, int]
    replayed_until: Mapping[int, int]
    finalized_through_ms: int | None

    @staticmethod
    def offsets_text(offsets: Mapping[int, int]) -> str:
        """``0:42,1:300``: the form of the job's command-line arguments."""
        return ",".join(f"{partition}:{offset}" for partition, offset in sorted(offsets.items()))

    @staticmethod
    def parse_offsets(text: str) -> dict[int, int]:
        """The inverse of :meth:`offsets_text`."""
        pairs = (item.split(":") for item in text.split(",") if item)
        return {int(partition): int(offset) for partition, offset in pairs}


@dataclass(frozen=True)
class RunOptions:
    """How this run is executed (not part of the business configuration)."""

    bounded: bool = False  # read up to the offsets that were latest at start, finalize everything, stop
    connector_jar: Path | None = None  # MiniCluster: the Kafka connector jar (a cluster has it in lib/)
    udf_jar: Path | None = None  # the job's Java functions (udfs/jvm); built from the project when unset
    job_name: str = "metering"
    checkpoint_dir: str | None = None
    # Kafka transactional ids of the sinks. Default: the job's consumer group, which names one
    # deployment of the pipeline: a resumed job must reuse it (to abort its predecessor's open
    # transactions), and two different deployments must not share it (they would fence each other).
    transactional_id_prefix: str | None = None
    savepoint_dir: str | None = None  # default target of savepoints (the cluster's when unset)
    state_backend: str | None = None  # "hashmap" | "rocksdb" (incremental); the cluster's when unset
    restore_from: str | None = None  # a savepoint or retained checkpoint to resume from
    allow_non_restored_state: bool = False  # resume even if some saved state has no operator (drops it)
    rebuild: Rebuild | None = None  # replace a job: rebuild its state from the topic (jobs/cluster/upgrade.py)


def _kafka_options(config: Config, topic: str, connector: str = "kafka") -> dict[str, str]:
    """A Kafka table's connection: topic, brokers and ``kafka.security`` (whose JAAS option holds the password:
    print options only through ``infra.kafka_security.redacted``)."""
    return {
        "connector": connector,
        "topic": topic,
        "properties.bootstrap.servers": config.kafka.bootstrap_servers,
        **flink_connector_options(config.kafka.security),
    }


#: Value formats of the job's sinks: JSON rows (dead letters), or the finalization's JSON records as written.
SINK_FORMATS = {"json": {"format": "json", "json.encode.decimal-as-plain-number": "true"}, "raw": {"format": "raw"}}


#: The sinks' producers batch more than Kafka's defaults (16 KiB, no linger): records become
#: visible at checkpoints anyway, and per-request overhead was most of each sink's network thread
#: (docs/benchmarks.md, "The job's Kafka sinks").
SINK_PRODUCER = {"properties.linger.ms": "50", "properties.batch.size": str(512 * 1024)}


def _exactly_once_sink(config: Config, options: RunOptions, topic: str, name: str, value_format: str = "json") -> dict[str, str]:
    timeout_ms = int(config.kafka.transaction_timeout / timedelta(milliseconds=1))
    return {
        **_kafka_options(config, topic),
        **SINK_FORMATS[value_format],
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{transactional_prefix(config, options)}-{name}",
        "properties.transaction.timeout.ms": str(timeout_ms),
        **SINK_PRODUCER,
    }


def with_parallelism(config: Config, parallelism: int | None) -> Config:
    """``config`` with ``pipeline.parallelism`` overridden (``None`` keeps it); the same bounds as the file's."""
    if parallelism is None:
        return config
    if not 1 <= parallelism <= MAX_PARALLELISM:
        raise ConfigError([f"--parallelism: {parallelism} is out of range 1–{MAX_PARALLELISM} (the job's max parallelism)"])
    from dataclasses import replace

    return replace(config, pipeline=replace(config.pipeline, parallelism=parallelism))


def transactional_prefix(config: Config, options: RunOptions) -> str:
    return options.transactional_id_prefix or config.kafka.consumer_group


def _with(options: dict[str, str]) -> str:
    return ", ".join(f"{sql.lit(k)} = {sql.lit(v)}" for k, v in options.items())


#: The events source's watermark alignment group (one source per job: the group aligns its partitions).
ALIGNMENT_GROUP = "metering-events"


def alignment_options(config: Config, *, bounded: bool = False) -> dict[str, str]:
    """Source options that align the events partitions' watermarks (none when the drift is zero, or for a bounded run).

    Flink pauses a partition whose watermark is more than ``alignment_max_drift`` ahead of the
    slowest partition's (split-level alignment: partitions read by one source task are aligned
    too) and resumes it once the slowest one catches up. Partitions are checked at each periodic
    watermark (``pipeline.auto-watermark-interval``), and what a paused partition had already
    fetched is still emitted, so a backfill can run further ahead than the drift; the partition
    watermark rule (docs/semantics.md, "Backfills") does not depend on it. Per-event watermarks
    (``scan.watermark.emit.strategy: on-event``) would check every record, but with alignment on
    they stalled the bounded job on PyFlink 2.2.1 (measured: no progress in 120 s).

    Not for a bounded run: the Kafka connector (5.0.0-2.2) can pause a partition that has just
    reached its stopping offset, after it was unassigned, and the job fails over with
    ``IllegalStateException: No current assignment for partition`` (seen in 1 of 2 runs of the
    hostile corpus; fixed upstream in a connector release not yet published for Flink 2.2). A
    live job's partitions never finish. The partition watermark rule keeps a bounded run's
    finals and corrections independent of the read order without alignment.
    """
    pipeline = config.pipeline
    if not pipeline.alignment_max_drift or bounded:
        return {}
    return {
        "scan.watermark.alignment.group": ALIGNMENT_GROUP,
        "scan.watermark.alignment.max-drift": f"{int(pipeline.alignment_max_drift / timedelta(milliseconds=1))} ms",
        "scan.watermark.alignment.update-interval": f"{int(pipeline.alignment_update_interval / timedelta(milliseconds=1))} ms",
    }


def create_environment(config: Config, options: RunOptions) -> tuple[Any, Any]:
    """StreamExecutionEnvironment + StreamTableEnvironment configured for exactly-once."""
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from infra.flink import RESTART_STRATEGY
    from infra.udf_jar import udf_jar

    conf = Configuration()
    # The job's Java functions ship with the job (on a cluster too); the Kafka connector only to the
    # MiniCluster (a cluster has it in lib/).
    functions_jar = options.udf_jar or udf_jar(config.stack)
    jars = [functions_jar, *([options.connector_jar] if options.connector_jar is not None else [])]
    conf.set_string("pipeline.jars", ";".join(jar.resolve().as_uri() for jar in jars))
    if options.checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", options.checkpoint_dir)
    if options.savepoint_dir:
        conf.set_string("execution.checkpointing.savepoint-dir", options.savepoint_dir)
    if options.state_backend:
        for key, value in state_backend_settings(options.state_backend, mini_cluster=options.connector_jar is not None).items():
            conf.set_string(key, value)
    if options.restore_from:
        conf.set_string("execution.state-recovery.path", options.restore_from)
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", str(options.allow_non_restored_state).lower())
    # Checkpoints outlive a cancelled job, so a job can always resume from its last one.
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    # Bounded restarts with backoff: a persistent failure ends the job with its cause instead of
    # restarting forever (seen: checkpoints failing on every attempt, a job silently looping).
    for key, value in RESTART_STRATEGY.items():
        conf.set_string(key, value)
    conf.set_string("execution.checkpointing.tolerable-failed-checkpoints", "3")
    # Keyed state is split into max-parallelism key groups; it must never change for a savepoint
    # to restore, so it is fixed instead of derived from the first run's parallelism.
    conf.set_string("pipeline.max-parallelism", str(MAX_PARALLELISM))
    # Chained operators hand records over without a defensive copy. Measured: -17 to -24% task CPU
    # (docs/benchmarks.md); the copy of a Table<->DataStream row converts it twice. Safe here
    # because no operator keeps a reference to its input after processing it: every stateful
    # operator reads a hash-partitioned input (records from the network are always fresh
    # objects); behind chain heads run stateless SQL operators, the Java map keying the partials
    # (its new row is serialised at once into the shuffle) and the Kafka writers (they serialise
    # at once).
    # docs/design.md, "Object reuse between chained operators".
    conf.set_string("pipeline.object-reuse", "true")
    # What the finalization function reads of the configuration (FinalizeSettings.java).
    conf.set_string("pipeline.global-job-parameters", job_parameters(config, options.rebuild))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(config.pipeline.parallelism)
    interval_ms = int(config.pipeline.checkpoint_interval / timedelta(milliseconds=1))
    env.enable_checkpointing(interval_ms, CheckpointingMode.EXACTLY_ONCE)
    t_env = StreamTableEnvironment.create(env)
    table_config = t_env.get_config()
    idle_timeout = f"{int(config.pipeline.idle_timeout / timedelta(milliseconds=1))} ms"
    for key, value in {
        "pipeline.name": options.job_name,
        "table.local-time-zone": "UTC",
        "table.exec.state.ttl": f"{int(config.pipeline.dedup_retention / timedelta(milliseconds=1))} ms",
        # A bounded run has no idle partitions (each one finishes at its end offset); with a
        # timeout, a partition held back by backpressure for that long counts as idle and the
        # watermark jumps past its unread records (seen on a loaded machine: a backfill's
        # on-time events became corrections).
        "table.exec.source.idle-timeout": "0 ms" if options.bounded else idle_timeout,
        "table.exec.sink.upsert-materialize": "NONE",
        # Savepoint compatibility: give every SQL operator a uid ("<node id>_<kind>"). Node ids
        # follow the plan's shape, which sql.metered_view keeps independent of the meter list;
        # tests/flink/test_operator_uids.py checks that adding a meter keeps them.
        "table.exec.uid.generation": "ALWAYS",
    }.items():
        table_config.set(key, value)
    return env, t_env


#: Columns of the dead-letters sink (``sql.dead_letters_view`` and ``sql.meter_dead_letters_view``).
DEAD_LETTER_COLUMNS = records.DEAD_LETTER.flink_columns()


#: Columns of the duplicates sink (``sql.duplicates_view``), upserts keyed by (customer_id, event_id).
DUPLICATE_COLUMNS = records.DUPLICATE.flink_columns()

#: Columns of the amendments sink (``sql.amendments_view``): the amendments' outcomes.
AMENDMENT_COLUMNS = records.AMENDMENT.flink_columns()


def events_columns(config: Config) -> str:
    """The events source's columns: the raw payload, Kafka metadata, ``rowtime`` and its watermark."""
    columns = sql.source_schema_columns(config.pipeline.allowed_future_skew, config.meters)
    computed = ",\n  ".join(f"{name} AS {expr}" for name, expr in columns)
    return f"""payload BYTES,
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  kafka_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  {computed},
  WATERMARK FOR rowtime AS rowtime - {sql.seconds(config.pipeline.max_out_of_orderness)}"""


@dataclass(frozen=True)
class JobViews:
    """The temporary views :func:`define_views` made, and the queries the job's outputs read from them."""

    first_seen: str
    flagged: str

    def dead_letters_sql(self) -> str:
        """Event-level and meter-level dead letters (``DEAD_LETTER_COLUMNS``)."""
        return f"{sql.dead_letters_view(self.first_seen)}\nUNION ALL\n{sql.meter_dead_letters_view(self.flagged)}"

    def duplicates_sql(self) -> str:
        return sql.duplicates_view(self.first_seen)

    def partials_sql(self, step: timedelta) -> str:
        """Minute partials for the finalization operator (``sql.PARTIAL_COLUMNS``): on-time steps and late events."""
        return f"{sql.ontime_partials_view(self.flagged, step)}\nUNION ALL\n{sql.late_partials_view(self.flagged)}"


def define_first_seen(t_env: Any, config: Config, source: str, suffix: str = "") -> str:
    """Parse and dedup over the events table ``source``; returns the name of the ``first_seen`` view.

    ``suffix`` keeps the names of several calls apart (bench/stage_floor.py runs several in one
    environment).
    """
    parsed, first_seen_input, first_seen = f"parsed{suffix}", f"first_seen_input{suffix}", f"first_seen{suffix}"
    t_env.create_temporary_view(
        parsed, t_env.sql_query(sql.parse_view(source, config.meters, config.pipeline.allowed_future_skew))
    )
    lag = config.pipeline.max_out_of_orderness
    t_env.create_temporary_view(first_seen_input, t_env.sql_query(sql.first_seen_input_view(parsed, lag, config.meters)))
    t_env.create_temporary_view(
        first_seen, t_env.sql_query(sql.first_seen_view(first_seen_input, f"{UID_PREFIX}-first-seen", config.meters))
    )
    return first_seen


def define_views(t_env: Any, config: Config, source: str, suffix: str = "") -> JobViews:
    """The job's per-event SQL over the events table ``source``: parse, dedup, meters, lateness flag.

    Every output is an ``INSERT`` of one statement set, planned together: the planner shares the
    operators the inserts have in common (one source, one dedup, one finalization), and nothing
    crosses into a DataStream and back. ``suffix``: see :func:`define_first_seen`.
    """
    first_seen = define_first_seen(t_env, config, source, suffix)
    deduped, metered, flagged = f"deduped{suffix}", f"metered{suffix}", f"flagged{suffix}"
    t_env.create_temporary_view(deduped, t_env.sql_query(sql.dedup_view(first_seen)))
    t_env.create_temporary_view(metered, t_env.sql_query(sql.metered_view(deduped, config.meters)))
    t_env.create_temporary_view(flagged, t_env.sql_query(sql.flagged_view(metered)))
    return JobViews(first_seen, flagged)


#: Job parameter the finalization function reads its settings from (``Finalize.SETTINGS_PARAMETER``).
FINALIZE_SETTINGS_PARAMETER = "metering.finalize.settings"


def finalize_settings(config: Config, finalized_through_ms: int | None = None) -> str:
    """What ``metering_finalize`` needs of the configuration, as JSON (``FinalizeSettings.java``)."""
    import json

    def policy(p: Any) -> dict[str, Any]:
        cycle, grace_ms = p.cycle, p.grace // timedelta(milliseconds=1)
        return {"kind": cycle.kind.value, "zone": cycle.timezone, "anchor": cycle.anchor, "grace_ms": grace_ms}

    billing = config.billing
    return json.dumps(
        {
            "meters": {m.name: m.aggregation.value for m in config.meters},
            "default": policy(billing.default),
            "customers": {customer: policy(p) for customer, p in sorted(billing.customers.items())},
            "finalized_through_ms": finalized_through_ms,
        },
        sort_keys=True,
    )


#: Job parameter of ``metering_replayed`` (``Replayed.PARAMETER``).
REPLAYED_UNTIL_PARAMETER = "metering.rebuild.until"


def job_parameters(config: Config, rebuild: Rebuild | None = None) -> str:
    """``pipeline.global-job-parameters``: the finalization settings and the replayed offsets.

    Values are base64 of JSON: the map's own syntax reserves ``,`` and ``:``.
    """
    import base64
    import json

    def encoded(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    through = rebuild.finalized_through_ms if rebuild is not None else None
    parameters = {FINALIZE_SETTINGS_PARAMETER: encoded(finalize_settings(config, through))}
    if rebuild is not None:
        until = {str(partition): offset for partition, offset in sorted(rebuild.replayed_until.items())}
        parameters[REPLAYED_UNTIL_PARAMETER] = encoded(json.dumps(until))
    return ",".join(f"{key}:{value}" for key, value in parameters.items())


#: The outputs of the finalization function: ``kind`` -> (topic attribute of ``config.kafka.topics``,
#: sink name). Processing errors go to the dead-letters topic through a sink of their own: two
#: exactly-once sinks sharing a transactional-id prefix fence each other. Each record is keyed by its
#: customer id (:func:`finalized_sink_options`).
FINALIZED_SINKS = {
    "aggregate": ("aggregates", "aggregates"),
    "final": ("finals", "finals"),
    "correction": ("corrections", "corrections"),
    "processing_error": ("dead_letters", "dead-letters-finalize"),
}


def finalized_sink_options(config: Config, options: RunOptions, topic: str, name: str) -> dict[str, str]:
    """A finalization output's sink: the JSON record as the value, keyed by its customer id.

    The key keeps a customer's records in one partition, in the order the job wrote them (without
    one, Kafka's sticky partitioner spreads them over the partitions). Readers that follow a value
    as it changes rely on it: the alerts evaluator takes a minute's ``on_time`` versions in order
    and folds a minute once a newer one is an hour ahead (docs/pricing.md, "Alerts").
    """
    sink_options = {
        **_exactly_once_sink(config, options, topic, name, "raw"),
        "key.format": "raw",
        "key.fields": "customer_id",
        "value.fields-include": "EXCEPT_KEY",
    }
    sink_options["value.format"] = sink_options.pop("format")
    return sink_options


def build(config: Config, options: RunOptions, env: Any, t_env: Any) -> Any:
    """Define sources, views and sinks; returns the StatementSet (every output of the job)."""
    topics = config.kafka.topics
    source_options = {
        **_kafka_options(config, topics.events),
        "format": "raw",
        "properties.group.id": config.kafka.consumer_group,
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
    }
    if not options.bounded:  # see create_environment: a bounded run has no idle partitions
        source_options["scan.watermark.idle-timeout"] = f"{int(config.pipeline.idle_timeout / timedelta(milliseconds=1))} ms"
    source_options.update(alignment_options(config, bounded=options.bounded))
    if options.bounded:
        source_options["scan.bounded.mode"] = "latest-offset"
    if options.rebuild is not None:
        source_options["scan.startup.mode"] = "specific-offsets"
        source_options["scan.startup.specific-offsets"] = ";".join(
            f"partition:{partition},offset:{offset}" for partition, offset in sorted(options.rebuild.start_offsets.items())
        )
    for statement in sql.function_ddl():  # before the source: its rowtime column calls one
        t_env.execute_sql(statement)
    t_env.execute_sql(f"""
CREATE TEMPORARY TABLE events (
  {events_columns(config)}
) WITH ({_with(source_options)})""")
    views = define_views(t_env, config, "events")

    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE dead_letters_sink ({DEAD_LETTER_COLUMNS}) "
        f"WITH ({_with(_exactly_once_sink(config, options, topics.dead_letters, 'dead-letters'))})"
    )
    duplicates_options = {
        **_kafka_options(config, topics.duplicates, "upsert-kafka"),
        "key.format": "json",
        "value.format": "json",
    }
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE duplicates_sink ({DUPLICATE_COLUMNS}, PRIMARY KEY (customer_id, event_id) NOT ENFORCED) "
        f"WITH ({_with(duplicates_options)})"
    )
    statements = t_env.create_statement_set()
    # One INSERT per exactly-once sink: two sink operators sharing a transactional-id prefix fence
    # each other's transactions (seen: the first one's records never became visible).
    statements.add_insert_sql(f"INSERT INTO dead_letters_sink {views.dead_letters_sql()}")
    statements.add_insert_sql(f"INSERT INTO duplicates_sink {views.duplicates_sql()}")

    # Live: re-emit open minutes every provisional interval. Bounded (backfill/replay): one row per
    # key-minute; provisional cadence means nothing there. A resumed job keeps the live step: the
    # window state in its savepoint was built with it.
    fresh_bounded = options.bounded and options.restore_from is None
    step = timedelta(minutes=1) if fresh_bounded else config.pipeline.provisional_interval
    t_env.create_temporary_view("partials", t_env.sql_query(views.partials_sql(step)))
    t_env.create_temporary_view("finalized", t_env.sql_query(sql.finalized_view("partials", f"{UID_PREFIX}-finalize-jvm")))
    for kind, (topic_attribute, name) in FINALIZED_SINKS.items():
        sink_options = finalized_sink_options(config, options, getattr(topics, topic_attribute), name)
        table = f"{name.replace('-', '_')}_sink"
        t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} (customer_id STRING, record STRING) WITH ({_with(sink_options)})")
        statements.add_insert_sql(f"INSERT INTO {table} SELECT customer_id, record FROM finalized WHERE kind = {sql.lit(kind)}")
    # Last, so that adding it moved no other operator's generated uid.
    raw_options = {
        **_exactly_once_sink(config, options, topics.raw, "raw", "raw"),
        "key.format": "raw",
        "key.fields": "event_ms",
        "value.fields-include": "EXCEPT_KEY",
    }
    raw_options["value.format"] = raw_options.pop("format")
    t_env.execute_sql(f"CREATE TEMPORARY TABLE raw_sink (event_ms STRING, line STRING) WITH ({_with(raw_options)})")
    statements.add_insert_sql(f"INSERT INTO raw_sink {sql.raw_rows_sql('events', topics.events)}")
    # After the raw sink, for the same reason.
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE amendments_sink ({AMENDMENT_COLUMNS}) "
        f"WITH ({_with(_exactly_once_sink(config, options, topics.amendments, 'amendments'))})"
    )
    statements.add_insert_sql(f"INSERT INTO amendments_sink {sql.amendments_view(views.first_seen)}")
    return statements


@dataclass(frozen=True)
class OperatorUid:
    """One operator of the built job graph."""

    uid: str | None
    name: str
    keyed_state: bool
    #: every input is hash-partitioned by key, so the operator heads its chain and reads fresh
    #: objects even with object reuse on (see create_environment)
    keyed_input: bool = False


def operator_uids(config: Config, options: RunOptions) -> list[OperatorUid]:
    """The operators of the job this configuration builds, with their uids (nothing is executed).

    Savepoint state is matched to operators by uid; an upgrade restores only if every stateful
    operator of the old job has a counterpart with the same uid. Operator node ids come from a
    process-wide counter, so compare lists built in separate processes.
    """
    env, t_env = create_environment(config, options)
    build(config, options, env, t_env).attach_as_datastream()
    nodes = env._j_stream_execution_environment.getStreamGraph().getStreamNodes().iterator()
    result = []
    while nodes.hasNext():
        node = nodes.next()
        partitioners = [edge.getPartitioner().getClass().getSimpleName() for edge in node.getInEdges()]
        result.append(
            OperatorUid(
                node.getTransformationUID(),
                node.getOperatorName(),
                node.getStateKeySerializer() is not None,
                bool(partitioners) and all(p == "KeyGroupStreamPartitioner" for p in partitioners),
            )
        )
    return result


def all_topics(config: Config) -> list[str]:
    t = config.kafka.topics
    return [t.events, t.raw, t.aggregates, t.finals, t.corrections, t.dead_letters, t.duplicates, t.amendments]


def run(config: Config, options: RunOptions) -> None:
    """Build and execute (blocking). With ``options.bounded`` it returns when everything is final."""
    env, t_env = create_environment(config, options)
    statements = build(config, options, env, t_env)
    statements.attach_as_datastream()
    env.execute(options.job_name)


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``flink run -py jobs/flink/metering_job.py -- --config FILE [--until-end]``."""
    import argparse

    from jobs.config import load_config

    parser = argparse.ArgumentParser(description="the metering job")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--until-end", action="store_true")
    parser.add_argument("--connector-jar", type=Path)
    parser.add_argument("--udf-jar", type=Path, help="the compiled udfs/jvm jar (default: build it from this project)")
    parser.add_argument("--job-name", default="metering")
    parser.add_argument(
        "--checkpoint-dir",
        help="checkpoint storage URI; default on the MiniCluster (--connector-jar): the local stack's checkpoint folder",
    )
    parser.add_argument("--parallelism", type=int, help="override pipeline.parallelism")
    parser.add_argument("--savepoint-dir", help="default savepoint target URI")
    parser.add_argument("--state-backend", choices=STATE_BACKENDS)
    parser.add_argument("--from-savepoint", help="resume from this savepoint (or retained checkpoint)")
    parser.add_argument("--allow-non-restored-state", action="store_true")
    parser.add_argument(
        "--rebuild-start", metavar="P:O,…", help="replace a job: read from these offsets (see jobs/cluster/upgrade.py)"
    )
    parser.add_argument("--rebuild-until", metavar="P:O,…", help="with --rebuild-start: the replaced job's committed offsets")
    parser.add_argument("--finalized-through", type=int, metavar="MS", help="with --rebuild-start: the replaced job's finality")
    args = parser.parse_args(argv)
    rebuild = None
    if args.rebuild_start is not None:
        rebuild = Rebuild(
            Rebuild.parse_offsets(args.rebuild_start), Rebuild.parse_offsets(args.rebuild_until or ""), args.finalized_through
        )
    config = with_parallelism(load_config(args.config), args.parallelism)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and args.connector_jar is not None:
        # The MiniCluster has no cluster config: without a directory Flink keeps checkpoints in
        # JobManager memory, capped at 5 MB, and every checkpoint of a real workload fails.
        checkpoint_dir = (config.stack.checkpoint_dir / args.job_name).resolve().as_uri()
    options = RunOptions(
        bounded=args.until_end,
        connector_jar=args.connector_jar,
        udf_jar=args.udf_jar,
        job_name=args.job_name,
        checkpoint_dir=checkpoint_dir,
        savepoint_dir=args.savepoint_dir,
        state_backend=args.state_backend,
        restore_from=args.from_savepoint,
        allow_non_restored_state=args.allow_non_restored_state,
        rebuild=rebuild,
    )
    run(config, options)


if __name__ == "__main__":
    main()
