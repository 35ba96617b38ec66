"""The hostile corpus (tests/corpus, issue #27) through the real job and loader: every record accounted for.

generate (>= 10,000 lines) -> produce unvalidated (lines Kafka refuses for their size are counted
at produce) -> the metering job, bounded, on the standalone cluster -> the loader until idle ->
the ledger from ClickHouse:

* every record of the events topic is exactly one of: a dead letter with a non-empty reason, the
  first occurrence of its (customer_id, event_id) in ``raw_events``, or a duplicate of one (the
  ``duplicates`` table counts them); lines read = blank + refused at produce + those;
* per meter, every first occurrence is counted once: in a final's ``event_count``, in a
  correction, in a dead letter of that meter, or in a total beyond Decimal(38, 9) (a
  ``processing_error`` dead letter of a step Flink could not sum, a final quarantined with its
  exact value);
* every record's verdict is the spec's (``schemas.validate.job_reason``: the one definition of a
  valid event, plus ``unknown_meter`` and ``future_timestamp``, which depend on the configuration
  and on when Kafka received it): a dead letter with exactly that reason, or accepted;
* the job never failed over (its exception history is empty), the loader finished with no retry
  and quarantined nothing but totals beyond Decimal(38, 9).

Every finding is collected before the test fails, into one report (also written as JSON to
``$METERING_TEST_ARTIFACTS``/hostile-corpus-report.json), grouped by corpus category and case.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaConsumer, TopicPartition

from clickhouse.client import open_storage
from clickhouse.migrate import migrate
from infra.flink_rest import FlinkRest
from infra.settings import PROJECT_ROOT
from jobs.config import Config, load_config
from jobs.flink.sql import NO_PARTITION
from jobs.loader.loader import Loader, LoaderStats
from jobs.produce import JSON_WHITESPACE, make_producer, produce_lines
from jobs.topics import ensure_topics
from schemas.validate import job_reason, validate_line
from tests.corpus.generate import CorpusLine, find_jsontestsuite, generate, write

LINES = int(os.environ.get("METERING_CORPUS_LINES", "10000"))
#: For narrowing a failure down: comma-separated categories or ``category/case`` to leave out.
EXCLUDE = [item.strip() for item in os.environ.get("METERING_CORPUS_EXCLUDE", "").split(",") if item.strip()]
JOB_TIMEOUT_S = 420
LOADER_TIMEOUT_S = 300


def corpus_config(tmp_path: Path, bootstrap: str, chdb_path: Path, run_id: str) -> tuple[Config, Path]:
    """config/metering.example.yaml (its meters and billing) on this test's topics and database."""
    document = yaml.safe_load((PROJECT_ROOT / "config" / "metering.example.yaml").read_text())
    prefix = f"corpus-{run_id}"
    document["kafka"].update(
        bootstrap_servers=bootstrap,
        consumer_group=f"{prefix}-job",
        topics={
            name: f"{prefix}-{name.replace('_', '-')}"
            for name in ("events", "raw", "aggregates", "finals", "corrections", "dead_letters")
        },
    )
    document["storage"] = {"backend": "chdb", "path": str(chdb_path), "database": f"corpus_{run_id}"}
    document["pipeline"].update(checkpoint_interval="5s", idle_timeout="10s")
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={}), path


@dataclass
class Sent:
    """A corpus line as Kafka holds it."""

    index: int  # in the corpus
    offset: int
    value: bytes
    kafka_ts: datetime


