"""`metering demo`: the whole pipeline end to end on a generated workload, checked against a recomputation.

Each step calls the library function the matching command is a thin layer over (stack, migrate,
jobs.ingest (`metering keys`, `metering serve`), jobs.produce.produce_file, jobs.runs.run_local_job
and load_outputs); jobs/demo.py generates the workload and recomputes the expected totals.

The first few percent of the lines go through the HTTP ingestion API: jobs/cli/demo_api.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, ProgressLine, Subcommands, add_format, stack
from jobs.cli.demo_api import API_BATCH, API_SHARE, send_through_api, split_workload
from jobs.cli.load import progress_text
from jobs.cli.stack import STOP_COMMAND, render_status

if TYPE_CHECKING:
    from jobs.config import Config


def utc_minute(moment: str) -> str:
    """An RFC 3339 UTC time as ``2026-03-01 00:00 UTC``."""
    return moment[:16].replace("T", " ") + " UTC"


def render_usage(rows: list[dict[str, Any]]) -> str:
    """Per customer: each meter/group/period total with final or provisional status; period bounds in UTC, labelled."""
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_customer.setdefault(row["customer_id"], []).append(row)
    lines: list[str] = []
    for customer, items in sorted(by_customer.items()):
        lines.append(f"\n   {customer}")
        for r in items:
            group = ",".join(f"{k}={v}" for k, v in r["group_by"].items()) or "-"
            lines.append(
                f"     {r['meter']:<19} {group:<16} {utc_minute(r['period_start'])} .. {utc_minute(r['period_end'])}  "
                f"{r['total']:>26}  {r['status']:<11} {r['event_count']:>8,} events"
            )
    return "\n".join(lines)


def render_costs(invoiced: dict[tuple[str, int], Decimal], config: Config) -> str:
    """Per customer: the final cost of its final periods, as `metering invoice` totals them."""
    by_customer: dict[str, list[Decimal]] = {}
    for (customer, _), amount in invoiced.items():
        by_customer.setdefault(customer, []).append(amount)
    currency = config.rating.plans[config.rating.default_plan or ""].money.currency if config.rating.plans else ""
    lines = ["\n   final cost (metering invoice, every final period):"]
    for customer, amounts in sorted(by_customer.items()):
        lines.append(f"     {customer:<12} {currency} {sum(amounts):>12}  over {len(amounts)} period(s)")
    return "\n".join(lines)


DASHBOARD_PORT = 8050
#: How long the demo's customer token lives.
DEMO_TOKEN_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class DemoAccess:
    """A customer token for the dashboard link, and the signing-key file when the demo had to make a key."""

    token: str
    key_file: Path | None = None


def demo_access(config_path: Path, workdir: Path, customer: str) -> DemoAccess:
    """A customer token for ``customer``, signed with the key `metering dashboard --config` will check it with.

    That is METERING__ACCESS__SIGNING_KEY when set. Otherwise the demo makes a key for this run and
    keeps it in ``workdir/signing-key`` (owner-readable only), never on the screen: the dashboard is
    then started with that file's content in the variable. The token is recorded in the access
    store, so `metering token list|revoke` know it.
    """
    import secrets

    from clickhouse.access import issue
    from jobs.config import load_config

    access = load_config(config_path, require_meters=False).access  # as `metering dashboard --config` sees it
    key_file = None
    if not access.signing_key:
        key_file = workdir / "signing-key"
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        access = replace(access, signing_key=key_file.read_text())
    token, claims = issue(access.key(), scope="customer", customer=customer, ttl_s=DEMO_TOKEN_TTL_S)
    access.tokens().record(claims)
    return DemoAccess(token, key_file)


def closing_text(config_path: Path, first_customer: str, access: DemoAccess | None = None) -> str:
    """The demo's last words: where to look next (with a customer token, when there is one), and how to stop what runs."""
    command = f"bash infra/run.sh dashboard --config {config_path}"
    if access is None:
        return (
            "\nSee it in the dashboard (usage so far, charts per minute/hour/day, finals, pipeline health):\n"
            f"   {command}\n"
            f"   then open http://127.0.0.1:{DASHBOARD_PORT}/#token=<token>, a token from "
            f"`metering token create --customer {first_customer}` or `--operator` (docs/dashboards.md; Ctrl-C stops it)\n"
            f"{_stop_text()}"
        )
    what = "usage so far, charts per minute/hour/day, finals"
    lines = [f"\nSee it in the dashboard as customer {first_customer} sees it ({what}):"]
    if access.key_file is not None:
        lines.append(
            f"   (METERING__ACCESS__SIGNING_KEY is not set, so this demo made a signing key for its run, in {access.key_file},\n"
            "   readable by you only; the dashboard and `metering token` need that same key)"
        )
        command = f'METERING__ACCESS__SIGNING_KEY="$(cat {access.key_file})" {command}'
    lines += [
        f"   {command}",
        f"   then open http://127.0.0.1:{DASHBOARD_PORT}/#token={access.token}",
        f"   (a customer token: {first_customer}'s usage only, valid 7 days. Every customer and the pipeline's health: "
        "an operator token,\n   `metering token create --operator`, with the same key; docs/dashboards.md. "
        "Ctrl-C stops the dashboard)",
    ]
    return "\n".join(lines) + "\n" + _stop_text()


