"""Peer (c): Quix Streams, exactly-once, dedup in RocksDB state, tumbling 1-minute windows of Decimal sums.

One process of a consumer group (start several for more). The backlog topic is read as bytes
and parsed once (orjson), refused lines are filtered out, the event time becomes the record's
timestamp, a stateful filter keeps the first (customer_id, event_id) (state per message key, the
customer; RocksDB, with its changelog topic written in the same transaction), and a tumbling
1-minute window per customer (grace ``--lateness-ms``, by default the allowed lateness; closed
per partition) sums each meter's quantities as ``Decimal`` (kept as text in the window state:
exact). Each closed window becomes one output row per meter.

Usage: python -m bench.peers.quix --bootstrap HOST:PORT --input T --output T --group G --state-dir DIR
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

from bench.peers.common import MINUTE_MS, missing_extra, output_row, parse_line, peer_arguments


def main(argv: list[str] | None = None) -> int:
    try:
        import orjson
        from quixstreams import Application
    except ImportError as exc:
        return missing_extra("quix", exc)
    args = peer_arguments("quix", argv, state_dir=True)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=1.0,
        state_dir=args.state_dir,
        loglevel="WARNING",
        consumer_extra_config={"isolation.level": "read_committed"},
    )
    source = app.topic(args.input, value_deserializer="bytes", key_deserializer="str")
    sink = app.topic(args.output, value_serializer="json", key_serializer="str")

    def parse(raw: bytes) -> dict[str, Any] | None:
        event = parse_line(raw, orjson.loads)
        if event is None:
            return None
        return {"id": event.event_id, "m": event.meter, "q": str(event.quantity), "t": event.millis}

    def first_seen(event: dict[str, Any], state: Any) -> bool:
        if state.get(event["id"]) is not None:
            return False
        state.set(event["id"], 1)
        return True

    def initializer(event: dict[str, Any]) -> dict[str, str]:
        return {event["m"]: event["q"]}

    def reducer(sums: dict[str, str], event: dict[str, Any]) -> dict[str, str]:
        meter = event["m"]
        sums[meter] = str(Decimal(sums[meter]) + Decimal(event["q"])) if meter in sums else event["q"]
        return sums

    def rows(window: dict[str, Any], key: Any, _timestamp: int, _headers: Any) -> list[dict[str, Any]]:
        customer = key.decode() if isinstance(key, bytes) else str(key)
        return [output_row(customer, meter, window["start"], Decimal(total)) for meter, total in window["value"].items()]

    sdf = app.dataframe(source)
    sdf = sdf.apply(parse).filter(lambda event: event is not None)
    sdf = sdf.set_timestamp(lambda event, _key, _timestamp, _headers: event["t"])
    sdf = sdf.filter(first_seen, stateful=True)
    sdf = (
        sdf.tumbling_window(duration_ms=MINUTE_MS, grace_ms=args.lateness_ms)
        .reduce(reducer=reducer, initializer=initializer)
        .final(closing_strategy="partition")
    )
    sdf = sdf.apply(rows, metadata=True, expand=True)
    sdf.to_topic(sink)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
