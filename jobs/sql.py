"""The per-event stages of the metering job, as Flink SQL generated from the configuration.

Everything here runs in the JVM (the brief's measured facts: SQL passes ~860k rows/s where a
Python function manages ~8k). Each function takes table names in and defines a view out, so the
graph builder (jobs/metering_job.py) wires them and tests can run them on hand-made rows.

Facts these expressions rely on, measured on PyFlink 2.2.1 (docs/design.md):
- ``JSON_VALUE`` returns a JSON number's exact text (BigDecimal), but ``CAST(… AS DECIMAL(38, 9))``
  silently rounds extra digits, so quantities are checked by pattern before the cast;
- ``TO_TIMESTAMP_LTZ(text, format)`` ignores the offset and accepts 30 February, so the event
  time is computed as epoch seconds of the local part minus the parsed offset, and the local part
  must survive a round trip through ``FROM_UNIXTIME``;
- computed columns cannot reference each other, so the event-time expression is inlined into the
  rowtime column.
"""

from __future__ import annotations

from datetime import timedelta

from udfs.meters import Aggregation, Meter

#: Separator inside encoded ``latest`` values (cannot occur in ids or decimals).
SEP = "\u0001"

RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
DECIMAL_38_9 = r"^-?(0|[1-9][0-9]{0,28})(\.[0-9]{1,9})?$"
CUSTOMER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
EVENT_TYPE = r"^[a-z0-9][a-z0-9_.-]*$"
PROPERTY_PATH = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


def lit(value: str) -> str:
    """A SQL string literal (quotes doubled). Only for configuration-derived identifiers."""
    return "'" + value.replace("'", "''") + "'"


def seconds(value: timedelta) -> str:
    """An exact ``INTERVAL 'd hh:mm:ss.fff' DAY TO SECOND(3)`` literal (up to 99 days)."""
    millis = int(value / timedelta(milliseconds=1))
    days, rest = divmod(millis, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    if days > 99:
        raise ValueError(f"{value} exceeds the 99-day SQL interval limit")
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}' DAY TO SECOND(3)"


def epoch_seconds_sql(expr: str) -> str:
    """Whole epoch seconds of a timestamp expression (session time zone UTC)."""
    return f"UNIX_TIMESTAMP(DATE_FORMAT({expr}, 'yyyy-MM-dd HH:mm:ss'))"


def doc_sql(payload: str = "payload") -> str:
    return f"CAST({payload} AS STRING)"


def event_millis_sql(text: str) -> str:
    """Epoch milliseconds of an RFC 3339 ``text`` (with offset), or NULL if it is not a real instant.

    Pure integer arithmetic on the digits (days-from-civil), no date-format parsing: the pattern
    fixes every field's position, the calendar check (month lengths, leap years) rejects dates
    such as 30 February, and the offset is subtracted. ``text`` should be a column reference:
    it is used many times.
    """

    def digits(start: int, length: int) -> str:
        return f"CAST(SUBSTR({text}, {start}, {length}) AS BIGINT)"

    year, month, day = digits(1, 4), digits(6, 2), digits(9, 2)
    hour, minute, second = digits(12, 2), digits(15, 2), digits(18, 2)
    leap = f"(MOD({year}, 4) = 0 AND (MOD({year}, 100) <> 0 OR MOD({year}, 400) = 0))"
    month_days = (
        f"(CASE WHEN {month} = 2 THEN (CASE WHEN {leap} THEN 29 ELSE 28 END) WHEN {month} IN (4, 6, 9, 11) THEN 30 ELSE 31 END)"
    )
    y = f"({year} - CASE WHEN {month} <= 2 THEN 1 ELSE 0 END)"
    era = f"({y} / 400)"
    yoe = f"({y} - {era} * 400)"
    doy = f"((153 * (CASE WHEN {month} > 2 THEN {month} - 3 ELSE {month} + 9 END) + 2) / 5 + {day} - 1)"
    days = f"({era} * 146097 + {yoe} * 365 + {yoe} / 4 - {yoe} / 100 + {doy} - 719468)"
    fraction = f"CAST(SUBSTR(CONCAT(COALESCE(REGEXP_EXTRACT({text}, '^.{{19}}\\.(\\d+)', 1), ''), '000'), 1, 3) AS BIGINT)"
    zone = f"SUBSTR({text}, CHAR_LENGTH({text}) - 5, 6)"  # '+05:30', or '…:00Z' when the zone is Z
    offset_minutes = (
        f"(CASE WHEN UPPER(SUBSTR({text}, CHAR_LENGTH({text}), 1)) = 'Z' THEN 0 ELSE "
        f"(CASE WHEN SUBSTR({zone}, 1, 1) = '-' THEN -1 ELSE 1 END) * "
        f"(CAST(SUBSTR({zone}, 2, 2) AS BIGINT) * 60 + CAST(SUBSTR({zone}, 5, 2) AS BIGINT)) END)"
    )
    valid = (
        f"{text} IS NOT NULL AND REGEXP({text}, '{RFC3339}') AND {year} >= 1 AND {month} BETWEEN 1 AND 12 "
        f"AND {day} BETWEEN 1 AND {month_days} AND {hour} <= 23 AND {minute} <= 59 AND {second} <= 59 "
        f"AND (UPPER(SUBSTR({text}, CHAR_LENGTH({text}), 1)) = 'Z' OR CAST(SUBSTR({zone}, 5, 2) AS BIGINT) <= 59)"
    )
    return (
        f"(CASE WHEN {valid} THEN (({days} * 24 + {hour}) * 60 + {minute}) * 60000 + {second} * 1000 + {fraction} "
        f"- {offset_minutes} * 60000 END)"
    )


