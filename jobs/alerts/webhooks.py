"""Webhook delivery of alerts: signed per the Standard Webhooks scheme, retried, then dead-lettered.

**Signing.** Each POST carries ``webhook-id`` (the alert's id: the same on every attempt, so a
receiver dedupes), ``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed by the base64-decoded part of the
rule's ``whsec_`` secret (:func:`sign`; tests/unit/test_alert_webhooks.py holds it to the scheme's
published example).

**Delivery never blocks evaluation.** :class:`Deliverer` reads the alerts topic (``read_committed``:
only alerts whose transaction committed) with its own consumer group on its own thread, POSTs each
alert of a rule with a webhook, and commits its offsets after the alert was delivered or
dead-lettered: at least once, across a kill -9, and receivers drop repeats by ``webhook-id``. A
failure (a connection error, a timeout, any answer but 2xx) is retried with exponential backoff
(:class:`Backoff`: ``base`` doubling up to ``cap``, ``attempts`` in all), then the alert goes to the
**dead letters**: a record keyed ``webhook-dead:<alert id>`` on the alerts state topic (compacted),
which ``metering alerts redeliver`` resends, writing a tombstone for each one delivered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from udfs.alerting import AlertRule, Webhook

log = logging.getLogger("metering.alerts.webhooks")

#: State-topic keys of webhook dead letters start with this.
DEAD_PREFIX = "webhook-dead:"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the base64-decoded part after the prefix."""
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 signature>`` of ``body`` sent as ``msg_id`` at ``timestamp`` (Unix seconds)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, *, now: int, tolerance_s: int = 300) -> bool:
    """A receiver's check: one of the ``v1`` signatures matches and the timestamp is within ``tolerance_s``."""
    msg_id, stamp = received.get("webhook-id", ""), received.get("webhook-timestamp", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(stamp), body)
    return any(hmac.compare_digest(expected, sig) for sig in received.get("webhook-signature", "").split(" "))


@dataclass(frozen=True)
class Backoff:
    """Retry waits: ``base`` seconds, doubling, at most ``cap``; ``attempts`` tries in all."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def waits(self) -> list[float]:
        return [min(self.cap, self.base * 2**n) for n in range(self.attempts - 1)]


def post(webhook: Webhook, alert: Mapping[str, Any], timeout_s: float = 10.0) -> str | None:
    """POST one alert, signed now; None when the receiver answered 2xx, else why not."""
    body = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode()
    request = urllib.request.Request(
        webhook.url, data=body, headers=headers(webhook.secret, str(alert["id"]), int(time.time()), body), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def deliver(
    webhook: Webhook,
    alert: Mapping[str, Any],
    backoff: Backoff,
    *,
    send: Callable[[Webhook, Mapping[str, Any]], str | None] = post,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> tuple[bool, int, str | None]:
    """Send with retries: (delivered, attempts made, last error)."""
    error: str | None = None
    waits = backoff.waits()
    for attempt in range(backoff.attempts):
        error = send(webhook, alert)
        if error is None:
            return True, attempt + 1, None
        log.warning("webhook %s for alert %s: attempt %d failed: %s", webhook.url, alert["id"], attempt + 1, error)
        if attempt < len(waits):
            if stop is not None and stop.wait(waits[attempt]):
                return False, attempt + 1, error
            if stop is None:
                sleep(waits[attempt])
    return False, backoff.attempts, error


def dead_letter(alert: Mapping[str, Any], attempts: int, error: str | None) -> tuple[str, bytes]:
    """The state-topic record of an alert that could not be delivered."""
    value = {"alert": dict(alert), "attempts": attempts, "error": error, "failed_ms": int(time.time() * 1000)}
    return DEAD_PREFIX + str(alert["id"]), json.dumps(value, separators=(",", ":")).encode()


def webhook_of(rules: tuple[AlertRule, ...], alert: Mapping[str, Any]) -> Webhook | None:
    for rule in rules:
        if rule.name == alert.get("rule"):
            return rule.webhook
    return None


@dataclass
class DeliveryStats:
    delivered: int = 0
    dead: int = 0
    attempts: int = 0


class Deliverer:
    """Reads committed alerts and POSTs them (module docstring); ``consumer`` and ``producer`` are confluent-kafka clients."""

    def __init__(
        self,
        rules: tuple[AlertRule, ...],
        consumer: Any,
        producer: Any,
        state_topic: str,
        backoff: Backoff,
        *,
        send: Callable[[Webhook, Mapping[str, Any]], str | None] = post,
    ) -> None:
        self.rules = rules
        self.consumer = consumer
        self.producer = producer
        self.state_topic = state_topic
        self.backoff = backoff
        self.send = send
        self.stop = threading.Event()
        self.stats = DeliveryStats()
        self.thread = threading.Thread(target=self._run, name="alert-webhooks", daemon=True)

    def start(self) -> Deliverer:
        self.thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                messages = self.consumer.consume(100, 0.5)
                for message in messages:
                    if message.error() is None and message.value() is not None:
                        self.handle(json.loads(message.value()))
                if messages and not self.stop.is_set():
                    self.producer.flush(10)
                    self.consumer.commit(asynchronous=False)
        except Exception:  # a delivery thread that died must show, not vanish
            log.exception("webhook delivery stopped")
        finally:
            self.consumer.close()

    def handle(self, alert: Mapping[str, Any]) -> None:
        webhook = webhook_of(self.rules, alert)
        if webhook is None:
            return
        delivered, attempts, error = deliver(webhook, alert, self.backoff, send=self.send, stop=self.stop)
        self.stats.attempts += attempts
        if delivered:
            self.stats.delivered += 1
            return
        if self.stop.is_set():
            return  # not committed: the next run tries again
        key, value = dead_letter(alert, attempts, error)
        self.producer.produce(self.state_topic, key=key.encode(), value=value)
        self.stats.dead += 1
