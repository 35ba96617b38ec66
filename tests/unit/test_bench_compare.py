"""bench/compare.py's pure parts: the generated backlog, the independent recomputation and the checksum (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bench.compare import EndsLeft, Outcome, Sample, markdown, rate_and_cpu, steady, summarise
from bench.peers.common import (
    MINUTE_MS,
    SHAPES,
    BacklogStats,
    backlog,
    checksum,
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
    rows = [
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
