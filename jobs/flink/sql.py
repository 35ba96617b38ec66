"""The per-event stages of the metering job, as Flink SQL generated from the configuration.

Everything here runs in the JVM (measured, docs/design.md: SQL passes ~860k rows/s where a
Python function manages ~8k). Each function takes table names in and defines a view out, so the
graph builder (jobs/flink/metering_job.py) wires them and tests can run them on hand-made rows.

Facts these expressions rely on, measured on PyFlink 2.2.1 (docs/design.md):
- ``JSON_VALUE`` returns a JSON number's exact text (BigDecimal), but ``CAST(… AS DECIMAL(38, 9))``
  silently rounds extra digits, so quantities are checked by pattern before the cast;
- ``TO_TIMESTAMP_LTZ(text, format)`` ignores the offset and accepts 30 February, and an exact
  event-time expression in SQL cost ~40 µs per event; ``JSON_VALUE`` parses the whole document on
  every call. Small Java functions (:data:`FUNCTIONS`, ``udfs/jvm``) do these instead: one
  parse per event for all its fields, and the RFC 3339 arithmetic (docs/benchmarks.md);
- dedup and the duplicates count are one keyed process table function (``metering_first_seen``)
  instead of a ``ROW_NUMBER`` dedup and a ``GROUP BY`` with ``COUNT(DISTINCT …)``: one state and
  one shuffle per event (``COUNT(DISTINCT …)`` alone, with its per-group state map, cost as much
  as parsing and dedup together);
- computed columns cannot reference each other, so the event-time call is inlined into the
  rowtime column.

Why one module: the per-record stages are one SQL pipeline, each view reading the previous one,
generated from the configuration.
"""

from __future__ import annotations

from datetime import timedelta

from schemas import records
from schemas.amendments import VERDICT as AMENDMENT_VERDICT
from schemas.validate import MAX_EVENT_BYTES
from udfs.amendments import amendable_types
from udfs.meters import Aggregation, Meter

#: The job's Java functions (``udfs/jvm``, built by ``infra/udf_jar.py``): SQL name -> class.
FUNCTIONS = {
    "metering_event_millis": "dev.metering.udfs.EventMillis",
    "metering_rowtime_millis": "dev.metering.udfs.RowtimeMillis",
    "metering_read_event": "dev.metering.udfs.ReadEvent",
    "metering_dead_letter_payload": "dev.metering.udfs.DeadLetterPayload",
    "metering_byte_length": "dev.metering.udfs.DeadLetterPayload$ByteLength",
    "metering_is_decimal": "dev.metering.udfs.IsDecimal",
    "metering_first_seen": "dev.metering.udfs.FirstSeen",
    "metering_partition_watermark": "dev.metering.udfs.PartitionWatermark",
    "metering_finalize": "dev.metering.udfs.Finalize",
    "metering_replayed": "dev.metering.udfs.Replayed",
    "metering_raw_row": "dev.metering.udfs.RawRow",
    "metering_millis_text": "dev.metering.udfs.RawRow$MillisText",
}

#: Separator inside encoded ``latest`` values (cannot occur in ids or decimals).
SEP = "\u0001"

#: ``kafka_partition`` of a processing-error dead letter (``Finalize.NO_PARTITION``): it comes from
#: no single Kafka record; its ``kafka_offset`` is a digest of its payload.
NO_PARTITION = 2**32 - 1

#: ``reason`` of a heartbeat (jobs/loader/heartbeat.py): not an event and not a dead letter; only its
#: timestamp matters, and the source has already read it into the watermark.
HEARTBEAT = "heartbeat"

#: ``reason`` of a valid amendment (schemas/amendments.py): ``metering_first_seen`` applies it.
AMENDMENT = AMENDMENT_VERDICT


def lit(value: str) -> str:
    """A SQL string literal (quotes doubled). Only for configuration-derived identifiers."""
    return "'" + value.replace("'", "''") + "'"


#: The longest ``DAY TO SECOND`` interval literal Flink SQL takes (two day digits). Every setting
#: that ends up in one is bounded far below it at configuration load (jobs/config.py, ``DURATIONS``).
LONGEST_INTERVAL = timedelta(days=99, hours=23, minutes=59, seconds=59, milliseconds=999)


