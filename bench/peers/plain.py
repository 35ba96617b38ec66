"""Peer (d): plain Python. confluent-kafka transactions + orjson + a dict for dedup + Decimal sums.

Reads the backlog topic (read_committed) from the start, keeps the first (customer_id, event_id),
sums quantities per (customer, meter, minute) in ``Decimal``, and every batch produces the
minutes the watermark (newest event time of each partition minus the allowed lateness, the
lowest over the partitions) has passed, in one Kafka transaction with the batch's offsets. At
the end of the topic it produces every open minute, then waits to be stopped (SIGTERM); with
``--follow`` (bench/compare.py's latency mode) it never stops reading.

Not crash-safe: the dedup set and the open sums live in this process only. The offsets committed
with a transaction cover events whose minutes are still open (and whose ids are in the set); a
restart from them would lose those sums and count again retries of events it no longer
remembers. A fair fix (a changelog of the state in the same transaction, as Quix Streams does)
is what the other variants pay for.

Usage: python -m bench.peers.plain --bootstrap HOST:PORT --input T --output T --group G
"""

from __future__ import annotations

import signal
import sys
import threading
from decimal import Decimal

from bench.peers.common import MINUTE_MS, missing_extra, output_row, parse_line, peer_parser


def main(argv: list[str] | None = None) -> int:
    try:
        import orjson
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    except ImportError as exc:
        return missing_extra("plain", exc)
    parser = peer_parser("plain")
    parser.add_argument("--follow", action="store_true", help="never stop at the end of the input (the latency mode)")
    args = parser.parse_args(argv)
    batch = 10_000

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap, "transactional.id": f"{args.group}-tx", "linger.ms": 20})
    producer.init_transactions()
    metadata = consumer.list_topics(args.input, timeout=10)
    partitions = sorted(metadata.topics[args.input].partitions)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(args.input, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(args.input, p, 0) for p in partitions])  # one process: every partition

    seen: set[tuple[str, str]] = set()
    sums: dict[tuple[str, str, int], Decimal] = {}
    newest: dict[int, int] = {}
    positions = dict.fromkeys(partitions, 0)
    loads = orjson.loads

    def flush(before_ms: int | None) -> None:
        """Produce the minutes ending at or before ``before_ms`` (all when None); they leave ``sums``."""
        done = [key for key in sums if before_ms is None or key[2] + MINUTE_MS <= before_ms]
        for key in done:
            value = orjson.dumps(output_row(*key, sums.pop(key)))
            while True:
                try:
                    producer.produce(args.output, key=key[0].encode(), value=value)
                    break
                except BufferError:  # the local queue is full (a sparse backlog's last minutes): let it drain
                    producer.poll(0.05)

    while args.follow or any(positions[p] < ends[p] for p in partitions):
        messages = consumer.consume(num_messages=batch, timeout=0.5)
        if not messages:
            continue
        producer.begin_transaction()
        for message in messages:
            if message.error():
                raise KafkaException(message.error())
            partition = message.partition()
            positions[partition] = message.offset() + 1
            event = parse_line(message.value(), loads)
            if event is None:
                continue
            if event.millis > newest.get(partition, -1):
                newest[partition] = event.millis
            identity = (event.customer_id, event.event_id)
            if identity in seen:
                continue
            seen.add(identity)
            key = (event.customer_id, event.meter, event.minute_ms)
            sums[key] = sums.get(key, Decimal(0)) + event.quantity
        if len(newest) == len(partitions):
            flush(min(newest.values()) - args.lateness_ms)
        if not args.follow and all(positions[p] >= ends[p] for p in partitions):
            flush(None)
        offsets = [TopicPartition(args.input, p, positions[p]) for p in partitions]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
        producer.commit_transaction()
    consumer.close()
    # Like the other peers, it stays until it is stopped: the benchmark reads its CPU until the end.
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
