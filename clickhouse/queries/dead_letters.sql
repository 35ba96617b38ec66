-- Records the job refused, with the reason code and the original payload. Parameters: customer ('' = all).
SELECT reason, meter, customer_id, event_id, source_partition, source_offset, source_time, payload
FROM visible_dead_letters
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY source_partition, source_offset, meter
