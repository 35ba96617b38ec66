"""Names of the job's own Flink counters (registered by jobs/finalize.py, read by `metering job status`)."""

from __future__ import annotations

#: Counters of the finalization operator: metric name -> meaning.
METRICS = {
    "meteringFinalsEmitted": "final totals emitted",
    "meteringCorrectionsEmitted": "correction records (late beyond grace)",
    "meteringLateEvents": "events behind the watermark (within grace: counted; beyond: corrections)",
    "meteringAggregateUpdates": "provisional aggregate rows written",
}
