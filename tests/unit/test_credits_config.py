"""The ``credits`` section (jobs/config.py -> udfs/credits.py): the exhaustion policy, refused at load with its path."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import EXIT_USAGE, main
from jobs.config import ConfigError, load_config
from udfs.credits import Exhaustion, Policy

METERS = [{"name": "api_calls", "event_type": "api_call", "aggregation": "count"}]


def load(tmp_path: Path, credits: Any) -> Any:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump({"meters": METERS, "credits": credits}))
    return load_config(path)


def test_policies_default_and_per_customer(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "exhaustion": "grace_pct",
            "grace_pct": "5",
            "refresh_every": "1m",
            "customers": {"acme": {"exhaustion": "block"}, "globex": {"grace_pct": "12.5"}},
        },
    ).credits
    assert settings.policy_for("someone") == Policy(Exhaustion.GRACE_PCT, Decimal("5"))
    assert settings.policy_for("acme") == Policy(Exhaustion.BLOCK)
    assert settings.policy_for("globex") == Policy(Exhaustion.GRACE_PCT, Decimal("12.5"))
    assert settings.refresh_every.total_seconds() == 60
    assert load(tmp_path, None).credits.policy_for("acme") == Policy(Exhaustion.OVERAGE)


def test_every_problem_is_named_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(
            tmp_path,
            {
                "exhaustion": "stop",
                "refresh_evry": "5m",
                "customers": {
                    "acme": {"exhaustion": "grace_pct"},
                    "globex": {"exhaustion": "grace_pct", "grace_pct": "150"},
                    "initech": {"exhaustion": "block", "grace_pct": "5"},
                    "umbrella": {"exhaustion": "grace_pct", "grace_pct": "1e2"},
                },
            },
        )
    text = str(raised.value)
    for expected in (
        "credits.exhaustion: 'stop' must be one of block, overage, grace_pct",
        "credits.refresh_evry: unknown key; did you mean credits.refresh_every?",
        "credits.customers.acme.grace_pct: required with exhaustion: grace_pct",
        "credits.customers.globex.grace_pct: 150 must be above 0 and at most 100",
        "credits.customers.initech.grace_pct: applies to exhaustion: grace_pct only, not block",
        "credits.customers.umbrella.grace_pct: '1e2' must be a decimal number written out",
    ):
        assert expected in text, text


def test_validate_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metering.yaml"
    path.write_text(yaml.safe_dump({"meters": METERS, "credits": {"customers": {"acme": {"exhaustion": "grace_pct"}}}}))
    assert main(["config", "validate", str(path)]) == EXIT_USAGE
    assert "credits.customers.acme.grace_pct: required with exhaustion: grace_pct" in capsys.readouterr().err


def test_the_section_docs_pricing_shows_loads(tmp_path: Path) -> None:
    import re

    from infra.settings import PROJECT_ROOT

    page = (PROJECT_ROOT / "docs" / "pricing.md").read_text()
    block = re.search(r"```yaml\n(credits:\n.*?)```", page, re.S)
    assert block is not None
    settings = load(tmp_path, yaml.safe_load(block.group(1))["credits"]).credits
    assert settings.policy_for("acme") == Policy(Exhaustion.GRACE_PCT, Decimal("10"))
    assert settings.policy_for("globex") == Policy(Exhaustion.BLOCK)