@dataclass
class Report:
    """Findings, grouped: ``problems[kind][(category, case, detail)] = count``, with one example line each."""

    problems: dict[str, Counter[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(Counter))
    examples: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, line: CorpusLine | None, detail: str, example: bytes | None = None) -> None:
        category = line.category if line else "-"
        case = line.variant.split("#")[0] if line else "-"
        self.problems[kind][(category, case, detail)] += 1
        if example is not None:
            self.examples.setdefault((kind, category, case, detail), example[:300].decode("utf-8", "backslashreplace"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "facts": self.facts,
            "problems": {
                kind: [
                    {"category": c, "case": v, "detail": d, "lines": n, "example": self.examples.get((kind, c, v, d))}
                    for (c, v, d), n in sorted(found.items())
                ]
                for kind, found in sorted(self.problems.items())
            },
        }

    def render(self, limit: int = 150) -> str:
        out = [json.dumps(self.facts, default=str)]
        for kind, found in sorted(self.problems.items()):
            out.append(f"== {kind}: {sum(found.values())} line(s)")
            out.extend(f"   {c} / {v}: {d} (x{n})" for (c, v, d), n in sorted(found.items())[:limit])
        return "\n".join(out)


def read_events(bootstrap: str, topic: str, timeout_s: float = 120) -> list[tuple[int, bytes, int]]:
    """(offset, value, timestamp ms) of every record of the one-partition ``topic``."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        records: list[tuple[int, bytes, int]] = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(partition) < end:
            assert time.monotonic() < deadline, f"could not read {topic} to its end offset {end}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.offset, r.value, r.timestamp) for r in batch)
        return records
    finally:
        consumer.close()


def produce_corpus(config: Config, corpus: list[CorpusLine], path: Path, report: Report) -> list[Sent]:
    """Send every line (unvalidated); returns those Kafka holds, matched to their corpus lines in order."""
    producer = make_producer(config.kafka.bootstrap_servers)
    try:
        with path.open("rb") as handle:
            summary = produce_lines(handle, producer=producer, topic=config.kafka.topics.events, validate=False)
    finally:
        producer.close()
    report.facts["produce"] = summary.as_dict()
    records = read_events(config.kafka.bootstrap_servers, config.kafka.topics.events)
    sent: list[Sent] = []
    position = 0
    for index, line in enumerate(corpus):
        value = line.data.rstrip(b"\r\n")  # what produce sends
        if not value.strip(JSON_WHITESPACE):
            report.add("skipped as blank at produce (never reaches Kafka)", line, "blank")
            continue
        if position < len(records) and records[position][1] == value:
            offset, _, ts = records[position]
            sent.append(Sent(index, offset, value, datetime.fromtimestamp(ts / 1000, UTC)))
            position += 1
        else:
            report.add("refused at produce (not in Kafka)", line, f"{len(value):,} bytes")
    assert position == len(records), "the events topic holds records the corpus does not explain"
    assert summary.read + summary.blank == len(corpus), summary.as_dict()
    assert summary.read == len(sent) + summary.failed, summary.as_dict()
    return sent


def run_job(stack: Any, config_path: Path, run_id: str, report: Report) -> None:
    """The job, detached and bounded, on the standalone cluster; stopped at its first failover (reported)."""
    cluster = stack.flink
    submitted = cluster.run_python(
        PROJECT_ROOT / "jobs" / "flink" / "metering_job.py",
        ["--config", str(config_path), "--until-end", "--job-name", f"corpus-{run_id}"],
        detached=True,
        timeout_s=300,
    )
    assert submitted.returncode == 0, (submitted.stdout[-2000:], submitted.stderr[-3000:])
    job_id = submitted.stdout.split("JobID")[1].split()[0]
    report.facts["job_id"] = job_id
    rest = FlinkRest(stack.settings.flink_rest_url)
    started = time.monotonic()
    while True:
        state = rest.job(job_id)["state"]
        entries = rest.get(f"/jobs/{job_id}/exceptions?maxExceptions=10").get("exceptionHistory", {}).get("entries", [])
        if entries:
            for entry in entries:
                trace = entry.get("stacktrace", "")
                report.add("job failed over (restart)", None, _root_cause(trace))
            report.facts["job_failures"] = [entry.get("stacktrace", "")[:6000] for entry in entries]
            if state not in {"FINISHED", "FAILED", "CANCELED"}:
                rest.cancel(job_id)
                rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}, 60)
            state = rest.job(job_id)["state"]
            break
        if state in {"FINISHED", "FAILED", "CANCELED"}:
            break
        if time.monotonic() - started > JOB_TIMEOUT_S:
            report.add("job did not finish", None, f"still {state} after {JOB_TIMEOUT_S}s")
            rest.cancel(job_id)
            break
        time.sleep(1)
    report.facts["job_state"] = state
    report.facts["job_seconds"] = round(time.monotonic() - started)
    if state != "FINISHED":
        report.add("job did not finish", None, state)


def _root_cause(trace: str) -> str:
    """The last ``Caused by`` line of a Java stack trace (or its first line), shortened."""
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("Caused by:")]
    python = [line for line in lines if line.startswith("pemja.core.PythonException")]
    text = (python or causes or lines or ["(no stack trace)"])[-1]
    return text[:300]


def run_loader(config: Config, report: Report) -> None:
    """The loader until idle, in a thread: one that retries forever is reported instead of hanging the test."""
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            with open_storage(config.storage, create_database=False) as storage:
                outcome["stats"] = Loader(config, storage, group_id=f"{config.kafka.consumer_group}-loader").run(
                    until_idle=True, idle_s=2
                )
        except BaseException as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=load, name="corpus-loader", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(LOADER_TIMEOUT_S)
    report.facts["loader_seconds"] = round(time.monotonic() - started)
    if thread.is_alive():
        report.add("loader did not finish (retried forever?)", None, f"still loading after {LOADER_TIMEOUT_S}s")
        raise AssertionError(report.render())
    if "error" in outcome:
        report.add("loader crashed", None, outcome["error"][:300])
        return
    stats: LoaderStats = outcome["stats"]
    report.facts["loader"] = {"rows": dict(stats.rows), "retries": stats.retries, "quarantined": dict(stats.quarantined)}
    if stats.retries:
        report.add("loader retried", None, f"{stats.retries} retries, last: {stats.last_error}"[:300])


def check_ledger(config: Config, corpus: list[CorpusLine], sent: list[Sent], report: Report) -> None:
    """Every sent record in exactly one place, counts adding up, reasons as the spec says."""
    by_offset = {s.offset: s for s in sent}
    with open_storage(config.storage, create_database=False) as storage:
        rows = storage.query_rows
        dead = rows(
            "SELECT source_partition, source_offset, meter, reason FROM dead_letters FINAL "
            f"WHERE source_partition != {NO_PARTITION}"
        )
        processing_errors = rows(f"SELECT meter, payload FROM dead_letters FINAL WHERE source_partition = {NO_PARTITION}")
        raw = rows("SELECT kafka_partition, kafka_offset, customer_id, event_id, event_type FROM raw_events FINAL")
        duplicates = rows("SELECT customer_id, event_id, seen, variants FROM duplicates FINAL")
        quarantine = rows(
            "SELECT source_topic, source_offset, target_table, stage, error_name, substring(error, 1, 200), row "
            "FROM quarantine FINAL"
        )
        finals = dict(rows("SELECT meter, sum(event_count) FROM period_finals FINAL GROUP BY meter"))
        corrections = rows("SELECT meter, kafka_offset, event_count FROM corrections FINAL")
    assert all(partition == 0 for partition, *_ in [*dead, *raw]), "one partition expected"

    # A total beyond Decimal(38, 9) (29-digit quantities add up past it) is no loss: a step Flink
    # could not sum is a processing_error dead letter with its event count, a final ClickHouse
    # cannot hold is quarantined with its exact value. Both count in the meter ledger below.
    overflowed: Counter[str] = Counter()
    for meter, payload in processing_errors:
        partial = json.loads(payload)
        if "exceeds DECIMAL(38, 9)" not in partial["error"]:
            report.add("processing error", None, f"{meter}: {partial['error']}")
        overflowed[meter] += int(partial["cnt"])
    report.facts["overflowed_steps"] = len(processing_errors)
    quarantined_finals = 0
    for topic, offset, table, stage, name, error, row in quarantine:
        if table == "period_finals" and name == "OverflowError":
            final = json.loads(row)
            overflowed[final["meter"]] += int(final["event_count"])
            quarantined_finals += 1
            continue
        if table == "aggregate_segments" and name == "OverflowError":
            continue  # a provisional figure beyond Decimal(38, 9): kept in quarantine, never a final
        line = corpus[by_offset[offset].index] if topic == config.kafka.topics.events and offset in by_offset else None
        report.add("quarantined by the loader", line, f"{topic.rsplit('-', 2)[-1]}->{table} ({stage}): {name} {error}")
    report.facts["quarantined_overflowing_finals"] = quarantined_finals

    event_dead: dict[int, str] = {}
    meter_dead: dict[tuple[int, str], str] = {}
    for _, offset, meter, reason in dead:
        if offset not in by_offset:
            report.add("dead letter for no sent record", None, f"offset {offset}")
            continue
        if not reason:
            report.add("dead letter without a reason", corpus[by_offset[offset].index], "empty reason")
        if meter:
            meter_dead[(offset, meter)] = reason
        else:
            event_dead[offset] = reason
    raw_by_offset = {offset: (customer, event_id) for _, offset, customer, event_id, _ in raw}
    type_by_offset = {offset: event_type for _, offset, _, _, event_type in raw}

    # Event level: dead letter | first occurrence | duplicate, in Kafka order.
    first: dict[tuple[str, str], int] = {}
    occurrences: Counter[tuple[str, str]] = Counter()
    for s in sent:
        if s.offset in event_dead:
            continue
        if s.offset not in raw_by_offset:
            report.add("accepted by the job but not in raw_events (not auditable)", corpus[s.index], "no raw_events row", s.value)
            continue
        key = raw_by_offset[s.offset]
        occurrences[key] += 1
        first.setdefault(key, s.offset)
    counted_duplicates = sum(int(seen) - 1 for _, _, seen, _ in duplicates)
    expected_duplicates = sum(n - 1 for n in occurrences.values())
    seen_by_key = {(c, e): int(seen) for c, e, seen, _ in duplicates}
    for key, n in occurrences.items():
        if n > 1 and seen_by_key.get(key) != n:
            report.add("duplicates table disagrees", None, f"{key}: seen {seen_by_key.get(key)}, records {n}")
    ledger = {
        "sent": len(sent),
        "dead_letters": len(event_dead),
        "first_occurrences": len(first),
        "duplicates_in_table": counted_duplicates,
        "duplicates_by_records": expected_duplicates,
        "meter_dead_letters": len(meter_dead),
        "corrections": len(corrections),
        "finals_event_count": finals,
    }
    report.facts["ledger"] = ledger
    if len(event_dead) + len(first) + counted_duplicates != len(sent):
        report.add(
            "ledger does not add up",
            None,
            f"dead {len(event_dead)} + first {len(first)} + dup {counted_duplicates} != {len(sent)}",
        )

    # Per meter: each first occurrence once, in a final, a correction or a meter dead letter.
    if "accepted by the job but not in raw_events (not auditable)" in report.problems:
        report.add("meter ledger not checked", None, "raw_events lacks events the job accepted")
        return _check_reasons(config, corpus, sent, event_dead, report)
    meters_of: dict[str, list[str]] = defaultdict(list)
    for meter in config.meters:
        meters_of[meter.event_type].append(meter.name)
    expected_per_meter: Counter[str] = Counter()
    for offset in first.values():
        for meter_name in meters_of.get(type_by_offset[offset], []):
            expected_per_meter[meter_name] += 1
    corrected: Counter[str] = Counter()
    for meter, _, count in corrections:
        corrected[meter] += int(count)
    meter_refused = Counter(meter for _, meter in meter_dead)
    for meter in config.meters:
        counted = int(finals.get(meter.name, 0)) + corrected[meter.name] + meter_refused[meter.name] + overflowed[meter.name]
        if counted != expected_per_meter[meter.name]:
            report.add(
                "meter ledger does not add up",
                None,
                f"{meter.name}: finals {finals.get(meter.name, 0)} + corrections {corrected[meter.name]} + dead letters "
                f"{meter_refused[meter.name]} + beyond Decimal(38, 9) {overflowed[meter.name]} "
                f"!= {expected_per_meter[meter.name]} first occurrences",
            )

    _check_reasons(config, corpus, sent, event_dead, report)


def _check_reasons(
    config: Config, corpus: list[CorpusLine], sent: list[Sent], event_dead: dict[int, str], report: Report
) -> None:
    """The job's verdict on every record against the spec's (``schemas.validate.job_reason``), line by line."""
    event_types = {m.event_type for m in config.meters}
    for s in sent:
        try:
            expected = job_reason(
                s.value, event_types=event_types, received=s.kafka_ts, future_skew=config.pipeline.allowed_future_skew
            )
        except Exception:  # check_spec reports it
            continue
        job = event_dead.get(s.offset)
        if job != (None if expected == "heartbeat" else expected):
            report.add("job verdict differs from the spec", corpus[s.index], f"spec {expected}, job {job}", s.value)


_spec_cache: dict[bytes, Any] = {}


def _spec(value: bytes) -> Any:
    if value not in _spec_cache:
        try:
            _spec_cache[value] = validate_line(value)
        except Exception:
            _spec_cache[value] = None
    return _spec_cache[value]


def _excluded(line: CorpusLine) -> bool:
    case = f"{line.category}/{line.variant.split('#')[0]}"
    return any(line.category == item or case == item for item in EXCLUDE)


def check_spec(sent: list[Sent], corpus: list[CorpusLine], report: Report) -> None:
    """The spec answers every line Kafka holds with a verdict, never an exception."""
    for s in sent:
        if _spec(s.value) is None:
            try:
                validate_line(s.value)
            except Exception as exc:
                report.add("spec raised (validate_line)", corpus[s.index], type(exc).__name__, s.value)


def test_hostile_corpus_ledger(tmp_path: Path, stack: Any, bootstrap: str, chdb_path: Path) -> None:
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    config, config_path = corpus_config(tmp_path, bootstrap, chdb_path, run_id)
    folder = find_jsontestsuite()
    corpus = [line for line in generate(lines=LINES, jsontestsuite=folder) if not _excluded(line)]
    events = tmp_path / "corpus.jsonl"
    write(events, corpus)
    report = Report()
    report.facts.update(lines=len(corpus), jsontestsuite=str(folder), categories=dict(Counter(c.category for c in corpus)))
    ensure_topics(config, partitions=1)
    with open_storage(config.storage) as storage:
        migrate(storage)
    try:
        sent = produce_corpus(config, corpus, events, report)
        check_spec(sent, corpus, report)
        run_job(stack, config_path, run_id, report)
        run_loader(config, report)
        if report.facts["job_state"] == "FINISHED" and "job failed over (restart)" not in report.problems:
            check_ledger(config, corpus, sent, report)
        else:  # what a failed job committed says nothing about the ledger
            report.add("ledger not checked", None, "the job failed")
    finally:
        report.facts["seconds"] = round(time.monotonic() - started)
        artifacts = Path(os.environ.get("METERING_TEST_ARTIFACTS", PROJECT_ROOT / ".metering" / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "hostile-corpus-report.json").write_text(json.dumps(report.as_dict(), indent=1, default=str))
        with open_storage(config.storage, create_database=False) as storage:
            storage.drop_database()
    expected_only = {"skipped as blank at produce (never reaches Kafka)", "refused at produce (not in Kafka)"}
    failures = {kind for kind in report.problems if kind not in expected_only}
    assert not failures, report.render()
