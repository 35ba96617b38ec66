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

    Requires ``table.local-time-zone = UTC`` (``UNIX_TIMESTAMP`` reads the local part in it).
    """
    local = f"CONCAT(SUBSTR({text}, 1, 10), ' ', SUBSTR({text}, 12, 8))"
    secs = f"UNIX_TIMESTAMP({local}, 'yyyy-MM-dd HH:mm:ss')"
    millis = f"CAST(SUBSTR(CONCAT(COALESCE(REGEXP_EXTRACT({text}, '^.{{19}}\\.(\\d+)', 1), ''), '000'), 1, 3) AS BIGINT)"
    zone = f"REGEXP_EXTRACT({text}, '([Zz]|[+-]\\d{{2}}:\\d{{2}})$', 1)"
    offset_minutes = (
        f"(CASE WHEN UPPER({zone}) = 'Z' THEN 0 ELSE "
        f"(CASE WHEN SUBSTR({zone}, 1, 1) = '-' THEN -1 ELSE 1 END) * "
        f"(CAST(SUBSTR({zone}, 2, 2) AS INT) * 60 + CAST(SUBSTR({zone}, 5, 2) AS INT)) END)"
    )
    return (
        f"(CASE WHEN {text} IS NOT NULL AND REGEXP({text}, '{RFC3339}') "
        f"AND FROM_UNIXTIME({secs}, 'yyyy-MM-dd HH:mm:ss') = {local} "
        f"THEN {secs} * 1000 + {millis} - {offset_minutes} * 60000 END)"
    )


def source_schema_columns(skew: timedelta) -> list[tuple[str, str]]:
    """Computed columns of the events source: ``(name, SQL expression)``.

    ``rowtime`` is the event time when the event is valid and not too far in the future, else the
    epoch: an invalid or future-dated event never advances the watermark.
    """
    doc = doc_sql()
    text = f"JSON_VALUE({doc}, '$.timestamp')"
    millis = event_millis_sql(text)
    skew_ms = int(skew / timedelta(milliseconds=1))
    kafka_ms = f"({epoch_seconds_sql('kafka_ts')} * 1000)"  # whole seconds (+1 s below); skew is minutes
    rowtime = (
        f"TO_TIMESTAMP_LTZ(CASE WHEN {millis} IS NOT NULL AND {millis} <= {kafka_ms} + 1000 + {skew_ms} "
        f"THEN {millis} ELSE 0 END, 3)"
    )
    return [("proc_time", "PROCTIME()"), ("rowtime", rowtime)]


def parse_view(source: str, meters: tuple[Meter, ...], skew: timedelta) -> str:
    """``parsed``: every record with its fields and ``reason`` (NULL = valid). One reason per record."""
    doc = doc_sql()
    event_types = sorted({m.event_type for m in meters})
    known = ", ".join(lit(t) for t in event_types)
    skew_ms = int(skew / timedelta(milliseconds=1))
    return f"""
SELECT payload, kafka_partition, kafka_offset, kafka_ts, proc_time, rowtime, doc,
       event_id, customer_id, event_type, ts_text, q_text, event_ms,
       CASE
         WHEN NOT (doc IS JSON) THEN 'malformed_json'
         WHEN NOT (doc IS JSON OBJECT) THEN 'not_an_object'
         WHEN event_id IS NULL OR customer_id IS NULL OR event_type IS NULL OR ts_text IS NULL OR q_text IS NULL
           THEN 'missing_field'
         WHEN schema_version IS NOT NULL AND schema_version <> '1' THEN 'bad_schema_version'
         WHEN CHAR_LENGTH(event_id) > 128 OR REGEXP(event_id, '[\\x00-\\x1f]') THEN 'bad_event_id'
         WHEN CHAR_LENGTH(customer_id) > 128 OR NOT REGEXP(customer_id, '{CUSTOMER_ID}') THEN 'bad_customer_id'
         WHEN CHAR_LENGTH(event_type) > 64 OR NOT REGEXP(event_type, '{EVENT_TYPE}') THEN 'bad_event_type'
         WHEN event_ms IS NULL THEN 'bad_timestamp'
         WHEN NOT REGEXP(q_text, '{DECIMAL_38_9}') THEN 'bad_quantity'
         WHEN event_type NOT IN ({known}) THEN 'unknown_meter'
         WHEN event_ms > {epoch_seconds_sql("kafka_ts")} * 1000 + 1000 + {skew_ms} THEN 'future_timestamp'
       END AS reason