def seconds(value: timedelta) -> str:
    """An exact ``INTERVAL 'd hh:mm:ss.fff' DAY TO SECOND(3)`` literal (up to 99 days)."""
    millis = value // timedelta(milliseconds=1)
    days, rest = divmod(millis, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    if value > LONGEST_INTERVAL:
        raise ValueError(f"{value} exceeds the 99-day SQL interval limit")
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}' DAY TO SECOND(3)"


def epoch_seconds_sql(expr: str) -> str:
    """Whole epoch seconds of a timestamp expression (session time zone UTC)."""
    return f"UNIX_TIMESTAMP(DATE_FORMAT({expr}, 'yyyy-MM-dd HH:mm:ss'))"


def doc_sql(payload: str = "payload") -> str:
    return f"CAST({payload} AS STRING)"


def function_ddl() -> list[str]:
    """``CREATE TEMPORARY SYSTEM FUNCTION`` statements for :data:`FUNCTIONS` (their jar must be on ``pipeline.jars``)."""
    return [f"CREATE TEMPORARY SYSTEM FUNCTION {name} AS {lit(cls)} LANGUAGE JAVA" for name, cls in FUNCTIONS.items()]


def source_schema_columns(skew: timedelta, meters: tuple[Meter, ...]) -> list[tuple[str, str]]:
    """Computed columns of the events source: ``(name, SQL expression)``.

    ``rowtime`` drives the per-partition watermarks, so it lives in the source. It is the exact
    event time of a valid event or a heartbeat, or the epoch for any record the job refuses or
    that lies beyond ``skew`` after Kafka received it: such a record never advances the watermark
    (``metering_rowtime_millis``, one call: Flink evaluates a SQL ``CASE`` branch by branch).
    It reads the record with the same property names as :func:`parse_view`'s
    ``metering_read_event``, which then reuses that read: each record is parsed once.
    """
    skew_ms = int(skew / timedelta(milliseconds=1))
    names = "".join(f", {lit(name)}" for name in property_names(meters))
    return [("rowtime", f"TO_TIMESTAMP_LTZ(metering_rowtime_millis(payload, kafka_ts, CAST({skew_ms} AS BIGINT){names}), 3)")]


#: What a dead letter keeps of a record: its first bytes, exactly (docs/semantics.md, "Dead letters").
DEAD_LETTER_PAYLOAD_BYTES = MAX_EVENT_BYTES


def property_names(meters: tuple[Meter, ...]) -> list[str]:
    """The ``properties`` the meters read (group-by dimensions and values): the ``props`` column, in this order."""
    names = {d for m in meters for d in m.group_by} | {m.value_property for m in meters if m.value_property is not None}
    return sorted(names)


def _props_sql(meters: tuple[Meter, ...], first: int) -> str:
    """``props``: the values of :func:`property_names` from ``f.j``, whose element ``first`` holds the first."""
    elements = [f"f.j[{first + i}]" for i in range(len(property_names(meters)))]
    return f"ARRAY[{', '.join(elements)}]" if elements else "CAST(NULL AS ARRAY<STRING>)"


def _prop_sql(meters: tuple[Meter, ...], name: str) -> str:
    """The text of ``properties.<name>`` from the ``props`` column."""
    return f"props[{property_names(meters).index(name) + 1}]"


