"""Human durations in configuration: ``500ms``, ``30s``, ``15m``, ``48h``, ``7d``, ``2w``, combined (``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int) -> timedelta:
    """Parse a duration; a bare integer means seconds. Raises ``ValueError`` with the accepted forms."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; durations are >= 0")
        return timedelta(seconds=text)
    compact = str(text).strip().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration; use e.g. 500ms, 30s, 15m, 48h, 7d, 1h30m")
    total = timedelta()
    for number, unit in _PART.findall(compact):
        total += timedelta(milliseconds=int(number)) if unit == "ms" else timedelta(seconds=int(number) * _UNITS[unit])
    return total


def format_duration(value: timedelta) -> str:
    """The shortest exact form (``48h``, ``90s``, ``1500ms``)."""
    millis = int(value / timedelta(milliseconds=1))
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"