FROM (
  SELECT payload, kafka_partition, kafka_offset, kafka_ts, proc_time, rowtime, {doc} AS doc,
         JSON_VALUE({doc}, '$.event_id') AS event_id,
         JSON_VALUE({doc}, '$.customer_id') AS customer_id,
         JSON_VALUE({doc}, '$.event_type') AS event_type,
         JSON_VALUE({doc}, '$.timestamp') AS ts_text,
         JSON_VALUE({doc}, '$.quantity') AS q_text,
         JSON_VALUE({doc}, '$.schema_version') AS schema_version,
         {event_millis_sql(f"JSON_VALUE({doc}, '$.timestamp')")} AS event_ms
  FROM {source}
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
SELECT payload, kafka_partition, kafka_offset, kafka_ts, rowtime, doc, event_id, customer_id, event_type,
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


def metered_view(deduped: str, meters: tuple[Meter, ...]) -> str:
    """One row per (event, meter that selects it): value, group key and a meter-level ``reason``.

    ``val`` is the value's exact decimal text (validated), not a DECIMAL: PyFlink cannot carry
    DECIMAL across the Table/DataStream boundary the job uses to materialise the lateness flag.
    """
    branches = []
    for meter in meters:
        if meter.value_property is None:
            value_text = "q_text"
        else:
            value_text = f"JSON_VALUE(doc, {lit('$.properties.' + meter.value_property)})"
        numeric = meter.aggregation.needs_numeric_value
        if numeric:
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
            reason = (
                "CAST(NULL AS STRING)"
                if meter.allow_negative
                else "CASE WHEN CAST(q_text AS DECIMAL(38, 9)) < 0 THEN 'negative_value' END"
            )
            value = "CAST(NULL AS STRING)"
        distinct = value_text if meter.aggregation is Aggregation.UNIQUE_COUNT else "CAST(NULL AS STRING)"
        latest = (
            f"CONCAT(LPAD(CAST(event_ms AS STRING), 15, '0'), CHR(1), event_id, CHR(1), {value_text})"
            if meter.aggregation is Aggregation.LATEST
            else "CAST(NULL AS STRING)"
        )
        branches.append(
            f"""SELECT customer_id, {lit(meter.name)} AS meter, {_group_key_sql(meter)} AS group_key, event_id, event_ms,
       rowtime, {value} AS val, {distinct} AS distinct_value, {latest} AS latest_enc, {reason} AS reason,
       doc AS payload, kafka_partition, kafka_offset, kafka_ts
FROM {deduped} WHERE event_type = {lit(meter.event_type)}"""
        )
    return "\nUNION ALL\n".join(branches)


def flagged_view(metered: str) -> str:
    """Adds ``late``: the row is at or behind the watermark here (one evaluation per row).

    Must be materialised once (the job converts it to a DataStream and back) before it feeds more
    than one consumer: ``CURRENT_WATERMARK`` evaluated in two places can disagree about a row.
    """
    return f"""
SELECT *, CURRENT_WATERMARK(rowtime) IS NOT NULL AND rowtime <= CURRENT_WATERMARK(rowtime) AS late
FROM {metered}"""


PARTIAL_COLUMNS = (
    "customer_id, meter, group_key, minute_ms, window_end_ms, cnt, total, mx, mn, distinct_values, latest_enc, event_id"
)


def ontime_partials_view(flagged: str, step: timedelta) -> str:
    """Cumulative partials per UTC minute, re-emitted every ``step`` of event time (CUMULATE window).

    Rows are never late for the window: ``late = FALSE`` was decided against a watermark at least
    as advanced as the window operator's when the row reaches it. Insert-only output.
    """
    return f"""
SELECT customer_id, meter, group_key,
       {epoch_seconds_sql("window_start")} * 1000 AS minute_ms,
       {epoch_seconds_sql("window_end")} * 1000 AS window_end_ms,
       COUNT(*) AS cnt,
       CAST(SUM(CAST(val AS DECIMAL(38, 9))) AS STRING) AS total,
       CAST(MAX(CAST(val AS DECIMAL(38, 9))) AS STRING) AS mx,
       CAST(MIN(CAST(val AS DECIMAL(38, 9))) AS STRING) AS mn,
       LISTAGG(DISTINCT distinct_value, U&'\\0001') AS distinct_values, MAX(latest_enc) AS latest_enc,
       CAST('' AS STRING) AS event_id
FROM TABLE(CUMULATE(TABLE {flagged}, DESCRIPTOR(rt), {seconds(step)}, INTERVAL '1' MINUTE))
WHERE reason IS NULL AND NOT late
GROUP BY customer_id, meter, group_key, window_start, window_end"""


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