def parse_view(source: str, meters: tuple[Meter, ...], skew: timedelta) -> str:
    """``parsed``: every record with its fields and ``reason`` (NULL = valid). One reason per record.

    ``metering_read_event`` (``udfs/jvm``, ``EventRules``) reads the record's bytes once, by the
    one definition of a valid event (schemas/validate.py; tests/unit/test_event_agreement.py holds
    the two to the same verdicts): its verdict, the fields and the values of
    :func:`property_names` for the meters. Here only what depends on the configuration and on
    when Kafka received the record is added: ``unknown_meter`` and ``future_timestamp`` (for
    heartbeats too). A heartbeat (jobs/loader/heartbeat.py) gets the reason :data:`HEARTBEAT`.

    The function runs behind a ``CROSS JOIN UNNEST`` (a correlate the planner does not merge into
    the expressions above it), so the checks below reference plain columns; ``reason`` is
    computed behind a second correlate, so that the expressions above it read a plain column: the
    planner does not share common subexpressions, and every reference to an inlined ``reason``
    would evaluate the whole ``CASE`` again.

    ``kept_doc`` is what a dead letter carries of the record, the base64 of its first
    :data:`DEAD_LETTER_PAYLOAD_BYTES` bytes, and ``payload_size`` its whole size, for a record with
    a ``reason`` or an event a meter refuses (:func:`payload_needed_sql`, evaluated only for valid
    events, whose values it may cast); NULL otherwise, so the stages after parsing carry nothing.
    """
    event_types = sorted({m.event_type for m in meters})
    known = ", ".join(lit(t) for t in event_types)
    future = f"TO_TIMESTAMP_LTZ(event_ms, 3) > kafka_ts + {seconds(skew)}"  # the same rule for events and heartbeats
    names = "".join(f", {lit(name)}" for name in property_names(meters))
    # a CASE, not an OR: its branches are evaluated in order, and the meters' checks cast values
    keep = f"CASE WHEN r.reason IS NOT NULL THEN TRUE ELSE {payload_needed_sql(meters)} END"
    return f"""
SELECT kafka_partition, kafka_offset, kafka_ts, rowtime,
       CASE WHEN {keep} THEN metering_dead_letter_payload(payload, {DEAD_LETTER_PAYLOAD_BYTES}) END AS kept_doc,
       CASE WHEN {keep} THEN metering_byte_length(payload) END AS payload_size,
       event_id, customer_id, event_type, ts_text, q_text, event_ms, properties_json, props, amendment, amendment_id,
       r.reason AS reason
FROM (
  SELECT kafka_partition, kafka_offset, kafka_ts, rowtime, payload, verdict, event_id, customer_id,
         event_type, ts_text, q_text, metering_event_millis(ts_text) AS event_ms, properties_json, props,
         amendment, amendment_id
  FROM (
    SELECT e.kafka_partition, e.kafka_offset, e.kafka_ts, e.rowtime, f.payload,
           f.j[1] AS verdict, f.j[2] AS event_id, f.j[3] AS customer_id, f.j[4] AS event_type, f.j[5] AS ts_text,
           f.j[6] AS q_text, f.j[7] AS properties_json, f.j[8] AS amendment, f.j[9] AS amendment_id,
           {_props_sql(meters, 10)} AS props
    FROM {source} AS e
    CROSS JOIN UNNEST(ARRAY[ROW(
      e.payload,
      metering_read_event(e.payload{names})
    )]) AS f(payload, j)
  )
) AS v
CROSS JOIN UNNEST(ARRAY[ROW(CAST(
       CASE
         WHEN verdict = {lit(HEARTBEAT)} THEN CASE WHEN {future} THEN 'future_timestamp' ELSE {lit(HEARTBEAT)} END
         WHEN verdict = {lit(AMENDMENT)} THEN {lit(AMENDMENT)}
         WHEN verdict IS NOT NULL THEN verdict
         WHEN event_type NOT IN ({known}) THEN 'unknown_meter'
         WHEN {future} THEN 'future_timestamp'
       END AS STRING)
)]) AS r(reason)"""


def raw_rows_sql(source: str, topic: str) -> str:
    """Every valid event read (duplicates included) as its ``raw_events`` row, one JSON line, for the raw topic.

    ``metering_raw_row`` builds the line from the same read as the event's verdict (``udfs/jvm``,
    EventRules: the rowtime column parsed the record just before, in the same operator), so the
    loader inserts the lines as they are (``JSONEachRow``) and decodes no event. Valid means the one
    definition's verdict, before the configuration's checks: an event of a type no meter reads, or
    one from too far in the future, is kept here as it was before (``jobs/loader/loader.py``). The Kafka
    key is the event time (epoch milliseconds), which the loader reads for its inserts'
    partitions. Records of a rebuild's replayed range were loaded already: skipped.
    """
    return f"""
SELECT metering_millis_text(rowtime) AS event_ms, line
FROM (
  SELECT rowtime, metering_raw_row(payload, {lit(topic)}, kafka_partition, kafka_offset, kafka_ts) AS line
  FROM {source}
  WHERE NOT metering_replayed(kafka_partition, kafka_offset)
)
WHERE line IS NOT NULL"""


