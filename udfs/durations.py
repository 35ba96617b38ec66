"""Human durations in configuration: ``500ms``, ``30s``, ``15m``, ``48h``, ``7d``, ``2w``, combined (``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
#: The longest duration :func:`parse_duration` returns (about 190 years): far beyond any setting's
#: own bound (jobs/config.py, ``DURATIONS``), far inside ``timedelta``'s range and a Java ``long``
#: of milliseconds.
LONGEST = timedelta(weeks=10_000)


class DurationTooLong(ValueError):
    """A well-formed duration longer than :data:`LONGEST` (``99999999999w``)."""


def parse_duration(text: str | int) -> timedelta:
    """Parse a duration; a bare integer means seconds. Raises ``ValueError`` with the accepted forms.

    Only ever ``ValueError`` (:class:`DurationTooLong` for absurd lengths), never ``OverflowError``.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; durations are >= 0")
        return _checked(text * 1000, text)
    compact = str(text).strip().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration; use e.g. 500ms, 30s, 15m, 48h, 7d, 1h30m")
    millis = 0
    for number, unit in _PART.findall(compact):
        if len(number.lstrip("0")) > 18:  # before int(): Python refuses to convert > 4300 digits
            raise DurationTooLong(f"{text!r} is too long (at most {format_duration(LONGEST)})")
        millis += int(number) * _UNIT_MS[unit]
    return _checked(millis, text)


def _checked(millis: int, text: str | int) -> timedelta:
    if millis > LONGEST // timedelta(milliseconds=1):
        raise DurationTooLong(f"{text!r} is too long (at most {format_duration(LONGEST)})")
    return timedelta(milliseconds=millis)


def format_duration(value: timedelta) -> str:
    """The shortest exact form (``48h``, ``90s``, ``1500ms``)."""
    millis = value // timedelta(milliseconds=1)
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"
