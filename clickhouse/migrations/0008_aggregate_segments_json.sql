-- The job's aggregate records, inserted as the job wrote them: one JSON line each (its `Finalize`
-- writes them, udfs/jvm). The loader inserts the lines into this table (`JSONEachRow`, whose
-- columns are the record's fields) and ClickHouse converts them into `aggregate_segments` here,
-- so no record is decoded in Python (docs/design.md, "Raw events are decoded once").
-- `accurateCast` and `CAST` refuse what the columns cannot hold (a negative version, a value
-- beyond Decimal(38, 9)), and a field the record lacks or holds as null arrives here as NULL and
-- fails its cast to a column that is not Nullable: the insert fails and the loader quarantines the
-- record, as before (JSONEachRow itself would fill a missing field with a default).
-- tests/integration/test_loader_json_lines.py holds the conversion to the Python one it replaces.
CREATE TABLE aggregate_segments_json
(
    customer_id      Nullable(String),
    meter            Nullable(String),
    group_key        Nullable(String),
    aggregation      Nullable(String),
    minute_ms        Nullable(Int64),
    day_start_ms     Nullable(Int64),
    period_start_ms  Nullable(Int64),
    period_end_ms    Nullable(Int64),
    segment          Nullable(String),
    version          Nullable(Int64),
    value            Nullable(String),
    event_count      Nullable(Int64),
    sum              Nullable(String),
    max              Nullable(String),
    min              Nullable(String),
    distinct_values  Array(String),
    latest_ms        Nullable(Int64),
    latest_value     Nullable(String)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW aggregate_segments_from_json TO aggregate_segments AS
SELECT
    CAST(customer_id AS String) AS customer_id,
    CAST(meter AS String) AS meter,
    CAST(group_key AS String) AS group_key,
    CAST(aggregation AS String) AS aggregation,
    fromUnixTimestamp64Milli(CAST(minute_ms AS Int64), 'UTC') AS minute,
    fromUnixTimestamp64Milli(CAST(day_start_ms AS Int64), 'UTC') AS day_start,
    fromUnixTimestamp64Milli(CAST(period_start_ms AS Int64), 'UTC') AS period_start,
    fromUnixTimestamp64Milli(CAST(period_end_ms AS Int64), 'UTC') AS period_end,
    CAST(segment AS String) AS segment,
    accurateCast(CAST(version AS Int64), 'UInt64') AS version,
    CAST(value AS Decimal(38, 9)) AS value,
    CAST(event_count AS Int64) AS event_count,
    CAST(sum AS Decimal(38, 9)) AS sum_value,
    CAST(max AS Nullable(Decimal(38, 9))) AS max_value,
    CAST(min AS Nullable(Decimal(38, 9))) AS min_value,
    distinct_values,
    latest_ms,
    CAST(latest_value AS Nullable(Decimal(38, 9))) AS latest_value
FROM aggregate_segments_json;
