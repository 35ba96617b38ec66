"""bench/ingest.py's pure parts: percentiles, the request bodies, the events, the table and the arguments (no broker)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from bench.ingest import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_CLIENTS,
    Measurement,
    bodies,
    event_lines,
    parse_args,
    percentile,
    service_threads,
    table,
)
from schemas.validate import job_verdict

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1 … 100, unsorted
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.5) == percentile([7.0], 0.99) == 7
    assert percentile([1.0, 2.0], 0.5) == 1 and percentile([1.0, 2.0], 0.51) == 2
    # 10 values: p99 is the highest (no value has 99 % at or below it but the last)
    assert percentile([float(v) for v in range(10)], 0.99) == 9
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_event_lines_are_distinct_valid_events_in_the_past() -> None:
    lines = event_lines(500, first=1000, seed=3, now=NOW)
    events = [json.loads(line) for line in lines]
    assert len({e["event_id"] for e in events}) == 500
    assert all(NOW - timedelta(hours=1) <= datetime.fromisoformat(e["timestamp"]) < NOW for e in events)
    types = {"api_call", "tokens", "gpu_seconds", "storage_snapshot", "credits"}
    for line in lines:
        reason, _ = job_verdict(line, event_types=frozenset(types), received=NOW, future_skew=timedelta(minutes=5))
        assert reason is None, line
    assert event_lines(500, first=1000, seed=3, now=NOW) == lines  # deterministic
    # Two measurements' events never share an id.
    other = {json.loads(line)["event_id"] for line in event_lines(500, first=1500, seed=4, now=NOW)}
    assert not other & {e["event_id"] for e in events}


def test_bodies_are_json_arrays_of_the_lines_in_order() -> None:
    lines = event_lines(250, first=0, seed=1, now=NOW)
    requests = bodies(lines, 100)
    assert [len(json.loads(body)) for body in requests] == [100, 100, 50]
    assert b"".join(requests) == b"".join(b"[" + b",".join(lines[i : i + 100]) + b"]" for i in (0, 100, 200))
    assert [json.loads(line) for line in lines] == [e for body in requests for e in json.loads(body)]


def serve(
    events_per_s: float, *, batch: int = 1000, clients: int = 4, accepted: int = 10_000, in_topic: int = 10_000
) -> Measurement:
    return Measurement(
        "serve",
        batch,
        clients,
        10_000,
        accepted,
        in_topic,
        accepted / events_per_s,
        {"service": 0.5, "clients": 0.1, "broker": 0.05},
        0.25,
        [10.0] * 98 + [20.0, 90.0],
        {"200": 10},
    )


def produce(events_per_s: float) -> Measurement:
    return Measurement(
        "produce", None, None, 10_000, 10_000, 10_000, 10_000 / events_per_s, {"producer": 0.4, "broker": 0.1}, 0.0
    )


def test_the_table_gives_each_figure_and_the_ratio_to_the_peers_mean() -> None:
    text = table([produce(10_000), serve(15_000), produce(20_000)])
    lines = text.splitlines()
    assert lines[0].startswith("| variant | batch | clients | events | events/s | × produce | p50 / p99 ms")
    assert len(lines) == 5
    row = [cell.strip() for cell in lines[3].strip("|").split("|")]
    # 15k against the peers' mean of 10k and 20k; p99 of 100 latencies is the 99th; CPU per accepted event
    assert row == ["metering serve", "1000", "4", "10,000", "15,000", "1.00", "10.0 / 20.0", "50.0 / 10.0 / 5.0", "25 %", "OK"]
    peer = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert peer == ["metering produce", "–", "–", "10,000", "10,000", "0.67", "–", "40.0 / – / 10.0", "0 %", "OK"]


def test_a_measurement_that_lost_or_refused_events_is_a_miss() -> None:
    assert serve(10_000).ok
    assert not serve(10_000, in_topic=9_999).ok
    assert not serve(10_000, accepted=9_999, in_topic=9_999).ok
    refused = serve(10_000)
    refused.statuses = {"200": 9, "503": 1}
    assert not refused.ok
    assert "MISS (accepted 10,000, in topic 9,999" in table([serve(10_000, in_topic=9_999)])
    assert "× produce" in table([serve(10_000)]) and "| – |" in table([serve(10_000)])  # no peer: no ratio
    summary = serve(10_000).summary()
    assert summary["ok"] and summary["p50_ms"] == 10.0 and summary["p99_ms"] == 20.0
    assert summary["cpu_us_per_event"]["service"] == pytest.approx(50.0)
    json.dumps(summary)


def test_arguments_defaults_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args([])
    assert args.batch_sizes == list(DEFAULT_BATCH_SIZES) == [100, 1000]
    assert args.clients == list(DEFAULT_CLIENTS) == [1, 4, 8]
    assert args.port_base == 61292 and args.bootstrap is None and args.profile is None
    args = parse_args(["--events", "500", "--batch-sizes", "10", "10", "1000", "--clients", "2", "--bootstrap", "h:1"])
    assert (args.events, args.batch_sizes, args.clients, args.bootstrap) == (500, [10, 1000], [2], "h:1")
    for bad in (["--batch-sizes", "1001"], ["--batch-sizes", "0"], ["--clients", "0"], ["--events", "0"], ["--partitions", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(bad)
        assert exit_info.value.code == 2
    assert "--batch-sizes must be between 1 and 1000" in capsys.readouterr().err


def test_the_services_librdkafka_threads_are_counted_apart() -> None:
    before = {1: ("python", 1.0), 2: ("rdk:main", 0.5), 3: ("rdk:broker0", 0.25)}
    after = {1: ("python", 3.0), 2: ("rdk:main", 0.75), 3: ("rdk:broker0", 0.5), 4: ("rdk:broker1", 0.125)}
    assert service_threads(before, after) == {"service_librdkafka": 0.625}  # a thread born since counts from 0
    assert service_threads(before, {}) == {"service_librdkafka": 0.0}
