-- The record-level rules, version 2 (0009 explains why the rules are SQL functions, and why a
-- changed rule is a new function beside the old one). Two differences from version 1, both where
-- the replay disagreed with the job (tests/unit/test_sql_rules_agreement.py):
--   * a quantity written as a JSON number is read as written. JSONExtractRaw re-writes numbers
--     (0.000000001 -> 1e-9, a 38-digit value -> 1.2345678901234568e28, 1.50 -> 1.5), so version 1
--     refused valid events whose quantity came back with an exponent (the replay silently left
--     them out) and counted 1.50 and 1.5 as one value where the job counts two;
--   * an event_id holding U+007F is refused, as the schema says.
-- clickhouse/queries/replay_examine.sql and check_recompute.sql call these; the views do not.

-- metering_quantity_text_v2: an event's quantity as written in its payload: a string's content, or
-- a number's text. ClickHouse's JSON functions give a number only as a Float64, so its text is
-- taken from the payload itself: every `"quantity": <number>` in it, the key written without
-- escapes. Inside a JSON string a quote is always escaped, so the pattern can only match a key; the
-- candidates are the top-level quantity and a property named `quantity` (properties are flat, and
-- a name appears once per object). The one whose value is the parsed quantity is taken (the first
-- when both are, which happens only for two texts of one value, as 1.50 and 1.5); JSONExtractRaw's
-- text when none is (a top-level key written with an escape).
CREATE OR REPLACE FUNCTION metering_quantity_text_v2 AS
    (payload) -> if(
        JSONType(payload, 'quantity') = 'String',
        JSONExtractString(payload, 'quantity'),
        arrayConcat(
            arrayFilter(
                t -> toFloat64OrNull(t) = JSONExtractFloat(payload, 'quantity'),
                extractAll(payload, '"quantity"[ \\t\\r\\n]*:[ \\t\\r\\n]*(-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)')
            ),
            [JSONExtractRaw(payload, 'quantity')]
        )[1]
    );

-- metering_valid_event_v2: metering_valid_event_v1 with the quantity read as written and U+007F
-- refused in event_id (schemas/validate.py, job_reason).
CREATE OR REPLACE FUNCTION metering_valid_event_v2 AS
    (schema_version, event_id, customer_id, event_type, payload, event_time, received_at, skew_ms) ->
    schema_version = 1
    AND lengthUTF8(event_id) BETWEEN 1 AND 128 AND NOT match(event_id, '[\\x00-\\x1f\\x7f]')
    AND lengthUTF8(customer_id) <= 128 AND match(customer_id, '^[A-Za-z0-9][A-Za-z0-9._:@-]*$')
    AND lengthUTF8(event_type) <= 64 AND match(event_type, '^[a-z0-9][a-z0-9_.-]*$')
    AND metering_decimal_text_ok_v1(metering_quantity_text_v2(payload))
    AND event_time <= received_at + toIntervalMillisecond(skew_ms);
