"""A request body -> the events it carries, each as the bytes the job will read (docs/ingest.md, "Formats").

Formats, by ``Content-Type``:

- ``application/json``: one event (a JSON object) or a JSON array of events;
- ``application/x-ndjson`` (also ``application/jsonl``): JSON lines, one event per line, blank
  lines skipped, each line judged on its own as the job judges a Kafka record (a line that is not
  JSON is that event's ``malformed_json``, not the request's 400);
- ``application/cloudevents+json``: one CloudEvent 1.0 in structured mode;
  ``application/cloudevents-batch+json``: a JSON array of them (:func:`from_cloudevent`).

An element of a JSON body is sent as the exact bytes it was written with (as ``metering produce``
sends a line), so a quantity's text survives; a CloudEvent is rewritten as the usage event it
maps to, numbers kept as written. Every event is then judged by ``schemas.validate`` (the job's
definition) in jobs/ingest/service.py.

A body that is not what its type says (not JSON, an array never closed, trailing bytes) is a
:class:`BodyError` (400); too many events or bytes, 413; a type or encoding the API does not
take, 415. ``Content-Encoding: gzip`` is decompressed with a cap on the decompressed size, so a
small bomb cannot fill the memory.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from schemas.validate import NOT_DECODED, JsonNumber, decode, decode_at

#: Media type -> format. Parameters (``; charset=utf-8``) are ignored: JSON is UTF-8.
FORMATS = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/cloudevents+json": "cloudevent",
    "application/cloudevents-batch+json": "cloudevents",
}
#: The API's own reason codes, beside schemas/validate.py's REASONS (the dead letters' codes).
API_REASONS = ("bad_cloudevent", "customer_not_allowed", "heartbeat")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: A permissive decoder, only to find where each element of an array ends: duplicates, NaN and
#: the like are then judged in the element itself by the strict profile (``malformed_json``).
_FINDER = json.JSONDecoder()


class BodyError(Exception):
    """A request refused as a whole: HTTP ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Item:
    """One event of a request: its bytes, or the API's reason for refusing it before validation."""

    line: bytes | None
    reason: str | None = None
    message: str = ""
    #: What ``schemas.validate.decode`` gives for ``line``, when splitting the body read it already.
    decoded: Any = field(default=NOT_DECODED, compare=False, repr=False)


def media_format(content_type: str | None) -> str:
    """The format of a ``Content-Type``; :class:`BodyError` 415 for any other."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in FORMATS:
        raise BodyError(415, "unsupported_media_type", f"Content-Type {media or '(none)'!r}: use one of {', '.join(FORMATS)}")
    return FORMATS[media]


def decoded_body(raw: bytes, encoding: str | None, max_decompressed: int) -> bytes:
    """The body after its ``Content-Encoding`` (identity or gzip, at most ``max_decompressed`` bytes once inflated)."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return raw
    if coding not in ("gzip", "x-gzip"):
        raise BodyError(415, "unsupported_encoding", f"Content-Encoding {coding!r}: use gzip or none")
    out = bytearray()
    data = raw
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip; a body may hold several members
            while data:
                out += inflater.decompress(data, max_decompressed + 1 - len(out))
                if len(out) > max_decompressed:
                    raise BodyError(413, "too_large", f"the body inflates beyond {max_decompressed} bytes")
                data = inflater.unconsumed_tail
            if not inflater.eof:
                raise BodyError(400, "bad_gzip", "the gzip body is truncated")
            data = inflater.unused_data
    except zlib.error as exc:
        raise BodyError(400, "bad_gzip", f"the body is not valid gzip: {exc}") from None
    return bytes(out)


def split(body: bytes, fmt: str, max_events: int) -> list[Item]:
    """The events of a decoded body, in order; :class:`BodyError` for a body refused as a whole."""
    if fmt == "ndjson":
        items = [Item(line.rstrip(b"\r")) for line in body.split(b"\n") if line.strip(b" \t\r\n")]
        _count(len(items), max_events)
    else:
        text = _text(body)
        start = _WHITESPACE.match(text, 0)
        position = start.end() if start else 0
        if text.startswith("[", position):
            elements = _elements(text, position, max_events)
        elif fmt == "cloudevents":
            raise BodyError(400, "malformed_body", "a CloudEvents batch is a JSON array")
        else:
            elements = [(_one(text, position), NOT_DECODED)]
        if fmt.startswith("cloudevent"):
            items = [from_cloudevent(e) for e, _ in elements]
        else:
            items = [Item(e, decoded=value) for e, value in elements]
    if not items:
        raise BodyError(400, "no_events", "the body holds no event")
    return items


def _count(count: int, max_events: int) -> None:
    if count > max_events:
        raise BodyError(413, "too_many_events", f"more than {max_events} events in one request: split it")


