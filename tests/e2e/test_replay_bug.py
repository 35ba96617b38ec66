"""A realistic bug, found by `metering check` and repaired by `metering replay`, over the real pipeline.

The meter ``tokens`` is misconfigured: ``value: properties.token`` where the events carry
``properties.tokens``. Everything below runs the real components as separate processes (the
embedded chDB directory is owned by one process at a time, so the loader has exited before
`check` / `replay` / `query` open it):

1. produce a small deterministic workload (four customers in three time zones, one with a
   mid-month anchor; July and August 2026, long closed; retries and one conflicting retry) to
   fresh topics; run the bounded metering job on the MiniCluster; `metering load --until-idle`;
2. every first-seen tokens event is a meter dead letter (missing_value, meter tokens), there is
   no tokens final, the other meters' finals are exact; `metering check` exits 1 naming the
   operations dead-letter rate;
3. fix the configuration; `metering replay --dry-run` lists the adjustments and writes nothing;
4. `metering replay` commits revision 2: the finals equal an independent recomputation from the
   input file, one adjustment per tokens final (old_total NULL), revision 1 rows kept for audit,
   the dead letters superseded; `metering check` exits 0;
5. the same replay again commits revision 3 with no adjustments and the same totals.

The commands and their outputs are saved to the test artifacts folder
(``$METERING_TEST_ARTIFACTS``, default ``.metering/test-artifacts/replay-bug/``) as a worked example.
"""

from __future__ import annotations

import json
import random
import shlex
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from infra.settings import PROJECT_ROOT, StackSettings
from jobs.config import load_config
from jobs.topics import ensure_topics
from tests.e2e.browser import artifacts_dir
from tests.e2e.harness import run_bounded_job

REASON = "fix tokens value property"
RANGE_FROM, RANGE_TO = "2026-07-01T00:00:00Z", "2026-09-01T00:00:00Z"
START, END = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)
GRACE = timedelta(hours=48)
AFTER = datetime(2026, 10, 2, tzinfo=UTC)  # later traffic, outside the range

# customer -> (time zone, monthly anchor day)
CUSTOMERS = {
    "acme": ("UTC", 1),
    "globex": ("Europe/Berlin", 1),
    "initech": ("America/New_York", 1),
    "umbrella": ("UTC", 15),
}
MODELS = ["small-1", "large-3"]
GPUS = ["a100", "h100"]
EVENTS_PER_CUSTOMER = 60
# Period edges in the customers' zones (UTC July 31 22:30 is Berlin's August; July 1 02:00 is New York's June).
EDGES = {
    "globex": ["2026-07-31T21:59:59.999Z", "2026-07-31T22:00:00.000Z", "2026-08-31T22:30:00.000Z"],
    "initech": ["2026-07-01T02:00:00.000Z", "2026-07-01T04:00:00.000Z", "2026-08-31T23:59:59.999Z"],
    "umbrella": ["2026-07-14T23:59:59.999Z", "2026-07-15T00:00:00.000Z", "2026-08-14T23:59:59.999Z"],
    "acme": ["2026-07-01T00:00:00.000Z", "2026-07-31T23:59:59.999Z", "2026-08-01T00:00:00.000Z"],
}

