"""`metering load` that reports its inserts, for fault tests that kill it in the middle of one.

    python -m tests.e2e.loader_probe PROGRESS_FILE [--fail-halfway TABLE] -- <`metering load` arguments>

Appends a line to PROGRESS_FILE at each step (after the Unix time), flushed at once (a test tails it and SIGKILLs the
process at the moment it wants):

- ``insert <table> <rows> <k>`` before an INSERT into ClickHouse, ``k`` counting the inserts since
  the last commit (1 = the batch's first);
- ``inserted <table> <k>`` once ClickHouse accepted it;
- ``commit`` after the batch's Kafka offsets were committed.

``--fail-halfway TABLE``: the first insert into TABLE whose rows span two or more partitions
(months) stores only the rows of the first partition, then the process SIGKILLs itself. That is
what a real multi-partition INSERT that fails part-way leaves behind: ClickHouse writes one part
per partition and commits them one by one, so the first parts stay while the batch's offsets are
never committed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from jobs.cli import main
from jobs.loader import loader as loader_module


def install(progress: Path, fail_halfway: str | None) -> None:
    """Wrap the loader's insert and commit steps to report them (and fail one insert halfway)."""
    handle = progress.open("a", buffering=1)
    original_insert = loader_module.Loader._insert_retrying
    original_commit = loader_module.Loader._commit
    inserts_since_commit = [0]

    def report(line: str) -> None:
        handle.write(f"{time.time():.3f} {line}\n")
        handle.flush()

    def insert(self: Any, table: str, rows: list[list[Any]], **kwargs: Any) -> Any:
        inserts_since_commit[0] += 1
        k = inserts_since_commit[0]
        keys = loader_module.partition_keys(table, rows)
        if table == fail_halfway and len(set(keys)) >= 2:
            first = [row for row, key in zip(rows, keys, strict=True) if key == keys[0]]
            report(f"halfway {table} {len(first)} of {len(rows)} {k}")
            original_insert(self, table, first, **kwargs)
            report(f"killed {table} {k}")
            os.kill(os.getpid(), signal.SIGKILL)
        report(f"insert {table} {len(rows)} {k}")
        result = original_insert(self, table, rows, **kwargs)
        report(f"inserted {table} {k}")
        return result

    def commit(consumer: Any) -> None:
        original_commit(consumer)
        inserts_since_commit[0] = 0
        report("commit")

    original_run = loader_module.Loader.run

    def run_reporting(self: Any, **kwargs: Any) -> Any:
        try:
            return original_run(self, **kwargs)
        except BaseException:  # `metering load` prints only the message: keep the traceback for the test
            traceback.print_exc()
            raise

    loader_module.Loader.run = run_reporting  # type: ignore[method-assign]
    loader_module.Loader._insert_retrying = insert  # type: ignore[method-assign]
    loader_module.Loader._commit = staticmethod(commit)  # type: ignore[method-assign]


def run(argv: list[str]) -> int:
    split = argv.index("--")
    own, load_args = argv[:split], argv[split + 1 :]
    fail_halfway = None
    if "--fail-halfway" in own:
        at = own.index("--fail-halfway")
        fail_halfway = own[at + 1]
        del own[at : at + 2]
    install(Path(own[0]), fail_halfway)
    return main(["load", *load_args])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
