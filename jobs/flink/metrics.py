"""Names of the job's own Flink counters, read by `metering job status`."""

from __future__ import annotations

#: Counters of the finalization operator (``metering_finalize``, udfs/jvm/.../Finalize.java): metric name -> meaning.
FINALIZE_METRICS = {
    "meteringFinalsEmitted": "final totals emitted",
    "meteringCorrectionsEmitted": "correction records (late beyond grace)",
    "meteringLateEvents": "events behind the watermark (within grace: counted; beyond: corrections)",
    "meteringAggregateUpdates": "provisional aggregate rows written",
    "meteringProcessingErrors": "partials or timers finalization failed on (dead letters, reason processing_error)",
    "meteringReplayedCorrections": (
        "corrections of replayed events left out (the replaced job wrote them: jobs/cluster/upgrade.py)"
    ),
}

#: Counters of dedup (``metering_first_seen``, udfs/jvm/.../FirstSeen.java): metric name -> meaning.
DEDUP_METRICS = {
    "meteringFirstSeen": "valid events seen for the first time (the ones billed)",
    "meteringDuplicates": "duplicates dropped",
    "meteringConflicts": "duplicates whose billing content differs from every earlier copy (a producer bug)",
}

METRICS = {**FINALIZE_METRICS, **DEDUP_METRICS}