def source_schema_columns(skew: timedelta) -> list[tuple[str, str]]:
    """Computed columns of the events source: ``(name, SQL expression)``.

    ``rowtime`` drives the per-partition watermarks, so it lives in the source. It is the event
    time at second precision (``UNIX_TIMESTAMP`` with an ``XXX`` offset pattern; minute boundaries
    are whole seconds, so bucketing is unaffected), or the epoch when the text is not a plausible
    RFC 3339 instant or lies beyond ``skew`` after Kafka received it: such an event never advances
    the watermark. The exact millisecond event time is computed once in :func:`parse_view`.
    Few references to the JSON text on purpose: Flink re-evaluates an inlined expression in every
    CASE branch that mentions it (measured: 107 s per 200k records with the full expression here).
    """
    text = f"JSON_VALUE({doc_sql()}, '$.timestamp')"
    seconds_expr = (
        f"UNIX_TIMESTAMP(CONCAT(SUBSTR({text}, 1, 19), REGEXP_EXTRACT({text}, '([+-]\\d{{2}}:\\d{{2}}|[Zz])$', 1)), "
        "'yyyy-MM-dd''T''HH:mm:ssXXX')"
    )
    plausible = f"REGEXP({text}, '{RFC3339}')"
    rowtime = (
        f"TO_TIMESTAMP_LTZ(CASE WHEN {plausible} AND TO_TIMESTAMP_LTZ({seconds_expr} * 1000, 3) <= kafka_ts + {seconds(skew)} "
        f"THEN {seconds_expr} * 1000 ELSE 0 END, 3)"
    )
    return [("rowtime", rowtime)]


def parse_view(source: str, meters: tuple[Meter, ...], skew: timedelta) -> str:
    """``parsed``: every record with its fields and ``reason`` (NULL = valid). One reason per record.

    The JSON fields are extracted once, behind a ``CROSS JOIN UNNEST`` (a correlate the planner
    does not merge into the expressions above it), so the checks below reference plain columns.
    """
    doc = doc_sql()
    event_types = sorted({m.event_type for m in meters})
    known = ", ".join(lit(t) for t in event_types)
    return f"""
SELECT kafka_partition, kafka_offset, kafka_ts, rowtime, doc,
       event_id, customer_id, event_type, ts_text, q_text, event_ms,
       CASE
         WHEN NOT is_json THEN 'malformed_json'
         WHEN NOT is_object THEN 'not_an_object'
         WHEN event_id IS NULL OR customer_id IS NULL OR event_type IS NULL OR ts_text IS NULL OR q_text IS NULL
           THEN 'missing_field'
         WHEN schema_version IS NOT NULL AND schema_version <> '1' THEN 'bad_schema_version'
         WHEN CHAR_LENGTH(event_id) = 0 OR CHAR_LENGTH(event_id) > 128 OR REGEXP(event_id, '[\\x00-\\x1f]') THEN 'bad_event_id'
         WHEN CHAR_LENGTH(customer_id) > 128 OR NOT REGEXP(customer_id, '{CUSTOMER_ID}') THEN 'bad_customer_id'
         WHEN CHAR_LENGTH(event_type) > 64 OR NOT REGEXP(event_type, '{EVENT_TYPE}') THEN 'bad_event_type'
         WHEN event_ms IS NULL THEN 'bad_timestamp'
         WHEN NOT REGEXP(q_text, '{DECIMAL_38_9}') THEN 'bad_quantity'
         WHEN event_type NOT IN ({known}) THEN 'unknown_meter'
         WHEN TO_TIMESTAMP_LTZ(event_ms, 3) > kafka_ts + {seconds(skew)} THEN 'future_timestamp'
       END AS reason
FROM (
  SELECT kafka_partition, kafka_offset, kafka_ts, rowtime, doc, is_json, is_object, event_id, customer_id,
         event_type, ts_text, q_text, schema_version, {event_millis_sql("ts_text")} AS event_ms
  FROM (
    SELECT e.kafka_partition, e.kafka_offset, e.kafka_ts, e.rowtime, f.*
    FROM {source} AS e
    CROSS JOIN UNNEST(ARRAY[ROW(
      {doc}, {doc} IS JSON, {doc} IS JSON OBJECT,
      JSON_VALUE({doc}, '$.event_id'), JSON_VALUE({doc}, '$.customer_id'), JSON_VALUE({doc}, '$.event_type'),
      JSON_VALUE({doc}, '$.timestamp'), JSON_VALUE({doc}, '$.quantity'), JSON_VALUE({doc}, '$.schema_version')
    )]) AS f(doc, is_json, is_object, event_id, customer_id, event_type, ts_text, q_text, schema_version)
  )
)"""


