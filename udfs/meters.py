"""Meter definitions: which events a meter counts, how, and grouped by what.

A meter is configuration, not code: ``name``, ``event_type``, ``aggregation``,
the ``value`` it reads (``quantity`` or ``properties.<name>``), ``group_by``
dimensions from ``properties``, and whether negative values are allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from schemas.validate import property_name_rule, string_rule

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Aggregation(StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    MIN = "min"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"

    @property
    def needs_numeric_value(self) -> bool:
        """Aggregations whose value must be an exact decimal (count and unique_count need not)."""
        return self in (Aggregation.SUM, Aggregation.MAX, Aggregation.MIN, Aggregation.LATEST)

    @property
    def amendable(self) -> bool:
        """Whether a contribution can be taken back by a negative one (a void or an amend): sum and count."""
        return self in (Aggregation.SUM, Aggregation.COUNT)


@dataclass(frozen=True)
class Meter:
    """One meter. ``value`` is ``"quantity"`` or ``"properties.<name>"``."""

    name: str
    event_type: str
    aggregation: Aggregation
    value: str = "quantity"
    group_by: tuple[str, ...] = ()
    allow_negative: bool = False

    @property
    def value_property(self) -> str | None:
        """The ``properties`` key carrying the value, or None when the value is ``quantity``."""
        return None if self.value == "quantity" else self.value.removeprefix("properties.")

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every inconsistency in this definition."""
        found: list[tuple[str, str]] = []
        if not NAME.match(self.name):
            found.append(("name", f"{self.name!r} must match {NAME.pattern} (it becomes a column value and metric name)"))
        # Matched against events' fields: the event schema's own rules (a value no event can
        # carry would never match, silently).
        if (problem := string_rule("event_type").problem(self.event_type)) is not None:
            found.append(("event_type", problem))
        # A ``properties`` key (``propertyNames``): properties are flat scalars, and ``gpu.type``
        # is one key, not a path into a nested object.
        property_name = property_name_rule()
        if self.value != "quantity" and not (
            self.value.startswith("properties.") and property_name.problem(self.value.removeprefix("properties.")) is None
        ):
            found.append(("value", f"{self.value!r} must be 'quantity' or 'properties.<name>' ({property_name.pattern})"))
        for index, dimension in enumerate(self.group_by):
            if (problem := property_name.problem(dimension)) is not None:
                found.append((f"group_by[{index}]", problem))
        if len(set(self.group_by)) != len(self.group_by):
            found.append(("group_by", "dimensions must not repeat"))
        return found
