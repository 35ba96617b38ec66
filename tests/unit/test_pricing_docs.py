"""docs/pricing.md's worked examples are what the code prices: the page, re-priced, is the page.

Each ```yaml block starting with ``# example`` is the ``rating`` section of a configuration (with
:data:`METERS`); each ```text block starting with ``$ price METER for CUSTOMER in START/END:
QUANTITY`` is followed by :func:`udfs.pricing.explain` of that charge. ``render`` recomputes every
such block; the test holds the page to it (and ``python -m tests.unit.test_pricing_docs`` rewrites
the page after a deliberate change, to be read over before committing).
"""

from __future__ import annotations

import re
import sys
import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import yaml

from infra.settings import PROJECT_ROOT
from jobs.config import ConfigError, load_config
from udfs.periods import Period
from udfs.pricing import Rating, explain

PAGE = PROJECT_ROOT / "docs" / "pricing.md"
METERS = [
    {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_type": "tokens", "aggregation": "sum"},
    {"name": "gpu_seconds", "event_type": "gpu_seconds", "aggregation": "sum"},
    {"name": "payments", "event_type": "payment", "aggregation": "sum"},
    {"name": "storage_peak_bytes", "event_type": "storage_snapshot", "aggregation": "max"},
    {"name": "credits", "event_type": "credits", "aggregation": "sum", "allow_negative": True},
]
BLOCK = re.compile(r"```(yaml|text)\n(.*?)```", re.DOTALL)
PRICE = re.compile(r"\$ price (\w+) for (\S+) in (\S+)/(\S+): (-?[0-9.]+)")


def rating_of(section: str) -> Rating:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "metering.yaml"
        indented = "".join(f"  {line}\n" for line in section.splitlines())
        path.write_text(yaml.safe_dump({"meters": METERS}) + "rating:\n" + indented)
        return load_config(path, env={}).rating


def priced(command: str, rating: Rating) -> str:
    match = PRICE.fullmatch(command)
    assert match, f"not a price command: {command!r}"
    meter, customer, start, end, quantity = match.groups()
    period = Period(datetime.fromisoformat(start), datetime.fromisoformat(end))
    charge = rating.price(customer, meter, period, Decimal(quantity))
    assert charge is not None, f"{command}: {meter} is not priced for {customer}"
    return explain(charge)


def render(page: str) -> str:
    """The page with every priced block recomputed from the example before it."""
    rating: Rating | None = None
    out, last = [], 0
    for block in BLOCK.finditer(page):
        kind, body = block.groups()
        if kind == "yaml" and body.startswith("# example"):
            rating = rating_of(body)
        elif kind == "text" and body.startswith("$ price "):
            assert rating is not None, "a price block before any example"
            command = body.splitlines()[0]
            out += [page[last : block.start(2)], f"{command}\n{priced(command, rating)}\n"]
            last = block.end(2)
    return "".join([*out, page[last:]])


def test_every_worked_example_prints_what_the_page_shows() -> None:
    page = PAGE.read_text()
    assert page.count("$ price ") >= 20 and page.count("# example") >= 8
    assert render(page) == page, "docs/pricing.md differs from what the code prices (python -m tests.unit.test_pricing_docs)"


def test_the_page_covers_every_model_and_line_kind() -> None:
    from udfs.pricing import LineKind, ModelKind

    page = PAGE.read_text()
    examples = "".join(body for kind, body in BLOCK.findall(page) if kind == "yaml")
    assert all(f"model: {model.value}" in examples for model in ModelKind)
    shown = "".join(body for kind, body in BLOCK.findall(page) if body.startswith("$ price "))
    for kind, word in [
        (LineKind.INCLUDED, "included"),
        (LineKind.FLAT, "flat price"),
        (LineKind.FEE_MINIMUM, "fee minimum"),
        (LineKind.FEE_MAXIMUM, "fee maximum"),
        (LineKind.MINIMUM, "period minimum"),
        (LineKind.PACKAGES, "package(s)"),
    ]:
        assert word in shown, kind


def test_the_problems_the_page_lists_are_the_ones_loading_reports(tmp_path: Path) -> None:
    page = PAGE.read_text()
    listed = page.split("exits 2 listing them all, as for every other section:\n\n```\n", 1)[1].split("```", 1)[0]
    rating = {
        "rounding": "HALF_UP",
        "default_plan": "standard",
        "plans": {
            "standard": {
                "meters": {
                    "api_cals": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1"}],
                    "api_calls": [
                        {
                            "starts_at": "2026-01-01T00:00:00Z",
                            "model": "graduated",
                            "tiers": [
                                {"up_to": "100", "unit_price": "-1"},
                                {"up_to": "100", "unit_price": "1"},
                                {"unit_price": "1"},
                            ],
                        }
                    ],
                    "tokens": [
                        {"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1", "minimum": "10.001"},
                        {"starts_at": "2026-03-01T00:00:00Z", "model": "per_unit", "unit_price": "2"},
                    ],
                }
            },
            "eu": {"currency": "XTS"},
        },
    }
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump({"meters": METERS[:2], "rating": rating}))
    try:
        load_config(path, env={})
        raise AssertionError("the configuration should be refused")
    except ConfigError as exc:
        problems = exc.problems
    for line in listed.splitlines():
        head, _, tail = line.partition("…")
        assert any(p.startswith(head) and p.endswith(tail) for p in problems), f"{line!r} not among:\n" + "\n".join(problems)


if __name__ == "__main__":  # rewrite the page's priced blocks after a deliberate change
    PAGE.write_text(render(PAGE.read_text()))
    sys.exit(0)