def dead_letters_view(first_seen: str) -> str:
    """Event-level dead letters: the original payload, the reason and where it came from (not heartbeats).

    An amendment ``metering_first_seen`` refused is one too, its outcome the reason (``unknown_event``,
    ``not_amendable``, ``already_voided``); a ``repeated`` one (an id its key has processed: a
    retry) is not, nor an applied one.
    """
    return f"""
SELECT CASE WHEN reason = {lit(AMENDMENT)} THEN a_outcome ELSE reason END AS reason, CAST(NULL AS STRING) AS meter,
       customer_id, event_id, doc AS payload_base64, payload_size, kafka_partition, kafka_offset, kafka_ts
FROM {first_seen}
WHERE reason IS NOT NULL AND reason <> {lit(HEARTBEAT)} AND NOT replayed
  AND (reason <> {lit(AMENDMENT)} OR (sign = 0 AND a_outcome <> 'repeated'))"""


#: What a bill depends on (type, time, quantity, properties): a re-serialised but identical retry
#: has the same fingerprint, a changed one does not.
FINGERPRINT = "MD5(CONCAT_WS('|', event_type, ts_text, q_text, COALESCE(properties_json, '')))"


def first_seen_input_view(parsed: str, lag: timedelta, meters: tuple[Meter, ...]) -> str:
    """What ``metering_first_seen`` reads: ``parsed``'s columns that later stages need, and each record's :data:`FINGERPRINT`.

    ``partition_wm_ms`` is the watermark of the record's own Kafka partition before it (its newest
    event time so far minus ``lag``, the watermark delay; ``metering_partition_watermark``, NULL
    before the first): :func:`flagged_view` and the finalization operator judge lateness by it as
    well as by the job's watermark. It is evaluated here, in the operator chained to the source,
    which reads each partition in offset order.

    ``doc`` is ``parsed.kept_doc``: NULL unless a dead letter may carry it, so the payload is
    neither shuffled to the function nor converted and copied behind it (docs/benchmarks.md).
    The function reads the fingerprint of valid events only, and ``amendable``
    (udfs/amendments.py, ``amendable_types``) to keep what a first occurrence counted for amendments.
    """
    lag_ms = int(lag / timedelta(milliseconds=1))
    types = sorted(amendable_types(meters))
    amendable = f"event_type IN ({', '.join(lit(t) for t in types)})" if types else "FALSE"
    return f"""
SELECT kafka_partition, kafka_offset, kafka_ts, rowtime, kept_doc AS doc, payload_size, event_id, customer_id,
       event_type, q_text, event_ms, props, reason, {FINGERPRINT} AS fingerprint, amendment, amendment_id,
       COALESCE({amendable}, FALSE) AS amendable,
       metering_partition_watermark(kafka_partition, kafka_offset, rowtime, CAST({lag_ms} AS BIGINT)) AS partition_wm_ms,
       metering_replayed(kafka_partition, kafka_offset) AS replayed
FROM {parsed}"""


def first_seen_view(first_seen_input: str, uid: str, meters: tuple[Meter, ...] = ()) -> str:
    """Every parsed record with ``seen`` and ``variants`` of its (customer_id, event_id), keyed state TTL = dedup retention.

    ``metering_first_seen`` (``udfs/jvm``) keeps, per (customer_id, event_id), how many valid
    events it has seen and their distinct fingerprints: ``seen = 1`` is the first occurrence (the
    one billed), ``seen > 1`` a duplicate carrying the counts so far. Records with a ``reason``
    (dead letters, heartbeats) pass with ``seen = 0`` and touch no state. The first record read
    from Kafka wins (a customer's events share a partition, so that is the first in offset order).
    The state's retention is ``table.exec.state.ttl``, counted from the key's latest event.

    No ``on_time`` argument, deliberately: with one, Flink drops every row behind the watermark
    before the function sees it (measured on 2.2.1), which would lose late events. Without it
    ``rowtime`` passes through as the time attribute, and the watermarks with it.
    ``uid`` names the operator's state in savepoints. ``property_names`` are the names of the ``props``
    column's elements, in order (:func:`property_names`): what the function keeps of an event for
    amendments is keyed by name, so a configuration that reads other properties after a restore
    still finds each one.
    """
    return f"""
SELECT kafka_partition, kafka_offset, kafka_ts, rowtime, doc, payload_size, event_id, customer_id, event_type, q_text,
       event_ms, props, reason, partition_wm_ms, replayed, seen, variants, behind_watermark, amendment, amendment_id, sign,
       a_event_type, a_event_ms, a_q_text, a_props, a_outcome
FROM metering_first_seen(
  input => TABLE {first_seen_input} PARTITION BY (customer_id, event_id),
  property_names => {lit(",".join(property_names(meters)))},
  uid => {lit(uid)})"""


