-- Pipeline health counters (whole database).
SELECT
    (SELECT count() FROM raw_events FINAL) AS raw_events,
    (SELECT count() FROM dead_letters FINAL) AS dead_letters,
    (SELECT count() FROM duplicates FINAL) AS duplicated_ids,
    (SELECT sum(seen - 1) FROM duplicates FINAL) AS duplicates_dropped,
    (SELECT countIf(variants > 1) FROM duplicates FINAL) AS conflicting_ids,
    (SELECT count() FROM corrections FINAL) AS corrections,
    (SELECT count() FROM period_finals FINAL) AS finals
