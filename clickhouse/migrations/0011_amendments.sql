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
