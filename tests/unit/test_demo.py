"""jobs/demo.py: the demo configuration is a fresh copy for every caller."""

from __future__ import annotations

from pathlib import Path

from jobs.demo import CUSTOMERS, demo_document


def test_demo_document_hands_out_a_copy_of_the_customers(tmp_path: Path) -> None:
    """A test that added a customer to its document once changed every later generate() in the session."""
    before = {name: dict(policy) for name, policy in CUSTOMERS.items()}
    document = demo_document("x", "127.0.0.1:1", tmp_path / "chdb")
    document["billing"]["customers"]["extra-co"] = {"timezone": "UTC"}
    document["billing"]["customers"]["acme"]["period"] = "day"
    assert before == CUSTOMERS