def dead_letters_view(parsed: str) -> str:
    """Event-level dead letters: the original payload, the reason and where it came from."""
    return f"""
SELECT reason, CAST(NULL AS STRING) AS meter, customer_id, event_id, doc AS payload,
       kafka_partition, kafka_offset, kafka_ts
FROM {parsed} WHERE reason IS NOT NULL"""


def dedup_view(parsed: str) -> str:
    """First occurrence per (customer_id, event_id) within the state TTL (= dedup retention).

    Keep-first on processing time: append-only output, one keyed ``ValueState`` per id; the
    first record read from Kafka wins (a customer's events share a partition, so that is the
    first in offset order).
    """
    return f"""
SELECT kafka_partition, kafka_offset, kafka_ts, rt0 AS rowtime, doc, event_id, customer_id, event_type,
       event_ms, q_text
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id, event_id ORDER BY proc_time ASC) AS row_num
  FROM {parsed} WHERE reason IS NULL
) WHERE row_num = 1"""


def duplicates_view(parsed: str) -> str:
    """Per (customer_id, event_id) seen more than once: how often, and whether payloads differ.

    ``fingerprint`` covers what a bill depends on (type, time, quantity, properties), so a
    re-serialised but identical retry is a plain duplicate and a changed one is a conflict.
    Updating (changelog) output, written as upserts keyed by (customer_id, event_id).
    """
    fingerprint = "MD5(CONCAT_WS('|', event_type, ts_text, q_text, COALESCE(JSON_QUERY(doc, '$.properties'), '')))"
    return f"""
SELECT customer_id, event_id, COUNT(*) AS seen, COUNT(DISTINCT {fingerprint}) AS variants,
       MAX(kafka_ts) AS last_seen
FROM {parsed} WHERE reason IS NULL
GROUP BY customer_id, event_id
HAVING COUNT(*) > 1"""


def _group_key_sql(meter: Meter) -> str:
    if not meter.group_by:
        return "'{}'"
    pairs = ", ".join(f"KEY {lit(d)} VALUE COALESCE(JSON_VALUE(doc, {lit('$.properties.' + d)}), '')" for d in meter.group_by)
    return f"JSON_OBJECT({pairs})"


def _meter_row_sql(meter: Meter) -> str:
    """``ROW(meter, group_key, val, distinct_value, latest_enc, reason)`` for one meter of an event."""
    value_text = "q_text"
    if meter.value_property is not None:
        value_text = f"JSON_VALUE(doc, {lit('$.properties.' + meter.value_property)})"
    if meter.aggregation.needs_numeric_value:
        reason = (
            f"CASE WHEN {value_text} IS NULL THEN 'missing_value' "
            f"WHEN NOT REGEXP({value_text}, '{DECIMAL_38_9}') THEN 'bad_value' "
            + ("" if meter.allow_negative else f"WHEN CAST({value_text} AS DECIMAL(38, 9)) < 0 THEN 'negative_value' ")
            + "END"
        )
        value = f"CASE WHEN {value_text} IS NOT NULL AND REGEXP({value_text}, '{DECIMAL_38_9}') THEN {value_text} END"
    elif meter.aggregation is Aggregation.UNIQUE_COUNT:
        reason = f"CASE WHEN {value_text} IS NULL THEN 'missing_value' END"
        value = "CAST(NULL AS STRING)"
    else:  # count: the value is not read; a negative quantity is still refused unless allowed
        reason = "CASE WHEN CAST(q_text AS DECIMAL(38, 9)) < 0 THEN 'negative_value' END"
        if meter.allow_negative:
            reason = "CAST(NULL AS STRING)"
        value = "CAST(NULL AS STRING)"
    distinct = value_text if meter.aggregation is Aggregation.UNIQUE_COUNT else "CAST(NULL AS STRING)"
    latest = (
        f"CONCAT(LPAD(CAST(event_ms AS STRING), 15, '0'), CHR(1), event_id, CHR(1), {value_text})"
        if meter.aggregation is Aggregation.LATEST
        else "CAST(NULL AS STRING)"
    )
    fields = (lit(meter.name), _group_key_sql(meter), value, distinct, latest, reason)
    # Every field typed STRING: literals of different lengths would otherwise unify to a padded CHAR(n).
    return "ROW(" + ", ".join(f"CAST({field} AS STRING)" for field in fields) + ")"