def dedup_view(first_seen: str) -> str:
    """First occurrence per (customer_id, event_id) within the dedup retention (:func:`first_seen_view`), and amendments.

    An applied amendment's rows (``seen = 0``, ``sign`` -1 for a retraction, +1 for a replacement)
    carry the content the function kept of the event; their ``event_id`` is the event's with the
    amendment id and the sign (``evt~amd-``), so each is its own late segment and correction.
    ``sign`` is 1 for an event. ``rowtime`` is still the time attribute: the function passes it
    through with the watermarks.
    """
    amended = "seen = 0"
    return f"""
SELECT kafka_partition, kafka_offset, kafka_ts, rowtime, doc, payload_size,
       CASE WHEN {amended} THEN CONCAT(event_id, '~', amendment_id, CASE WHEN sign < 0 THEN '-' ELSE '+' END)
            ELSE event_id END AS event_id,
       customer_id,
       CASE WHEN {amended} THEN a_event_type ELSE event_type END AS event_type,
       CASE WHEN {amended} THEN a_event_ms ELSE event_ms END AS event_ms,
       CASE WHEN {amended} THEN a_q_text ELSE q_text END AS q_text,
       CASE WHEN {amended} THEN a_props ELSE props END AS props,
       partition_wm_ms, replayed, behind_watermark, sign
FROM {first_seen} WHERE seen = 1 OR (seen = 0 AND sign <> 0)"""


def duplicates_view(first_seen: str) -> str:
    """Per (customer_id, event_id) seen more than once: how often, and how many different payloads.

    One row per duplicate, carrying the counts so far (the duplicates sink keeps the latest per
    key: upserts keyed by (customer_id, event_id)); ``last_seen`` is when Kafka received it.
    ``variants`` counts distinct :data:`FINGERPRINT` values, so a re-serialised but identical
    retry is a plain duplicate and a changed one is a conflict.
    """
    return f"""
SELECT customer_id, event_id, seen, variants, kafka_ts AS last_seen
FROM {first_seen} WHERE seen > 1 AND NOT replayed"""


def amendments_view(first_seen: str) -> str:
    """One row per amendment read: its outcome, the event's type and what it counted before (the audit trail).

    An applied amendment is its retraction row (``sign = -1``: one per applied amendment, carrying
    the quantity counted before); any other outcome its one row with ``sign = 0``.
    """
    return f"""
SELECT amendment_id, amendment AS action, customer_id, event_id, a_event_type AS event_type, q_text AS quantity,
       CASE WHEN sign < 0 THEN a_q_text END AS previous_quantity, a_outcome AS outcome, doc AS payload_base64,
       kafka_partition, kafka_offset, kafka_ts
FROM {first_seen}
WHERE reason = {lit(AMENDMENT)} AND sign <= 0 AND NOT replayed"""


def _group_key_sql(meter: Meter, meters: tuple[Meter, ...]) -> str:
    if not meter.group_by:
        return "'{}'"
    pairs = ", ".join(f"KEY {lit(d)} VALUE COALESCE({_prop_sql(meters, d)}, '')" for d in meter.group_by)
    return f"JSON_OBJECT({pairs})"


def _value_text_sql(meter: Meter, meters: tuple[Meter, ...]) -> str:
    """The text of the meter's value: ``q_text`` or its property from ``props``."""
    return "q_text" if meter.value_property is None else _prop_sql(meters, meter.value_property)


def _meter_reason_sql(meter: Meter, meters: tuple[Meter, ...]) -> str | None:
    """The meter-level dead-letter reason of an event (NULL: accepted), or None when the meter refuses nothing."""
    value_text = _value_text_sql(meter, meters)
    if meter.aggregation.needs_numeric_value:
        return (
            f"CASE WHEN {value_text} IS NULL THEN 'missing_value' "
            f"WHEN NOT metering_is_decimal({value_text}) THEN 'bad_value' "
            + ("" if meter.allow_negative else f"WHEN CAST({value_text} AS DECIMAL(38, 9)) < 0 THEN 'negative_value' ")
            + "END"
        )
    if meter.aggregation is Aggregation.UNIQUE_COUNT:
        return f"CASE WHEN {value_text} IS NULL THEN 'missing_value' END"
    # count: the value is not read; a negative quantity is still refused unless allowed
    return None if meter.allow_negative else "CASE WHEN CAST(q_text AS DECIMAL(38, 9)) < 0 THEN 'negative_value' END"


