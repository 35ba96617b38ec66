-- Operator view: refused records per reason, all time and in the last 24 hours.
SELECT reason, total, last_24h, newest
FROM dead_letter_reasons
ORDER BY total DESC, reason
