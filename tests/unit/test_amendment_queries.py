"""The rule that applies amendments to raw events is written once per query that needs it: the copies agree."""

from __future__ import annotations

import re

from clickhouse.queries import sql_of


def amendments_rule(name: str) -> list[str]:
    text = sql_of(name)
    found = re.search(r"-- AMENDMENTS \(.*?\)\n(.*?)-- END AMENDMENTS", text, re.S)
    assert found is not None, f"{name} has no AMENDMENTS block"
    return [line.strip() for line in found.group(1).splitlines()]


def test_the_replay_and_the_recompute_check_apply_amendments_alike() -> None:
    assert amendments_rule("replay_examine") == amendments_rule("check_recompute")
