-- amendments: what became of every void and amend the job read (schemas/amendments.py,
-- docs/semantics.md "Voids and amendments"): the audit trail, and what replays and the recompute
-- check apply to the raw events.
--
-- One row per amendment record of the events topic (its Kafka coordinates there): `outcome` is
-- `applied`, `repeated` (an amendment id its event had processed: a retry, no effect) or why the
-- job refused it (`unknown_event`, `not_amendable`, `already_voided`; those are dead letters
-- too). `quantity` is an amend's new quantity, `previous_quantity` what the event counted before
-- an applied amendment, `event_type` the event's type when the job knew it. Who asked, when and
-- why come from the record itself (`requested_by`, `requested_at`, `reason`); `payload` is the
-- record as read; `received_at` when Kafka received it.
-- Engine: ReplacingMergeTree keyed by the record's coordinates, as quarantine: the loader commits
-- offsets after a batch was stored, so a re-delivered batch collapses. Unpartitioned: amendments
-- are rare next to events. No TTL: an amendment is part of an invoice's history.
CREATE TABLE amendments
(
    amendment_id       String,
    action             LowCardinality(String),
    customer_id        String,
    event_id           String,
    event_type         LowCardinality(String),
    quantity           Nullable(Decimal(38, 9)),
    previous_quantity  Nullable(Decimal(38, 9)),
    outcome            LowCardinality(String),
    requested_at       DateTime64(3, 'UTC'),
    requested_by       String,
    reason             String,
    payload            String CODEC(ZSTD(3)),
    kafka_partition    UInt32,
    kafka_offset       UInt64,
    received_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, event_id, kafka_partition, kafka_offset);

-- The event a correction counts: a correction's own event id, except for an amendment's retraction
-- and replacement, whose event ids are `<event id>~<amendment id>-` and `…+` (jobs/flink/sql.py,
-- dedup_view): those count the amended event. A replay that examines an event absorbs its
-- amendments' corrections with its own.
CREATE VIEW correction_events AS
SELECT customer_id, concat(event_id, '~', amendment_id, sign) AS correction_event_id, event_id
FROM amendments FINAL
ARRAY JOIN ['-', '+'] AS sign
WHERE outcome = 'applied';

-- visible_corrections (0004) again, with amendments' corrections hidden with their events'.
CREATE OR REPLACE VIEW visible_corrections AS
SELECT *
FROM corrections FINAL
WHERE event_id = ''
   OR (customer_id, event_id, meter) NOT IN (
        SELECT customer_id, event_id, meter FROM replay_events
        WHERE revision IN (SELECT revision FROM replay_scope)
          AND (customer_id, event_id) IN (SELECT customer_id, event_id FROM corrections WHERE event_id != '')
        UNION ALL
        SELECT c.customer_id, c.correction_event_id, e.meter
        FROM correction_events AS c
        INNER JOIN replay_events AS e ON e.customer_id = c.customer_id AND e.event_id = c.event_id
        WHERE e.revision IN (SELECT revision FROM replay_scope));

-- visible_dead_letters (0004) again: a replay's `voided` refusal is an event an amendment took out,
-- not a refused record.
CREATE OR REPLACE VIEW visible_dead_letters AS
SELECT reason, meter, customer_id, event_id, payload, source_partition, source_offset, source_time, loaded_at
FROM dead_letters FINAL
WHERE meter = ''
   OR (customer_id, event_id, meter) NOT IN (
        SELECT customer_id, event_id, meter FROM replay_events
        WHERE revision IN (SELECT revision FROM replay_scope)
          AND (customer_id, event_id) IN (SELECT customer_id, event_id FROM dead_letters WHERE meter != ''))
UNION ALL
SELECT argMax(e.refusal, e.revision) AS reason, e.meter AS meter, e.customer_id AS customer_id, e.event_id AS event_id,
       any(r.payload) AS payload, any(e.kafka_partition) AS source_partition, any(e.kafka_offset) AS source_offset,
       any(r.received_at) AS source_time, max(s.committed_at) AS loaded_at
FROM replay_events AS e
INNER JOIN replay_scope AS s ON s.revision = e.revision AND s.customer_id = e.customer_id AND s.meter = e.meter
INNER JOIN raw_events AS r ON r.customer_id = e.customer_id AND r.event_id = e.event_id
    AND r.kafka_partition = e.kafka_partition AND r.kafka_offset = e.kafka_offset
GROUP BY e.customer_id, e.event_id, e.meter
HAVING reason NOT IN ('', 'voided');
