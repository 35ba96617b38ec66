-- Voids and amends the job read, with their outcome: the audit trail (who asked, when and why; what the event
-- counted before). Parameters: customer ('' = all).
SELECT customer_id, event_id, amendment_id, action, outcome, event_type, quantity, previous_quantity,
       requested_at, requested_by, reason, received_at, kafka_partition, kafka_offset
FROM amendments FINAL
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY customer_id, received_at, kafka_partition, kafka_offset
