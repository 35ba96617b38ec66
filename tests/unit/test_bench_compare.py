"""bench/compare.py's pure parts: the generated backlog, the independent recomputation and the checksum (no broker)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.compare import (
    LIVE_CHECKPOINT_MS,
    LIVE_LATENESS_MS,
    EndsLeft,
    Latency,
    Outcome,
    Sample,
    latency_markdown,
    markdown,
    peer_commands,
    rate_and_cpu,
    read_to_ends,
    steady,
    summarise,
)
from bench.peers.common import (
    MINUTE_MS,
    SHAPES,
    BacklogStats,
    backlog,
    checksum,
    live_line,
    output_row,
    parse_line,
    recompute,
    tick_line,
    totals_of,
    window_start_ms,
)
from schemas.validate import validate_line

END = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_backlog_has_the_distinct_events_retries_and_broken_lines_it_claims() -> None:
    stats = BacklogStats()
    lines = [line for _, line in backlog(SHAPES["dense"], 5_000, END, stats=stats)]
    assert stats.events == 5_000 and stats.lines == len(lines)
    assert 0.08 < stats.retries / 5_000 < 0.12
    assert 0.005 < stats.malformed / 5_000 < 0.015
    result = recompute(lines)
    assert result.accepted == 5_000
    assert result.duplicates == stats.retries
    assert result.refused == stats.malformed
    # What the peers' rule accepts the project's schema accepts too (unknown meters aside: configuration).
    for line in lines:
        if parse_line(line) is not None:
            assert validate_line(line).ok, line


def test_sparse_shape_has_under_one_event_per_customer_minute() -> None:
    lines = [line for _, line in backlog(SHAPES["sparse"], 20_000, END)]
    result = recompute(lines)
    assert result.accepted / len(result.totals) < 1.2  # mostly one event per (customer, meter, minute)


def test_recomputation_keeps_the_first_of_conflicting_retries() -> None:
    first = {
        "event_id": "a",
        "customer_id": "c",
        "event_type": "tokens",
        "timestamp": "2026-11-22T12:00:30.000Z",
        "quantity": "2.5",
    }
    lines = [
        json.dumps(first).encode(),
        json.dumps({**first, "quantity": "999"}).encode(),
        b'{"event_id":"b"',
        tick_line(0, END)[1],
    ]
    result = recompute(lines)
    minute = int(datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp() * 1000)
    assert result.totals[("c", "tokens", minute)] == Decimal("2.5")
    assert (result.accepted, result.duplicates, result.refused) == (2, 1, 1)


def test_checksum_is_exact_adds_rows_of_one_key_and_ignores_ticks() -> None:
    expected = {("c", "tokens", 0): Decimal("3.000"), ("tick-0", "api_call", MINUTE_MS): Decimal(1)}
    rows: list[Mapping[str, Any]] = [
        output_row("c", "tokens", 0, Decimal("1")),
        {"customer_id": "c", "meter": "tokens", "window_start": "1970-01-01 00:00:00", "total": "2.0"},
    ]
    assert checksum(expected, totals_of(rows)).ok
    wrong = checksum(expected, totals_of([output_row("c", "tokens", 0, Decimal("3.000000001"))]))
    assert not wrong.ok and wrong.wrong == 1
    assert "MISCOUNT" in wrong.describe()
    extra = checksum(expected, totals_of([*rows, output_row("d", "tokens", 0, Decimal(1))]))
    assert extra.extra == 1


def test_window_start_reads_millis_and_flink_text() -> None:
    assert (
        window_start_ms(120_000) == window_start_ms("1970-01-01 00:02:00") == window_start_ms("1970-01-01T00:02:00Z") == 120_000
    )


def test_steady_range_is_ten_to_ninety_percent_and_widens_over_coarse_steps() -> None:
    samples = [Sample(t, c, {"p": t}) for t, c in [(0, 0), (1, 5), (2, 10), (3, 50), (4, 90), (5, 100)]]
    first, last = steady(samples, 100)
    assert (first.at_s, last.at_s) == (2, 4)
    rate, cpu = rate_and_cpu(samples, 100, per_event=0.5)
    assert rate == 20 and cpu == {"p": 2 / 40 * 1e6}
    coarse = [Sample(0, 0, {}), Sample(1, 0, {}), Sample(2, 100, {})]
    assert [s.at_s for s in steady(coarse, 100)] == [1, 2]


def test_missing_bench_extra_exits_2_with_a_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import bench.compare

    monkeypatch.setattr(bench.compare, "missing_peer_packages", lambda: ["quixstreams"])
    assert bench.compare.main(["--quick"]) == 2
    assert "pip install -e '.[bench]'" in capsys.readouterr().err


def test_a_wrong_total_is_reported_miscount_and_not_ranked_an_unread_output_failed() -> None:
    expected = {("c", "tokens", 0): Decimal("3"), ("c", "tokens", MINUTE_MS): Decimal("1")}
    right = checksum(expected, {("c", "tokens", 0): Decimal("3.0"), ("c", "tokens", MINUTE_MS): Decimal(1)})
    one_off = checksum(expected, {("c", "tokens", 0): Decimal("3"), ("c", "tokens", MINUTE_MS): Decimal("1.000000001")})
    nothing_read = checksum(expected, {})
    assert right.ok and not one_off.ok and not nothing_read.ok and nothing_read.missing == 2
    outcomes = [
        Outcome("dense", "plain", 1, events_per_s=90_000.0, checksum=right),
        Outcome("dense", "plain", 2, events_per_s=95_000.0, checksum=one_off),  # one round wrong: the variant is
        Outcome("dense", "quix-1p", 1, events_per_s=20_000.0, checksum=right),
        Outcome("dense", "flink-sql", 1, error="read-back: partitions not at their end offsets"),
    ]
    status = {row["variant"]: row["status"] for row in summarise(outcomes)}
    assert status == {"plain": "MISCOUNT", "quix-1p": "OK", "flink-sql": "FAILED"}
    table = markdown(summarise(outcomes)).splitlines()[2:]
    # Ranked: only the variant that counted right; the others follow, their figure replaced by their status.
    assert table[0].startswith("| dense | quix-1p | 20,000")
    assert "| plain | MISCOUNT (90,000, 95,000)" in table[1] and "wrong 1" in table[1]
    assert "| flink-sql | FAILED" in table[2]


def test_read_back_ends_at_every_partitions_end_offset_not_at_a_quiet_spell() -> None:
    left = EndsLeft({0: 2001, 1: 0, 2: 7})
    assert left and "0 (end 2,001)" in str(left) and "1 (" not in str(left)  # an empty partition is read
    left.reached(0, 1500)  # the end of what is stable so far (a transaction still open): not the end
    left.reached(2, 7)
    assert left and list(left.ends) == [0]
    left.reached(0, 2001)
    assert not left


def test_a_peer_is_done_when_every_partition_is_committed_to_its_end_not_when_the_total_is() -> None:
    ends = {0: 302_269, 1: 237_934, 2: 301_973, 3: 267_835}  # partition 0: 11 heartbeats past the backlog
    backlog_lines = 1_109_987 - 11
    # The total reaches the backlog's lines while partition 3's last records (its tick) are unread:
    # stopping here once left a peer that had not yet closed a single minute (every key missing).
    short = {0: 302_269, 1: 237_934, 2: 301_973, 3: 267_830}
    assert sum(short.values()) >= backlog_lines and not read_to_ends(short, ends)
    assert read_to_ends(dict(ends), ends) and read_to_ends({p: end + 5 for p, end in ends.items()}, ends)
    assert not read_to_ends({0: 302_269, 1: 237_934, 2: 301_973}, ends)  # a partition never committed
    assert not read_to_ends({0: -1001}, {0: 5}) and read_to_ends({}, {0: 0})  # an empty partition is read


def test_live_events_are_distinct_valid_events_stamped_with_the_moment_given() -> None:
    rng = random.Random(1)
    lines = [live_line(rng, n, "d000001", END) for n in range(200)]
    events = [parse_line(line) for line in lines]
    assert all(event is not None and event.millis == int(END.timestamp() * 1000) for event in events)
    assert recompute(lines).accepted == 200
    assert all(validate_line(line).ok for line in lines)


def test_latency_mode_runs_the_peers_live_with_the_project_live_watermark_and_checkpoints() -> None:
    from bench.pipeline import LIVE_SETTINGS
    from udfs.durations import parse_duration

    assert parse_duration(str(LIVE_SETTINGS["max_out_of_orderness"])).total_seconds() * 1000 == LIVE_LATENESS_MS
    assert parse_duration(str(LIVE_SETTINGS["checkpoint_interval"])).total_seconds() * 1000 == LIVE_CHECKPOINT_MS
    (plain,) = peer_commands("plain", "in", "b:1", "g", "out", Path("/w"), live=True)
    assert plain[-3:] == ["--lateness-ms", str(LIVE_LATENESS_MS), "--follow"]
    (backlog_plain,) = peer_commands("plain", "in", "b:1", "g", "out", Path("/w"))
    assert "--follow" not in backlog_plain and "--lateness-ms" not in backlog_plain
    assert len(peer_commands("quix-2p", "in", "b:1", "g", "out", Path("/w"), live=True)) == 2


def test_latency_is_reported_per_variant_and_a_missing_probe_is_not_ok() -> None:
    figures = {
        "rate": 1000.0, "sent_rate": 998.0, "probes_sent": 600.0, "probes_visible": 600.0, "p50_s": 2.5,
        "p95_s": 3.5, "p99_s": 4.25, "max_s": 5.0, "p99_past_minute_s": -20.0,
    }  # fmt: skip
    ok = Latency("dense", "project", 1000, figures)
    late = Latency("dense", "plain", 1000, {**figures, "probes_visible": 599.0, "p99_s": math.inf, "max_s": math.inf})
    failed = Latency("dense", "flink-sql", 1000, error="not ready after 240 s")
    assert (ok.status, late.status, failed.status) == ("OK", "INCOMPLETE", "FAILED")
    table = latency_markdown([ok, late, failed]).splitlines()
    assert "| dense | project | 1,000 / 998 | 600 / 600 | 2.50 / 3.50 / 4.25 / 5.00 | yes | -20.00 |" in table[2]
    assert "| 599 / 600 | 2.50 / 3.50 / not visible / not visible | no |" in table[3]
    assert "FAILED: not ready after 240 s" in table[4]
    rows = summarise([Outcome("dense", "project", 1, events_per_s=20_000.0, checksum=checksum({}, {}))])
    assert "| 2.50 / 3.50 / 4.25 (at 1,000 events/s) |" in markdown(rows, [ok])
    assert "event→queryable" not in markdown(rows)