METERS_FIXED: list[dict[str, Any]] = [
    {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
    {"name": "active_users", "event_type": "api_call", "aggregation": "unique_count", "value": "properties.user"},
    {"name": "tokens", "event_type": "tokens", "aggregation": "sum", "value": "properties.tokens", "group_by": ["model"]},
    {"name": "gpu_seconds", "event_type": "gpu_seconds", "aggregation": "sum", "group_by": ["gpu_type"]},
]
METERS_BROKEN = [dict(m, value="properties.token") if m["name"] == "tokens" else m for m in METERS_FIXED]


# --- the workload and its independent recomputation -------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(rng: random.Random, customer: str, n: int, stamp: str) -> dict[str, Any]:
    kind = rng.choices(["api_call", "tokens", "gpu_seconds"], [5, 3, 2])[0]
    event: dict[str, Any] = {"event_id": f"{customer}-{n:04d}", "customer_id": customer, "event_type": kind, "timestamp": stamp}
    if kind == "api_call":
        event.update(quantity=1, properties={"user": f"u{rng.randrange(12)}", "endpoint": "/v1/chat"})
    elif kind == "tokens":  # the request's token count is a property; quantity counts requests
        event.update(quantity=1, properties={"model": rng.choice(MODELS), "tokens": rng.randrange(1, 20_000)})
    else:
        event.update(quantity=f"{rng.randrange(0, 3600)}.{rng.randrange(1000):03d}", properties={"gpu_type": rng.choice(GPUS)})
    return event


def write_workload(path: Path, seed: int = 20260701) -> list[str]:
    """Events in time order (Kafka order per customer), with retries a few lines later and one conflicting retry."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    span = (END - START).total_seconds()
    for customer in CUSTOMERS:
        stamps = [_stamp(START + timedelta(seconds=rng.uniform(0, span))) for _ in range(EVENTS_PER_CUSTOMER)]
        for n, stamp in enumerate(sorted(stamps + EDGES[customer])):
            events.append(_event(rng, customer, n, stamp))
    # Traffic after the bug window (October, outside the replay's range), API calls only: the live pipeline
    # finalizes October, which moves its watermark past every period of the range (they are closed).
    for customer in ("acme", "globex"):
        for n in range(8):
            stamp = _stamp(AFTER + timedelta(days=3 * n, hours=rng.randrange(24)))
            events.append(
                {"event_id": f"{customer}-oct-{n}", "customer_id": customer, "event_type": "api_call", "timestamp": stamp}
                | {"quantity": 1, "properties": {"user": f"u{rng.randrange(12)}", "endpoint": "/v1/embed"}}
            )
    events.sort(key=lambda e: (e["timestamp"], e["customer_id"], e["event_id"]))
    # the edge events must exercise the meters that matter here
    for event in events:
        if event["timestamp"] in EDGES[event["customer_id"]] and event["event_type"] != "tokens":
            event.update(event_type="tokens", quantity=1, properties={"model": MODELS[0], "tokens": 1000})
    lines = [json.dumps(e, separators=(",", ":")) for e in events]
    out: list[str] = []
    pending: list[tuple[int, str]] = []
    conflicted = False
    for index, line in enumerate(lines):
        out.append(line)
        if rng.random() < 0.10:  # a client retry of this very event, sent a few records later
            pending.append((index + rng.randrange(1, 6), line))
        if not conflicted and json.loads(line)["event_type"] == "tokens" and index > len(lines) // 2:
            changed = json.loads(line)
            changed["properties"]["tokens"] += 1  # a producer bug: same id, other payload; the first one wins
            pending.append((index + 2, json.dumps(changed, separators=(",", ":"))))
            conflicted = True
        out.extend(retry for due, retry in pending if due == index)
        pending = [(due, retry) for due, retry in pending if due != index]
    out.extend(retry for _, retry in pending)
    path.write_text("\n".join(out) + "\n")
    return out


def period_start(moment: datetime, timezone: str, anchor: int) -> str:
    """The monthly billing period's start: local midnight of the anchor day, in UTC (RFC 3339)."""
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    year, month = local.year, local.month
    if local.day < anchor:
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return _stamp(datetime(year, month, anchor, tzinfo=zone).astimezone(UTC))


Key = tuple[str, str, str, str]  # customer, meter, group_by JSON (sorted keys), period start


@dataclass
class Recomputed:
    finals: dict[Key, tuple[Decimal, int]] = field(default_factory=dict)
    missing_value: dict[tuple[str, str], str] = field(default_factory=dict)  # (customer, event id) -> meter


def recompute(lines: list[str], meters: list[dict[str, Any]]) -> Recomputed:
    """Keep-first dedup per (customer_id, event_id), then every meter's total per group and billing period."""
    result = Recomputed()
    seen: set[tuple[str, str]] = set()
    sums: dict[Key, Decimal] = defaultdict(Decimal)
    counts: dict[Key, int] = defaultdict(int)
    distinct: dict[Key, set[str]] = defaultdict(set)
    for line in lines:
        event = json.loads(line, parse_float=Decimal)
        identity = (event["customer_id"], event["event_id"])
        if identity in seen:
            continue
        seen.add(identity)
        timezone, anchor = CUSTOMERS[event["customer_id"]]
        start = period_start(datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")), timezone, anchor)
        properties = event.get("properties", {})
        for meter in (m for m in meters if m["event_type"] == event["event_type"]):
            value_path = meter.get("value", "quantity")
            raw = event["quantity"] if value_path == "quantity" else properties.get(value_path.removeprefix("properties."))
            if raw is None and meter["aggregation"] != "count":
                result.missing_value[identity] = meter["name"]
                continue
            group = json.dumps({d: str(properties.get(d, "")) for d in meter.get("group_by", [])}, sort_keys=True)
            key = (event["customer_id"], meter["name"], group, start)
            counts[key] += 1
            if meter["aggregation"] == "sum":
                sums[key] += Decimal(str(raw))
            elif meter["aggregation"] == "unique_count":
                distinct[key].add(str(raw))
    for key, count in counts.items():
        aggregation = next(m["aggregation"] for m in meters if m["name"] == key[1])
        value = {"sum": sums[key], "count": Decimal(count), "unique_count": Decimal(len(distinct[key]))}[aggregation]
        result.finals[key] = (value, count)
    return result


# --- driving the real processes -------------------------------------------------------------------------


METERING = Path(sys.executable).with_name("metering")


@dataclass
class Ran:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)

    def jsonl(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def metering(*args: str, timeout: float = 600) -> Ran:
    command = [str(METERING), *args] if METERING.exists() else [sys.executable, "-m", "jobs.cli", *args]
    started = time.monotonic()
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    return Ran(command, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


# Reads tables no `metering query` shows (adjustments, replay_scope, every revision of period_finals) in a
# process of its own: this test process never opens the chDB directory, so it never holds the engine.
_SQL = """
import json, sys
from pathlib import Path
from clickhouse.client import open_storage
from clickhouse.queries import plain
from jobs.config import load_config
config = load_config(Path(sys.argv[1]))
out = {}
with open_storage(config.storage, create_database=False) as storage:
    for name, statement in json.loads(sys.argv[2]).items():
        result = storage.client.query(statement)
        out[name] = [{c: plain(v) for c, v in zip(result.column_names, row)} for row in result.result_rows]
print(json.dumps(out))
"""


def sql(config_path: Path, **statements: str) -> dict[str, list[dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-c", _SQL, str(config_path), json.dumps(statements)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class Transcript:
    """Commands and outputs saved as text files for the docs' worked example."""

    def __init__(self, folder: Path, workdir: Path) -> None:
        self.folder = folder
        self.workdir = workdir
        folder.mkdir(parents=True, exist_ok=True)

    def shown(self, text: str) -> str:
        return text.replace(str(self.workdir), "$WORK").replace(str(PROJECT_ROOT) + "/", "")

    def save(self, name: str, ran: Ran, note: str = "") -> None:
        command = [".venv/bin/metering", *ran.command[1:]] if ran.command[0] == str(METERING) else ran.command
        text = f"$ {self.shown(shlex.join(command))}\n"
        text += f"# exit code {ran.returncode}, {ran.seconds:.1f} s{'; ' + note if note else ''}\n"
        text += self.shown(ran.stdout)
        if ran.stderr.strip():
            text += "\n# stderr:\n" + self.shown(ran.stderr)
        (self.folder / name).write_text(text)

    def write(self, name: str, text: str) -> None:
        (self.folder / name).write_text(self.shown(text))


def document(run_id: str, bootstrap: str, chdb: Path, meters: list[dict[str, Any]]) -> dict[str, Any]:
    prefix = f"replay-{run_id}"
    names = ("events", "raw", "aggregates", "finals", "corrections", "dead_letters")
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "consumer_group": f"{prefix}-job",
            "topics": {name: f"{prefix}-{name.replace('_', '-')}" for name in names},
        },
        "storage": {"backend": "chdb", "path": str(chdb), "database": f"replay_{run_id}"},
        "pipeline": {
            "checkpoint_interval": "5s",
            "provisional_interval": "10s",
            "max_out_of_orderness": "30s",
            "idle_timeout": "10s",
        },
        "billing": {
            "default": {"period": "month", "timezone": "UTC", "grace": "48h"},
            "customers": {c: {"timezone": tz, "anchor": anchor} for c, (tz, anchor) in CUSTOMERS.items()},
        },
        "meters": meters,
    }


def final_key(row: dict[str, Any]) -> Key:
    return (row["customer_id"], row["meter"], json.dumps(row["group_by"], sort_keys=True), row["period_start"])


def as_expected(rows: list[dict[str, Any]]) -> dict[Key, tuple[Decimal, int]]:
    got: dict[Key, tuple[Decimal, int]] = {}
    for row in rows:
        key = final_key(row)
        assert key not in got, f"two visible finals for {key}"
        got[key] = (Decimal(row["total"]), int(row["event_count"]))
    return got


def failed_expectation(report: dict[str, Any], suite: str, column: str) -> dict[str, Any]:
    for entry in report["suites"]:
        if entry["name"] == suite:
            for expectation in entry["expectations"]:
                if column in expectation["columns"]:
                    return expectation  # type: ignore[no-any-return]
    raise AssertionError(f"{suite} has no expectation on {column}: {json.dumps(report)[:2000]}")


# --- the test -------------------------------------------------------------------------------------------------


def test_misconfigured_meter_is_found_by_check_and_repaired_by_replay(
    tmp_path: Path, bootstrap: str, stack_settings: StackSettings
) -> None:
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    chdb = tmp_path / "chdb"
    broken_path, fixed_path = tmp_path / "metering.yaml", tmp_path / "metering-fixed.yaml"
    broken_path.write_text(yaml.safe_dump(document(run_id, bootstrap, chdb, METERS_BROKEN), sort_keys=False))
    fixed_path.write_text(yaml.safe_dump(document(run_id, bootstrap, chdb, METERS_FIXED), sort_keys=False))
    events = tmp_path / "events.jsonl"
    lines = write_workload(events)
    broken, fixed = recompute(lines, METERS_BROKEN), recompute(lines, METERS_FIXED)
    tokens_events = {i for i, m in broken.missing_value.items() if m == "tokens"}
    distinct_events = len({(json.loads(x)["customer_id"], json.loads(x)["event_id"]) for x in lines})
    assert len(lines) > distinct_events  # retries
    replayed_events = len({(e["customer_id"], e["event_id"]) for e in map(json.loads, lines) if e["timestamp"] < RANGE_TO})
    assert len(tokens_events) > 40 and not fixed.missing_value
    transcript = Transcript(artifacts_dir() / "replay-bug", tmp_path)
    transcript.write("00-meters-broken.yaml", yaml.safe_dump({"meters": METERS_BROKEN}, sort_keys=False))
    transcript.write("00-meters-fixed.yaml", yaml.safe_dump({"meters": METERS_FIXED}, sort_keys=False))

    # 1. The pipeline with the broken meter: produce, bounded job, loader until idle (then it has exited).
    ensure_topics(load_config(broken_path, env={}))
    migrated = metering("migrate", "--config", str(broken_path), timeout=180)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    events_topic = f"replay-{run_id}-events"
    produced = metering("produce", str(events), "--topic", events_topic, "--bootstrap", bootstrap, "--format", "json")
    assert produced.returncode == 0, produced.stderr[-3000:]
    run_bounded_job(broken_path, stack_settings, f"e2e-replay-{run_id}")
    loaded = metering("load", "--config", str(broken_path), "--until-idle", "--group", f"replay-{run_id}-loader")
    assert loaded.returncode == 0, loaded.stderr[-3000:]

    # 2. What the bug did: every first-seen tokens event refused by the meter, no tokens final, others exact.
    dead_letters = metering("query", "dead-letters", "--config", str(broken_path), "--format", "jsonl").jsonl()
    assert {(d["customer_id"], d["event_id"]) for d in dead_letters} == tokens_events
    assert {(d["reason"], d["meter"]) for d in dead_letters} == {("missing_value", "tokens")}
    finals_before = metering("query", "finals", "--config", str(broken_path), "--format", "jsonl").jsonl()
    assert as_expected(finals_before) == broken.finals
    assert not any(f["meter"] == "tokens" for f in finals_before)
    assert {f["revision"] for f in finals_before} == {1}
    stored = sql(broken_path, watermark="SELECT max(finalized_at_watermark) AS w FROM period_finals")
    live_watermark = datetime.fromisoformat(stored["watermark"][0]["w"].replace("Z", "+00:00"))
    # The replay takes the newest live final's watermark as the live one: the October finals put it past the
    # last period the range touches (Berlin's September, which ends 2026-09-30T22:00Z), so the range is closed.
    assert live_watermark >= datetime(2026, 9, 30, 22, tzinfo=UTC) + GRACE, live_watermark

    failing = metering("check", "--config", str(broken_path), "--format", "json", "--no-docs")
    transcript.save("01-check-failing.json.txt", failing, "the tokens meter dead-letters every event")
    assert failing.returncode == 1, (failing.stdout[-3000:], failing.stderr[-3000:])
    report = failing.json()
    assert report["success"] is False
    assert report["failed"] == ["operations.rates: expect_column_values_to_be_between(dead_letter_rate)"], report["failed"]
    rate = failed_expectation(report, "operations.rates", "dead_letter_rate")
    assert rate["success"] is False and rate["unexpected"] == 1
    (row,) = rate["examples"]
    assert row["dead_lettered"] == len(tokens_events) and row["records"] == len(lines), row
    failing_text = metering("check", "--config", str(broken_path), "--no-docs")
    transcript.save("01-check-failing.txt", failing_text)
    assert failing_text.returncode == 1 and "FAILED expect_column_values_to_be_between(dead_letter_rate)" in failing_text.stdout
    reasons = metering("query", "health", "--config", str(broken_path), "--format", "json")
    transcript.save("01-health-dead-letter-reasons.txt", reasons, "which reason and meter the dead letters carry")
    assert reasons.returncode == 0 and "missing_value" in reasons.stdout
    by_meter = metering("query", "dead-letters", "--config", str(broken_path), "--meter", "tokens", "--format", "csv")
    transcript.write(
        "01-dead-letters-tokens.txt",
        "$ .venv/bin/metering query dead-letters --config $WORK/metering.yaml --meter tokens --format csv | head -4\n"
        + "\n".join(by_meter.stdout.splitlines()[:4])
        + f"\n# ... {len(by_meter.stdout.splitlines()) - 1} rows in all\n",
    )

    # 3. Dry run with the fixed configuration: the diff, nothing written.
    tables = {
        "scope": "SELECT count() AS n FROM replay_scope",
        "runs": "SELECT count() AS n FROM replay_runs",
        "replay_events": "SELECT count() AS n FROM replay_events",
        "adjustments": "SELECT count() AS n FROM adjustments",
        "finals": "SELECT revision, count() AS n FROM period_finals FINAL GROUP BY revision ORDER BY revision",
        "segments": "SELECT revision, count() AS n FROM aggregate_segments FINAL GROUP BY revision ORDER BY revision",
    }
    before = sql(fixed_path, **tables)
    range_args = ("--from", RANGE_FROM, "--to", RANGE_TO)
    dry = metering("replay", "--config", str(fixed_path), *range_args, "--reason", REASON, "--dry-run", "--format", "json")
    transcript.save("02-replay-dry-run.json.txt", dry)
    assert dry.returncode == 0, dry.stderr[-3000:]
    plan = dry.json()
    assert plan["dry_run"] is True and plan["revision"] == 2
    assert plan["refusals"] == {} and plan["events_counted"] == replayed_events
    tokens_finals = {k: v for k, v in fixed.finals.items() if k[1] == "tokens"}
    planned = {final_key(a): (a["old_total"], Decimal(a["new_total"]), a["new_event_count"]) for a in plan["adjustments"]}
    assert planned == {k: (None, v, n) for k, (v, n) in tokens_finals.items()}
    assert sql(fixed_path, **tables) == before  # nothing written, scratch rows dropped
    assert before["scope"] == [{"n": 0}] and before["adjustments"] == [{"n": 0}] and before["replay_events"] == [{"n": 0}]
    dry_text = metering("replay", "--config", str(fixed_path), *range_args, "--dry-run", "--quiet")
    transcript.save("02-replay-dry-run.txt", dry_text)
    assert dry_text.returncode == 0 and "DRY RUN (nothing written)" in dry_text.stdout, dry_text.stderr[-2000:]
    assert sql(fixed_path, **tables) == before

    # 4. The replay: revision 2.
    replayed = metering("replay", "--config", str(fixed_path), *range_args, "--reason", REASON, "--format", "json")
    transcript.save("03-replay.json.txt", replayed)
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    result = replayed.json()
    assert result["dry_run"] is False and result["revision"] == 2
    assert {final_key(a): (a["old_total"], Decimal(a["new_total"])) for a in result["adjustments"]} == {
        k: (None, v) for k, (v, _) in tokens_finals.items()
    }
    assert result["finals_written"] == len([k for k in fixed.finals if k[3] < _stamp(END)])

    finals_after = metering("query", "finals", "--config", str(fixed_path), "--format", "jsonl")
    transcript.save("03-finals-after-replay.jsonl.txt", finals_after)
    after = finals_after.jsonl()
    assert as_expected(after) == fixed.finals
    in_range = {k for k in fixed.finals if k[3] < _stamp(END)}
    assert {final_key(f): f["revision"] for f in after} == {k: 2 if k in in_range else 1 for k in fixed.finals}
    audit = sql(
        fixed_path,
        adjustments="SELECT customer_id, meter, group_key, period_start, old_revision, revision, old_total, new_total,"
        " old_event_count, new_event_count, superseded_corrections, reason FROM adjustments FINAL",
        revision1="SELECT customer_id, meter, group_key, period_start, value AS total, event_count FROM period_finals FINAL"
        " WHERE revision = 1",
        scope="SELECT revision, count() AS n FROM replay_scope GROUP BY revision",
        runs="SELECT revision, state, reason, adjustments FROM replay_runs FINAL",
    )
    adjustments = {
        (a["customer_id"], a["meter"], json.dumps(json.loads(a["group_key"]), sort_keys=True), a["period_start"]): a
        for a in audit["adjustments"]
    }
    assert len(adjustments) == len(audit["adjustments"]) == len(tokens_finals)
    for key, (total, count) in tokens_finals.items():
        row = adjustments[key]
        assert row["old_total"] is None and Decimal(row["new_total"]) == total, row
        assert (row["old_revision"], row["revision"], row["old_event_count"], row["new_event_count"]) == (0, 2, 0, count), row
        assert row["reason"] == REASON and row["superseded_corrections"] == 0, row
    kept = {
        (r["customer_id"], r["meter"], json.dumps(json.loads(r["group_key"]), sort_keys=True), r["period_start"]): (
            Decimal(r["total"]),
            int(r["event_count"]),
        )
        for r in audit["revision1"]
    }
    assert kept == broken.finals  # the live revision's finals stay stored, for audit
    assert [(r["revision"], r["state"], r["reason"], r["adjustments"]) for r in audit["runs"]] == [
        (2, "committed", REASON, len(tokens_finals))
    ]
    assert metering("query", "dead-letters", "--config", str(fixed_path), "--format", "jsonl").jsonl() == []

    passing = metering("check", "--config", str(fixed_path), "--format", "json", "--no-docs")
    transcript.save("04-check-passing.json.txt", passing)
    assert passing.returncode == 0, (passing.stdout[-4000:], passing.stderr[-3000:])
    assert passing.json()["success"] is True and passing.json()["failed"] == []
    passing_text = metering("check", "--config", str(fixed_path), "--no-docs")
    transcript.save("04-check-passing.txt", passing_text)
    assert passing_text.returncode == 0 and "PASS:" in passing_text.stdout

    # 5. The same replay again: revision 3, no adjustments, the same totals.
    again = metering("replay", "--config", str(fixed_path), *range_args, "--reason", REASON, "--format", "json")
    transcript.save("05-replay-again.json.txt", again)
    assert again.returncode == 0, again.stderr[-3000:]
    repeat = again.json()
    assert repeat["revision"] == 3 and repeat["adjustments"] == [], repeat["adjustments"][:3]
    finals_again = metering("query", "finals", "--config", str(fixed_path), "--format", "jsonl").jsonl()
    assert as_expected(finals_again) == fixed.finals
    assert {final_key(f): f["revision"] for f in finals_again} == {k: 3 if k in in_range else 1 for k in fixed.finals}
    last = sql(fixed_path, adjustments="SELECT revision, count() AS n FROM adjustments FINAL GROUP BY revision")
    assert last["adjustments"] == [{"revision": 2, "n": len(tokens_finals)}]

    transcript.write("99-timing.txt", f"test wall time {time.monotonic() - started:.1f} s\n")
