"""`metering invoice --explain` (clickhouse/billing.py ``explain_document``, jobs/cli/invoice.py ``render_explain``)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from clickhouse.billing import explain_document, tier_breakdown
from jobs.cli.common import EXIT_USAGE
from jobs.cli.invoice import cmd_invoice, render_explain
from tests.unit.test_invoicing import FEB, GRADUATED, rating_of
from tests.unit.test_pricing import MARCH, TIERS
from udfs.invoicing import CorrectionRecord, FinalTotal, Invoice, build_invoice
from udfs.pricing import Graduated, price

D = Decimal
AS_OF = datetime(2026, 4, 5, tzinfo=UTC)


def march_invoice() -> Invoice:
    """March: its final (12,500 calls) and February's, corrected by +50 (an earlier invoice's), +300 and −20 (March's)."""
    finals = [
        FinalTotal("api_calls", "{}", "count", FEB, D(900), 900, 1, FEB.end),
        FinalTotal("api_calls", "{}", "count", MARCH, D(12500), 12500, 2, MARCH.end),
    ]
    corrections = [
        CorrectionRecord("api_calls", "{}", "count", FEB, 1, D(300), datetime(2026, 3, 3, 12, tzinfo=UTC), FEB.start, 300),
        CorrectionRecord("api_calls", "{}", "count", FEB, -1, D(20), datetime(2026, 3, 30, tzinfo=UTC), FEB.start, 20),
        CorrectionRecord("api_calls", "{}", "count", FEB, 1, D(50), datetime(2026, 2, 20, tzinfo=UTC), FEB.start, 50),
    ]
    return build_invoice("acme", MARCH, finals, corrections, GRADUATED, as_of=AS_OF, is_final=True)


def test_each_charge_names_the_stored_rows_behind_it_and_its_tiers() -> None:
    document = explain_document(march_invoice())
    usage, fix = document["items"]
    assert (usage["section"], usage["period_start"]) == ("usage", "2026-03-01T00:00:00.000Z")
    assert [(r["table"], r["value"], r["revision"], r["finalized_at_watermark"]) for r in usage["rows"]] == [
        ("period_finals", "12500", 2, "2026-04-01T00:00:00.000Z")
    ]
    assert [(t["tier"], t["quantity"], t["unit_price"], t["amount"], t["rounded"]) for t in usage["charge"]["tiers"]] == [
        ("tier 1 (0 to 1000)", "1000", "0.01", "10.00", "10.00"),
        ("tier 2 (over 1000 to 10000)", "9000", "0.008", "72.000", "72.00"),
        ("tier 3 (over 10000)", "2500", "0.005", "12.500", "12.50"),
    ]
    # February's correction: 950 before (900 + the 50 an earlier invoice carried), 1,230 with March's
    assert (fix["section"], fix["before"]["quantity"], fix["charge"]["quantity"]) == ("correction", "950", "1230")
    assert [(r["table"], r.get("sign"), r.get("on_this_invoice")) for r in fix["rows"]] == [
        ("period_finals", None, None),
        ("corrections", 1, False),
        ("corrections", 1, True),
        ("corrections", -1, True),
    ]
    assert [r.get("loaded_at") for r in fix["rows"][1:]] == [
        "2026-02-20T00:00:00.000Z",
        "2026-03-03T12:00:00.000Z",
        "2026-03-30T00:00:00.000Z",
    ]
    # the invoice's lines of the correction are after − before, in both columns
    assert D(fix["amount"]) == D(fix["charge"]["amount"]) - D(fix["before"]["amount"]) == D("2.340")
    assert D(fix["rounded"]) == D(fix["charge"]["rounded"]) - D(fix["before"]["rounded"])
    assert sum(D(i["amount"]) for i in document["items"]) == D(document["amount"])
    assert sum(len(i["lines"]) for i in document["items"]) == len(document["lines"])


def test_tiers_not_reached_are_shown_empty_in_the_cards_order_between_included_and_minimum() -> None:
    rating = rating_of(Graduated(TIERS), included=D(100), minimum=D("20.00"))
    found = rating.card_for("acme", "api_calls")
    assert found is not None
    rows = tier_breakdown(price(found[0], MARCH, D(600), found[1]))
    assert [(r["kind"], r["tier"], r["quantity"]) for r in rows] == [
        ("included", None, "100"),
        ("units", "tier 1 (0 to 1000)", "500"),
        ("not_reached", "tier 2 (over 1000 to 10000)", "0"),
        ("not_reached", "tier 3 (over 10000)", "0"),
        ("minimum", None, "1"),
    ]
    assert [r["amount"] for r in rows] == ["0", "5.00", "0", "0", "15.00"]


def test_the_table_shows_rows_tiers_and_lines_and_json_is_the_document() -> None:
    document = explain_document(march_invoice())
    text = render_explain(document, "table")
    assert text.startswith("invoice acme, 2026-03-01T00:00:00.000Z to 2026-04-01T00:00:00.000Z, USD, final as of")
    assert "usage api_calls, period 2026-03-01T00:00:00.000Z to 2026-04-01T00:00:00.000Z: 94.500 (94.50 rounded)" in text
    assert "correction api_calls, of period 2026-02-01T00:00:00.000Z to 2026-03-01T00:00:00.000Z: 2.340 (2.34 rounded)" in text
    assert "tier 2 (over 1000 to 10000): not reached" in text
    assert "loaded 2026-03-03T12:00:00.000Z" in text and "no: an earlier invoice's" in text
    assert "before this invoice's corrections: quantity 950" in text and "with them: quantity 1230" in text
    assert text.rstrip().endswith("total 96.840 (96.84 rounded)")
    assert json.loads(render_explain(document, "json")) == json.loads(json.dumps(document))


def test_explain_is_refused_as_csv_before_anything_is_read() -> None:
    args = argparse.Namespace(explain=True, format="csv", config="/nonexistent.yaml")
    assert cmd_invoice(args) == EXIT_USAGE


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_an_unpriced_total_is_listed(fmt: str) -> None:
    finals = [FinalTotal("tokens", "{}", "sum", MARCH, D(5))]
    invoice = build_invoice("acme", MARCH, finals, [], GRADUATED, as_of=AS_OF, is_final=True)
    text = render_explain(explain_document(invoice), fmt)
    assert "the customer's plan prices no such meter" in text
