"""Webhook signing (Standard Webhooks), retries with bounded backoff, dead letters (jobs/alerts/webhooks.py)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from jobs.alerts.webhooks import DEAD_PREFIX, Backoff, Deliverer, deliver, headers, sign, verify
from udfs.alerting import AlertRule, RuleKind, Webhook

#: The scheme's published example: secret, message id, timestamp, body and the signature it must give.
EXAMPLE = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_example_signs_exactly() -> None:
    assert sign(*EXAMPLE) == EXPECTED


def test_headers_verify_and_any_change_breaks_them() -> None:
    secret, msg_id, stamp, body = EXAMPLE
    sent = headers(secret, msg_id, stamp, body)
    assert sent["webhook-id"] == msg_id and sent["webhook-timestamp"] == str(stamp)
    assert verify(secret, sent, body, now=stamp + 10)
    assert not verify(secret, sent, body + b" ", now=stamp)
    assert not verify(secret, {**sent, "webhook-id": "other"}, body, now=stamp)
    assert not verify(secret, sent, body, now=stamp + 301)  # too old: a replay
    other = "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()
    assert not verify(other, sent, body, now=stamp)
    assert verify(secret, {**sent, "webhook-signature": "v1,bm9wZQ== " + sent["webhook-signature"]}, body, now=stamp)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert Backoff(attempts=6, base=1, cap=5).waits() == [1, 2, 4, 5, 5]


WEBHOOK = Webhook("http://127.0.0.1:9/hook", EXAMPLE[0])
ALERT = {"id": "alr_1", "rule": "r", "kind": "alert.triggered"}


def test_retries_then_succeeds_or_gives_up() -> None:
    answers = iter(["HTTP 500", "URLError: refused", None])
    slept: list[float] = []
    ok = deliver(WEBHOOK, ALERT, Backoff(5, 0.1, 1), send=lambda w, a: next(answers), sleep=slept.append)
    assert ok == (True, 3, None) and slept == [0.1, 0.2]
    slept.clear()
    failed = deliver(WEBHOOK, ALERT, Backoff(3, 0.1, 1), send=lambda w, a: "HTTP 503", sleep=slept.append)
    assert failed == (False, 3, "HTTP 503") and slept == [0.1, 0.2]


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))


def test_a_failed_delivery_is_a_dead_letter_on_the_state_topic() -> None:
    rule = AlertRule("r", RuleKind.USAGE, "m", (), webhook=WEBHOOK)
    producer = _Producer()

    def send(w: Webhook, a: Mapping[str, Any]) -> str | None:
        return "HTTP 500"

    deliverer = Deliverer((rule,), None, producer, "state", Backoff(2, 0, 0), send=send)
    deliverer.handle(ALERT)
    deliverer.handle({**ALERT, "rule": "no-webhook"})
    assert [(t, k) for t, k, _ in producer.sent] == [("state", f"{DEAD_PREFIX}alr_1".encode())]
    assert deliverer.stats.dead == 1 and deliverer.stats.attempts == 2
