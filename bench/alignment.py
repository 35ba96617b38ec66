"""What watermark alignment costs a backfill: the bounded job on the same backlog, alignment off and on.

Each round sends the demo generator's backlog (``--events``, 84 h of event time, six customers on
four partitions) to fresh topics once per variant and runs the bounded job (exactly-once, the
MiniCluster) to the end, the variants in alternating order. Prints each run's job seconds and
events/s, and the ratio of the medians (aligned / unaligned): the machine's noise cancels in the
ratio, not in the absolute figures.

Usage (the stack must be up: `metering stack up`):
    .venv/bin/python -m bench.alignment --events 300000 --rounds 2 [--max-drift 1m]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from bench.pipeline import ROOT, bounded_job_command, config_for, fill_events_topic
from infra.settings import StackSettings
from jobs.config import load_config, load_stack


def run_once(events: int, settings: StackSettings, workdir: Path, tag: str, max_drift: str | int) -> dict[str, float]:
    """One bounded run; ``max_drift`` is ``pipeline.alignment_max_drift`` (0: alignment off)."""
    path = config_for(
        tag, settings, workdir, checkpoint_interval="10s", provisional_interval="10s", alignment_max_drift=max_drift
    )
    config = load_config(path, env={})
    data = workdir / f"{tag}.jsonl"
    fill_events_topic(config, settings, data, events)
    lines = sum(1 for _ in data.open())
    started = time.monotonic()
    job = subprocess.run(bounded_job_command(path, settings), cwd=ROOT, capture_output=True, text=True, check=False)
    if job.returncode != 0:
        raise SystemExit(job.stderr[-3000:])
    seconds = time.monotonic() - started
    return {"lines": lines, "job_s": seconds, "events_per_s": lines / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="demo events in the backlog")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant")
    parser.add_argument("--max-drift", default="1m", help="pipeline.alignment_max_drift of the aligned variant")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".metering" / "bench")
    args = parser.parse_args()
    settings = load_stack()
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"unaligned": [], "aligned": []}
    for round_number in range(args.rounds):
        order = ["unaligned", "aligned"] if round_number % 2 == 0 else ["aligned", "unaligned"]
        for variant in order:
            drift: str | int = 0 if variant == "unaligned" else args.max_drift
            result = run_once(args.events, settings, args.workdir, f"align-{variant}-{round_number}", drift)
            runs[variant].append(result)
            print(f"{variant} (round {round_number + 1}):", json.dumps({k: round(v, 1) for k, v in result.items()}), flush=True)
    medians = {variant: statistics.median(r["events_per_s"] for r in results) for variant, results in runs.items()}
    print(
        f"median events/s: unaligned {medians['unaligned']:,.0f}, aligned (max drift {args.max_drift}) "
        f"{medians['aligned']:,.0f}; ratio aligned/unaligned {medians['aligned'] / medians['unaligned']:.2f}"
    )


if __name__ == "__main__":
    main()
