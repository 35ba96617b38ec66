"""Event lines the tests share."""

from __future__ import annotations

from schemas.validate import SCHEMA_DIR


def spec_example_lines() -> list[bytes]:
    """The spec's example lines (``schemas/examples/v1``, valid and invalid), in path order, without the newline."""
    return [p.read_bytes().strip() for p in sorted((SCHEMA_DIR / "examples" / "v1").glob("*/*.json"))]
