-- Records the job refused, with the reason code and the original payload. Parameters: customer ('' = all).
-- A payload that is not UTF-8 is shown as 'base64:' and its bytes in base64 (the table holds the bytes).
SELECT reason, meter, customer_id, event_id, source_partition, source_offset, source_time,
       if(isValidUTF8(payload), payload, concat('base64:', base64Encode(payload))) AS payload
FROM visible_dead_letters
WHERE {customer:String} = '' OR customer_id = {customer:String}
ORDER BY source_partition, source_offset, meter