def _by_event_type(meters: tuple[Meter, ...]) -> list[tuple[str, list[Meter]]]:
    by_type: dict[str, list[Meter]] = {}
    for meter in meters:
        by_type.setdefault(meter.event_type, []).append(meter)
    return sorted(by_type.items())


def payload_needed_sql(meters: tuple[Meter, ...]) -> str:
    """TRUE when a meter of the event's type refuses it: its meter-level dead letter carries the payload.

    For valid events only (``reason IS NULL``): a count meter's check casts ``q_text``, and a cast
    of text that is not a number fails the job.
    """
    cases = []
    for event_type, typed in _by_event_type(meters):
        checks = [f"{reason} IS NOT NULL" for m in typed if (reason := _meter_reason_sql(m, meters)) is not None]
        if checks:
            cases.append(f"WHEN {lit(event_type)} THEN {' OR '.join(checks)}")
    return f"CASE event_type {' '.join(cases)} ELSE FALSE END" if cases else "FALSE"


def _meter_row_sql(meter: Meter, meters: tuple[Meter, ...]) -> str:
    """``ROW(meter, group_key, val, distinct_value, latest_enc, reason)`` for one meter of an event."""
    value_text = _value_text_sql(meter, meters)
    reason = _meter_reason_sql(meter, meters) or "CAST(NULL AS STRING)"
    if meter.aggregation.needs_numeric_value:
        value = f"CASE WHEN {value_text} IS NOT NULL AND metering_is_decimal({value_text}) THEN {value_text} END"
    else:
        value = "CAST(NULL AS STRING)"
    distinct = value_text if meter.aggregation is Aggregation.UNIQUE_COUNT else "CAST(NULL AS STRING)"
    latest = (
        f"CONCAT(LPAD(CAST(event_ms AS STRING), 15, '0'), CHR(1), event_id, CHR(1), {value_text})"
        if meter.aggregation is Aggregation.LATEST
        else "CAST(NULL AS STRING)"
    )
    fields = (lit(meter.name), _group_key_sql(meter, meters), value, distinct, latest, reason)
    # Every field typed STRING: literals of different lengths would otherwise unify to a padded CHAR(n).
    return "ROW(" + ", ".join(f"CAST({field} AS STRING)" for field in fields) + ")"


def metered_view(deduped: str, meters: tuple[Meter, ...]) -> str:
    """One row per (event, meter that selects it): value, group key and a meter-level ``reason``.

    One correlate for all meters: the event type picks an array with one row per meter on it,
    and ``CROSS JOIN UNNEST`` fans it out. The plan's shape therefore does not depend on how
    many meters there are, so adding a meter keeps every operator's generated uid and the job
    still restores from a savepoint (a ``UNION ALL`` per meter shifted every uid after it, and
    the planner also split the dedup operator in two over the branches' different projections).

    ``val`` is the value's exact decimal text (validated); the group window casts it.
    """
    cases = "\n      ".join(
        f"WHEN {lit(event_type)} THEN ARRAY[{', '.join(_meter_row_sql(m, meters) for m in typed)}]"
        for event_type, typed in _by_event_type(meters)
    )
    return f"""
SELECT customer_id, m.meter, m.group_key, event_id, event_ms, rowtime, m.val, m.distinct_value, m.latest_enc,
       m.reason, doc AS payload_base64, payload_size, kafka_partition, kafka_offset, kafka_ts, partition_wm_ms,
       replayed, behind_watermark, sign
FROM {deduped}
CROSS JOIN UNNEST(
    CASE event_type
      {cases}
    END
) AS m(meter, group_key, val, distinct_value, latest_enc, reason)"""


def flagged_view(metered: str) -> str:
    """Adds ``late``: the row was at or behind the watermark at dedup, or behind its partition's watermark.

    ``behind_watermark`` comes from ``metering_first_seen``, which judges each row once against its
    own watermark (no watermark yet counts as behind). Evaluated once per row, it cannot disagree
    between the queries that read this view; ``CURRENT_WATERMARK`` in a view read by several
    queries was evaluated by each and disagreed (the probe counted 300,064 and 298,814 rows of
    300,000). The group window behind it receives watermarks in-band after the row, so a row found
    ahead of the watermark at dedup is never late at the window, before or after a restore (its
    watermark starts from nothing after a restore, like dedup's).

    A row behind its own partition's watermark takes the late path even while the job's watermark
    (the minimum over partitions) is behind it: the finalization operator decides by the
    partition's watermark whether it is a correction (docs/semantics.md, "Backfills").
    """
    return f"""
SELECT *, behind_watermark OR COALESCE(event_ms <= partition_wm_ms, FALSE) AS late
FROM {metered}"""


