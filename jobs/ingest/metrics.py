"""The service's Prometheus metrics, in the text exposition format (no client library needed).

- ``metering_ingest_requests_total{route,status}``: requests answered;
- ``metering_ingest_events_total{verdict,reason}``: events accepted, rejected (by reason code) or
  failed (not acknowledged by Kafka: the request was answered 503);
- ``metering_ingest_amendments_total{action,status,reason}``: voids and amends (``action``)
  accepted (in Kafka), rejected (by reason code: 403, 422) or failed (503);
- ``metering_ingest_request_seconds{route}``: request latency (a histogram);
- ``metering_ingest_producer_queue``: records waiting for Kafka's acknowledgement;
- ``metering_ingest_in_flight``: requests being handled.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels.items())
    return "{" + inner + "}"


class Metrics:
    def __init__(self, queue_length: Callable[[], int] = lambda: 0) -> None:
        self.queue_length = queue_length
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.events: Counter[tuple[str, str]] = Counter()
        self.amendments: Counter[tuple[str, str, str]] = Counter()
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.latency_count: Counter[str] = Counter()
        self.in_flight = 0

    def request(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            counts = self.latency.setdefault(route, [0] * len(BUCKETS))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[index] += 1
            self.latency_sum[route] = self.latency_sum.get(route, 0.0) + seconds
            self.latency_count[route] += 1

    def event(self, verdict: str, reason: str = "", count: int = 1) -> None:
        with self.lock:
            self.events[(verdict, reason)] += count

    def amendment(self, action: str, status: str, reason: str = "") -> None:
        with self.lock:
            self.amendments[(action, status, reason)] += 1

    def render(self) -> str:
        with self.lock:
            out = [
                "# HELP metering_ingest_requests_total Requests answered, by route and HTTP status.",
                "# TYPE metering_ingest_requests_total counter",
            ]
            out += [
                f"metering_ingest_requests_total{_labels(route=r, status=str(s))} {n}"
                for (r, s), n in sorted(self.requests.items())
            ]
            out += [
                "# HELP metering_ingest_events_total Events by verdict (accepted, rejected, failed) and reason code.",
                "# TYPE metering_ingest_events_total counter",
            ]
            out += [
                f"metering_ingest_events_total{_labels(verdict=v, reason=r)} {n}" for (v, r), n in sorted(self.events.items())
            ]
            out += [
                "# HELP metering_ingest_amendments_total Voids and amends by action, status (accepted, rejected, failed) "
                "and reason code.",
                "# TYPE metering_ingest_amendments_total counter",
            ]
            out += [
                f"metering_ingest_amendments_total{_labels(action=a, status=s, reason=r)} {n}"
                for (a, s, r), n in sorted(self.amendments.items())
            ]
            out += [
                "# HELP metering_ingest_request_seconds Request latency, by route.",
                "# TYPE metering_ingest_request_seconds histogram",
            ]
            for route, counts in sorted(self.latency.items()):
                for bound, count in zip(BUCKETS, counts, strict=True):
                    out.append(f"metering_ingest_request_seconds_bucket{_labels(route=route, le=repr(bound))} {count}")
                out.append(f"metering_ingest_request_seconds_bucket{_labels(route=route, le='+Inf')} {self.latency_count[route]}")
                out.append(f"metering_ingest_request_seconds_sum{_labels(route=route)} {self.latency_sum[route]}")
                out.append(f"metering_ingest_request_seconds_count{_labels(route=route)} {self.latency_count[route]}")
            in_flight = self.in_flight
        out += [
            "# HELP metering_ingest_producer_queue Records waiting for Kafka's acknowledgement.",
            "# TYPE metering_ingest_producer_queue gauge",
            f"metering_ingest_producer_queue {self.queue_length()}",
            "# HELP metering_ingest_in_flight Requests being handled.",
            "# TYPE metering_ingest_in_flight gauge",
            f"metering_ingest_in_flight {in_flight}",
        ]
        return "\n".join(out) + "\n"