def metered_view(deduped: str, meters: tuple[Meter, ...]) -> str:
    """One row per (event, meter that selects it): value, group key and a meter-level ``reason``.

    One correlate for all meters: the event type picks an array with one row per meter on it,
    and ``CROSS JOIN UNNEST`` fans it out. The plan's shape therefore does not depend on how
    many meters there are, so adding a meter keeps every operator's generated uid and the job
    still restores from a savepoint (a ``UNION ALL`` per meter shifted every uid after it, and
    the planner also split the dedup operator in two over the branches' different projections).

    ``val`` is the value's exact decimal text (validated), not a DECIMAL: PyFlink cannot carry
    DECIMAL across the Table/DataStream boundary the job uses to materialise the lateness flag.
    """
    by_type: dict[str, list[Meter]] = {}
    for meter in meters:
        by_type.setdefault(meter.event_type, []).append(meter)
    cases = "\n      ".join(
        f"WHEN {lit(event_type)} THEN ARRAY[{', '.join(_meter_row_sql(m) for m in typed)}]"
        for event_type, typed in sorted(by_type.items())
    )
    return f"""
SELECT customer_id, m.meter, m.group_key, event_id, event_ms, rowtime, m.val, m.distinct_value, m.latest_enc,
       m.reason, doc AS payload, kafka_partition, kafka_offset, kafka_ts
FROM {deduped}
CROSS JOIN UNNEST(
    CASE event_type
      {cases}
    END
) AS m(meter, group_key, val, distinct_value, latest_enc, reason)"""


def flagged_view(metered: str) -> str:
    """Adds ``late``: the row is at or behind the watermark here, or no watermark has arrived yet.

    Must be materialised once (the job converts it to a DataStream and back) before it feeds more
    than one consumer: ``CURRENT_WATERMARK`` evaluated in two places can disagree about a row.

    Rows read before the first watermark take the late path too. After a restore (failover or
    savepoint) the window operator resumes at the watermark of its checkpoint, while this
    operator's watermark starts from nothing; an old row flagged on-time in that gap would be
    dropped by the window (measured: 9 of 8,000 events lost across a savepoint). The late path
    counts any row exactly, at the cost of one Python call per row.
    """
    return f"""
SELECT *, CURRENT_WATERMARK(rowtime) IS NULL OR rowtime <= CURRENT_WATERMARK(rowtime) AS late
FROM {metered}"""


PARTIAL_COLUMNS = (
    "customer_id, meter, group_key, minute_ms, window_end_ms, cnt, total, mx, mn, distinct_values, latest_enc, event_id"
)


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
    start_ms = f"{epoch_seconds_sql(f'TUMBLE_START(rt, {interval})')} * 1000"
    return f"""
SELECT customer_id, meter, group_key,
       {start_ms} - MOD({start_ms}, 60000) AS minute_ms,
       {epoch_seconds_sql(f"TUMBLE_END(rt, {interval})")} * 1000 AS window_end_ms,
       COUNT(*) AS cnt,
       CAST(SUM(CAST(val AS DECIMAL(38, 9))) AS STRING) AS total,
       CAST(MAX(CAST(val AS DECIMAL(38, 9))) AS STRING) AS mx,
       CAST(MIN(CAST(val AS DECIMAL(38, 9))) AS STRING) AS mn,
       LISTAGG(DISTINCT distinct_value, U&'\\0001') AS distinct_values, MAX(latest_enc) AS latest_enc,
       CAST('' AS STRING) AS event_id
FROM {flagged}
WHERE reason IS NULL AND NOT late
GROUP BY customer_id, meter, group_key, TUMBLE(rt, {interval})"""


def late_partials_view(flagged: str) -> str:
    """Late rows as single-event partials (``window_end_ms = -1``); low volume by construction."""
    return f"""
SELECT customer_id, meter, group_key, event_ms - MOD(event_ms, 60000) AS minute_ms, CAST(-1 AS BIGINT) AS window_end_ms,
       CAST(1 AS BIGINT) AS cnt, val AS total, val AS mx, val AS mn,
       distinct_value AS distinct_values,
       latest_enc, event_id
FROM {flagged}
WHERE reason IS NULL AND late"""


def meter_dead_letters_view(flagged: str) -> str:
    return f"""
SELECT reason, meter, customer_id, event_id, payload, kafka_partition, kafka_offset, kafka_ts
FROM {flagged} WHERE reason IS NOT NULL"""
