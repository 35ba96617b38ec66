-- Pipeline health (operator view, whole database): refusals, duplicates, corrections, finals and loader lag.
SELECT *
FROM pipeline_health