def _text(body: bytes) -> str:
    if body.startswith(b"\xef\xbb\xbf"):
        raise BodyError(400, "malformed_body", "a UTF-8 byte-order mark: JSON bodies start without one")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, "malformed_body", f"the body is not UTF-8: {exc}") from None


def _value_end(text: str, position: int) -> int:
    try:
        return int(_FINDER.raw_decode(text, position)[1])
    except (ValueError, RecursionError) as exc:
        raise BodyError(400, "malformed_body", f"not JSON at character {position}: {exc}") from None


def _one(text: str, position: int) -> bytes:
    end = _value_end(text, position)
    after = _WHITESPACE.match(text, end)
    if after is None or after.end() != len(text):
        raise BodyError(400, "malformed_body", f"bytes after the JSON value at character {end}")
    return text[position:end].encode("utf-8")


def _elements(text: str, position: int, max_events: int) -> list[tuple[bytes, Any]]:
    """The exact text of each element of the array at ``position`` (which holds ``[``), with its value
    when it is within the events' JSON profile (``schemas.validate.decode_at``: read once, for
    finding its end and for its verdict), else ``NOT_DECODED`` (its verdict reads it again)."""
    elements: list[tuple[bytes, Any]] = []
    position = _skip(text, position + 1)
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            try:
                value, end = decode_at(text, position)
            except ValueError:  # outside the profile, or no JSON: the lenient reader finds its end (or the 400)
                value, end = NOT_DECODED, _value_end(text, position)
            elements.append((text[position:end].encode("utf-8"), value))
            _count(len(elements), max_events)
            position = _skip(text, end)
            if text.startswith(",", position):
                position = _skip(text, position + 1)
            elif text.startswith("]", position):
                position += 1
                break
            else:
                raise BodyError(400, "malformed_body", f"expected , or ] at character {position}")
    if _skip(text, position) != len(text):
        raise BodyError(400, "malformed_body", f"bytes after the array at character {position}")
    return elements


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


# --- CloudEvents ----------------------------------------------------------------------------------

#: CloudEvents attribute -> the usage event's field (docs/ingest.md, "CloudEvents").
CLOUDEVENT_FIELDS = {"id": "event_id", "subject": "customer_id", "type": "event_type", "time": "timestamp", "source": "source"}
#: Attributes the CloudEvents 1.0 spec requires of every event.
CLOUDEVENT_REQUIRED = ("specversion", "id", "source", "type")


def from_cloudevent(element: bytes) -> Item:
    """The usage event a structured-mode CloudEvent carries: its attributes mapped, ``data``'s fields added.

    ``id`` -> ``event_id``, ``subject`` -> ``customer_id``, ``type`` -> ``event_type``, ``time`` ->
    ``timestamp``, ``source`` -> ``source``; ``data`` (a JSON object) holds ``quantity`` and any
    other field of the event (``properties``, ``resource``, ``user_id``, ``region``). Extension
    attributes are ignored. What is no CloudEvent 1.0 with JSON data is ``bad_cloudevent``; what
    is wrong with the event it maps to is for the validation to say.
    """
    try:
        document = decode(element)
    except (ValueError, UnicodeError) as exc:
        return Item(None, "malformed_json", f"not valid JSON: {exc}")
    if not isinstance(document, dict):
        return Item(None, "bad_cloudevent", "a CloudEvent is a JSON object")
    missing = [name for name in CLOUDEVENT_REQUIRED if not isinstance(document.get(name), str) or not document[name]]
    if missing:
        return Item(None, "bad_cloudevent", f"required CloudEvents attributes missing or not text: {', '.join(missing)}")
    if document["specversion"] != "1.0":
        return Item(None, "bad_cloudevent", f"specversion {document['specversion']!r}: only 1.0 is read")
    content_type = document.get("datacontenttype")
    if content_type is not None and (
        not isinstance(content_type, str) or content_type.split(";", 1)[0].strip().lower() != "application/json"
    ):
        return Item(None, "bad_cloudevent", "datacontenttype must be application/json (or absent)")
    if "data_base64" in document:
        return Item(None, "bad_cloudevent", "data_base64: the data must be a JSON object in data")
    data = document.get("data", {})
    if not isinstance(data, dict):
        return Item(None, "bad_cloudevent", "data must be a JSON object holding quantity and the event's other fields")
    event: dict[str, Any] = {field: document[name] for name, field in CLOUDEVENT_FIELDS.items() if name in document}
    clashes = sorted(set(data) & set(event))
    if clashes:
        return Item(None, "bad_cloudevent", f"data repeats what the attributes say: {', '.join(clashes)}")
    return Item(_dump({**event, **data}).encode("utf-8"))


def _dump(value: Any) -> str:
    """Compact JSON of a value :func:`schemas.validate.decode` gave: numbers exactly as written."""
    if isinstance(value, JsonNumber):
        return value.text
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_dump(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a decoded JSON value: {type(value).__name__}")