PARTIAL_COLUMNS = records.PARTIAL.column_names()


def ontime_partials_view(flagged: str, step: timedelta) -> str:
    """Partials per ``step`` of event time (a divisor of one minute), each within one UTC minute.

    A group window (``GROUP BY TUMBLE``), not a window TVF: the TVF operator resumes at the
    watermark stored in its checkpoint and drops rows behind it, while ``late`` was decided
    against a watermark that starts from nothing after a restore (docs/design.md). The group
    window's watermark lives in its timer service, which starts from nothing too, and watermarks
    travel in-band behind the rows: a row flagged on-time is never late here, before or after a
    restore. Rows are increments (each step's events once); the finalization operator keeps the
    running value of each open minute. Insert-only output.
    """
    interval = seconds(step)
    start_ms = f"{epoch_seconds_sql(f'TUMBLE_START(rowtime, {interval})')} * 1000"
    return f"""
SELECT customer_id, meter, group_key,
       {start_ms} - MOD({start_ms}, 60000) AS minute_ms,
       {epoch_seconds_sql(f"TUMBLE_END(rowtime, {interval})")} * 1000 AS window_end_ms,
       COUNT(*) AS cnt,
       CAST(SUM(CAST(val AS DECIMAL(38, 9))) AS STRING) AS total,
       CAST(MAX(CAST(val AS DECIMAL(38, 9))) AS STRING) AS mx,
       CAST(MIN(CAST(val AS DECIMAL(38, 9))) AS STRING) AS mn,
       LISTAGG(DISTINCT distinct_value, U&'\\0001') AS distinct_values, MAX(latest_enc) AS latest_enc,
       CAST('' AS STRING) AS event_id, CAST(NULL AS BIGINT) AS partition_wm_ms, replayed
FROM {flagged}
WHERE reason IS NULL AND NOT late
GROUP BY customer_id, meter, group_key, replayed, TUMBLE(rowtime, {interval})"""


def late_partials_view(flagged: str) -> str:
    """Late rows as single-event partials (``window_end_ms = -1``); low volume by construction.

    An amendment's retraction (``sign = -1``, only for sum and count meters) counts -1 event and
    the negated value.
    """
    return f"""
SELECT customer_id, meter, group_key, event_ms - MOD(event_ms, 60000) AS minute_ms, CAST(-1 AS BIGINT) AS window_end_ms,
       CAST(sign AS BIGINT) AS cnt,
       CASE WHEN sign < 0 THEN CASE WHEN val LIKE '-%' THEN SUBSTR(val, 2) ELSE CONCAT('-', val) END ELSE val END AS total,
       val AS mx, val AS mn,
       distinct_value AS distinct_values,
       latest_enc, event_id, partition_wm_ms, replayed
FROM {flagged}
WHERE reason IS NULL AND late"""


def meter_dead_letters_view(flagged: str) -> str:
    return f"""
SELECT reason, meter, customer_id, event_id, payload_base64, payload_size, kafka_partition, kafka_offset, kafka_ts
FROM {flagged} WHERE reason IS NOT NULL AND NOT replayed AND sign > 0"""


#: What ``metering_finalize`` emits besides its partition keys: ``kind`` and the JSON ``record``.
FINALIZED_KINDS = ("aggregate", "final", "correction", "processing_error")


def finalized_view(partials: str, uid: str) -> str:
    """The billing periods of each (customer, meter, group) key: ``metering_finalize`` over the partials.

    One row per output record: its ``customer_id`` (the sinks' Kafka key), ``kind``
    (:data:`FINALIZED_KINDS`) and ``record``, the JSON the loader reads. No ``on_time`` (late
    partials must reach it, see :func:`first_seen_view`); its timers fire on the operator's
    watermark. ``uid`` names its state in savepoints.
    """
    return f"""
SELECT customer_id, kind, record
FROM metering_finalize(input => TABLE {partials} PARTITION BY (customer_id, meter, group_key), uid => {lit(uid)})"""