def _stop_text() -> str:
    return (
        "\nKafka and Flink are still running (the dashboard and queries do not need them). Stop them with:\n"
        f"   {STOP_COMMAND}    (or: bash infra/run.sh stack down)"
    )


def run_demo(workdir: Path, events: int, seed: int, say: Callable[[str], None]) -> tuple[int, dict[str, Any]]:
    """Stack up, migrate, generate a workload, produce, run job + loader, compare with a recomputation.

    ``say`` receives the human progress; returns the exit code and a summary (the JSON output).
    """
    import yaml

    from clickhouse.client import open_storage
    from clickhouse.migrate import migrate
    from clickhouse.queries import StorageReader, run_query
    from jobs.cli.demo_money import (
        AlertsRun,
        check_alerts,
        check_balances,
        check_stream_costs,
        record_grants,
        render_alerts,
    )
    from jobs.config import load_config, load_stack
    from jobs.demo import (
        api_disagreements,
        check_costs,
        collect_results,
        compare,
        demo_document,
        expected_costs,
        generate,
        invoiced_costs,
        recompute,
    )
    from jobs.produce import produce_file
    from jobs.runs import load_outputs, run_local_job

    settings = load_stack()
    local = stack()
    run_id = time.strftime("%Y%m%d%H%M%S")
    workdir = workdir / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"run_id": run_id, "passed": False, "stop": STOP_COMMAND, "timings": timings}

    def step(label: str) -> float:
        say(f"\n== {label}")
        return time.monotonic()

    t = step("1/7 local stack: Kafka (KRaft) broker + Flink JobManager/TaskManager on 127.0.0.1")
    local.up()
    say(render_status(local.status()))
    timings["stack"] = time.monotonic() - t

    config_path = workdir / "metering.yaml"
    document = demo_document(run_id, settings.bootstrap_servers, settings.chdb_path, events)
    document["ingest"] = {"keys": str(workdir / "ingest-keys")}  # the run's API key, not the user's register
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    config = replace(load_config(config_path, env={}), stack=settings)  # its own file; the stack the user chose
    summary["config"] = str(config_path)
    t = step(
        f"2/7 ClickHouse (chDB at {settings.chdb_path}): migrate database {config.storage.database}; "
        "grant prepaid credit (metering credits grant)"
    )
    with open_storage(config.storage) as storage:
        for m in migrate(storage):
            say(f"   applied {m.version:04d}_{m.name}")
    for line in record_grants(config, events, datetime.now(UTC)):
        say(line)
    timings["migrate"] = time.monotonic() - t

    t = step(f"3/7 generating {events:,} events for {config_path.parent}")
    events_file = workdir / "events.jsonl"
    workload = generate(events_file, events, seed=seed)
    summary["workload"] = {
        "lines": workload.lines,
        "duplicates": workload.duplicates,
        "conflicts": workload.conflicts,
        "late_within_grace": workload.late_within_grace,
        "late_beyond_grace": workload.late_beyond_grace,
        "malformed": dict(sorted(workload.malformed.items())),
        "amendments": dict(sorted(workload.amendments.items())),
    }
    amendments = workload.amendments
    say(
        f"   {workload.lines:,} lines: {workload.duplicates:,} duplicates ({workload.conflicts} conflicting), "
        f"{workload.late_within_grace:,} late within grace, {workload.late_beyond_grace} late beyond grace, "
        f"{sum(workload.malformed.values())} malformed ({', '.join(f'{k} {v}' for k, v in sorted(workload.malformed.items()))}), "
        f"{sum(workload.amendments.values())} amendments ({', '.join(f'{k} {v}' for k, v in sorted(amendments.items()))})"
    )
    timings["generate"] = time.monotonic() - t

    api_lines = max(1, round(workload.lines * API_SHARE))
    t = step(
        f"4/7 sending to {config.kafka.topics.events}: the first {api_lines:,} lines through the HTTP API "
        f"(metering serve, POST /v1/events, {API_BATCH} a request, and a few client mistakes), "
        f"the other {workload.lines - api_lines:,} with metering produce (raw lines, invalid ones included)"
    )
    direct_file = workdir / "events-direct.jsonl"
    try:
        api = send_through_api(config, run_id, split_workload(events_file, api_lines, direct_file), workdir / "serve.log")
    except (OSError, RuntimeError) as exc:  # ApiError, TimeoutError (not ready), undelivered records, no port
        say(f"   the HTTP API failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE, summary
    summary["api"] = api.as_dict()
    reasons = ", ".join(f"{k} {v}" for k, v in summary["api"]["rejected_by_reason"].items())
    say(
        f"   API {api.url}: {api.requests} requests in {api.seconds:.1f}s: accepted {summary['api']['accepted']:,}, "
        f"rejected {len(api.rejected)}{f' ({reasons})' if reasons else ''}: never written, so no dead letters "
        f"(its log: {workdir / 'serve.log'})"
    )
    produced = produce_file(
        str(direct_file), bootstrap=config.kafka.bootstrap_servers, topic=config.kafka.topics.events, validate=False
    ).summary
    summary["produced"] = produced.as_dict()
    say(f"   produce: read {produced.read} events: sent {produced.sent}, delivery failures {produced.failed}")
    if produced.failed:
        return EXIT_FAILURE, summary
    direct_file.unlink()  # a copy of the file's tail; events.jsonl keeps the whole workload
    timings["produce"] = time.monotonic() - t

    t = step(
        "5/7 metering job on the Flink MiniCluster, bounded (--until-end): dedup, aggregate, finalize; "
        "alert rules evaluated from its output as it streams (metering alerts run)"
    )
    alerts_run = AlertsRun.start(config)
    job = run_local_job(config, until_end=True, job_name=f"metering-demo-{run_id}")
    say(f"   job finished in {job.seconds:.1f}s")
    try:
        alert_stats = alerts_run.finish()
    except (RuntimeError, TimeoutError) as exc:
        say(f"   {exc}")
        return EXIT_FAILURE, summary
    say(
        f"   alerts: read {alert_stats.records:,} records in {alert_stats.transactions} transactions, {alert_stats.alerts} alerts"
    )
    timings["job"] = time.monotonic() - t

    t = step("6/7 loader: job outputs -> ClickHouse (read_committed, idempotent)")
    progress = ProgressLine(sys.stderr)
    try:
        loaded = load_outputs(
            config, group_id=f"demo-{run_id}-loader", until_idle=True, on_batch=lambda s: progress.show(progress_text(s))
        )
    finally:
        progress.close()
    summary["loaded"] = loaded.as_dict()
    say(f"   {progress_text(loaded.stats)}")
    if loaded.stats.quarantined:
        return EXIT_REJECTED, summary
    timings["load"] = time.monotonic() - t

    t = step("7/7 results, and an independent recomputation from the generated file")
    with open_storage(config.storage, create_database=False) as storage:
        results = collect_results(storage)
    finals, corrections, dead_letters, health = results.finals, results.corrections, results.dead_letters, results.health
    say(render_usage(results.usage))
    say(
        f"\n   dead letters {len(dead_letters):,}  duplicates dropped {health['duplicates_dropped']:,} "
        f"(conflicting ids {health['conflicting_ids']})  correction records {len(corrections)}  "
        f"raw events {health['raw_events']:,}"
    )
    expected = recompute(events_file, config, unwritten=api.unwritten)
    result = compare(expected, finals, corrections, dead_letters, health)
    with open_storage(config.storage, create_database=False) as storage:
        invoiced = invoiced_costs(StorageReader(storage), config, finals, datetime.now(UTC))
    check_costs(result, expected_costs(expected, config), invoiced)
    say(render_costs(invoiced, config))
    with open_storage(config.storage, create_database=False) as storage:
        loaded_alerts = run_query(storage, "alerts", {"customer": "", "meter": ""})
        say(render_alerts(check_alerts(result, config, expected.finals, expected.corrections, loaded_alerts, events)))
        say(check_balances(result, config, storage, expected, events, datetime.now(UTC)))
        check_stream_costs(result, config, storage, expected)
    disagreements = api_disagreements(api.lines, [(v.status, v.reason) for v in api.verdicts], config)
    result.check(
        "ingestion API verdicts",
        not disagreements,
        f"{len(api.lines):,} lines sent ({len(api.lines) - len(api.from_file)} "
        f"of them the demo's client mistakes): {len(api.lines) - len(api.rejected):,} accepted, {len(api.rejected)} rejected "
        f"(not written, not expected as dead letters); {len(disagreements)} differ from the recomputation's judgement"
        + (f" (e.g. {disagreements[0]})" if disagreements else ""),
    )
    say("")
    for name, ok, detail in result.checks:
        say(f"   [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    timings["verify"] = time.monotonic() - t
    say("\n   timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    first = min((r["customer_id"] for r in results.usage), default="")
    say(f"   config {config_path}; query it with: metering query usage --config {config_path} --customer {first}")
    say("\nPASS" if result.passed else "\nFAIL")
    access = demo_access(config_path, workdir, first) if first else None
    say(closing_text(config_path, first, access))
    summary |= {
        "passed": result.passed,
        "checks": [{"name": name, "ok": ok, "detail": detail} for name, ok, detail in result.checks],
        "counts": {
            "finals": len(finals),
            "corrections": len(corrections),
            "dead_letters": len(dead_letters),
            "duplicates_dropped": health["duplicates_dropped"],
            "raw_events": health["raw_events"],
        },
        "dashboard": f"bash infra/run.sh dashboard --config {config_path}",
    }
    if access is not None:
        summary["dashboard_link"] = f"http://127.0.0.1:{DASHBOARD_PORT}/#token={access.token}"
        if access.key_file is not None:
            summary["signing_key_file"] = str(access.key_file)
    return (EXIT_OK if result.passed else EXIT_FAILURE), summary


def cmd_demo(args: argparse.Namespace) -> int:
    out = sys.stderr if args.format == "json" else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    code, summary = run_demo(Path(args.workdir), args.events, args.seed, say)
    if args.format == "json":
        summary["timings"] = {k: round(v, 1) for k, v in summary["timings"].items()}
        print(json.dumps(summary, indent=2, default=str))
    return code


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "demo",
        help="bring everything up and run the end-to-end demo",
        description="Start the stack, migrate, generate a realistic workload (several customers, time zones, "
        "anchors and meters; duplicates, late and malformed events), run the job and the loader, print "
        f"the period totals and PASS/FAIL from an independent recomputation. Kafka and Flink keep running "
        f"afterwards: `{STOP_COMMAND}` stops them.",
    )
    parser.add_argument("--workdir", default=".metering/demo", help="where generated demo files go")
    parser.add_argument("--events", type=int, default=1_000_000, help="number of generated events (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generator")
    add_format(
        parser,
        help="output: text progress and results on stdout (default), or json (progress on stderr, then one "
        "summary on stdout: checks, counts, timings, PASS as passed)",
    )
    parser.set_defaults(func=cmd_demo)
