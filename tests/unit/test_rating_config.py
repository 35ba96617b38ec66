"""The ``rating`` section (jobs/config.py -> udfs/pricing.py): optional, checked at load, every problem with its path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.cli import EXIT_USAGE, main
from jobs.config import ConfigError, load_config
from udfs.periods import Period
from udfs.pricing import Graduated, Money, PackageRounding, Rating, Rounding

METERS = [
    {"name": "api_calls", "event_type": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_type": "tokens", "aggregation": "sum"},
    {"name": "payments", "event_type": "payment", "aggregation": "sum"},
]
MARCH = Period(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
VALID: dict[str, Any] = {
    "currency": "USD",
    "default_plan": "standard",
    "plans": {
        "standard": {
            "meters": {
                "api_calls": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "ends_before": "2026-06-01T00:00:00Z",
                        "model": "graduated",
                        "included": "1000",
                        "tiers": [{"up_to": "100000", "unit_price": "0.002"}, {"unit_price": "0.001", "flat_price": "5"}],
                    },
                    {"starts_at": "2026-06-01T00:00:00Z", "model": "per_unit", "unit_price": "0.0015"},
                ],
                "payments": [
                    {
                        "starts_at": "2026-01-01T00:00:00Z",
                        "model": "percentage",
                        "percent": "2.9",
                        "min_amount": "0.30",
                        "max_amount": "500.00",
                    }
                ],
            }
        },
        "eu": {
            "currency": "EUR",
            "rounding": "ROUND_HALF_EVEN",
            "meters": {
                "tokens": [
                    {
                        "starts_at": "2026-01-01T00:00:00+01:00",
                        "model": "package",
                        "package_size": "1000",
                        "package_price": "0.02",
                        "package_rounding": "down",
                        "minimum": "10.00",
                        "quantity_rounding": {"places": 0, "mode": "ROUND_UP"},
                    }
                ]
            },
        },
    },
    "customers": {
        "acme": {"plan": "eu"},
        "bigco": {
            "meters": {"tokens": [{"starts_at": "2026-01-01T00:00:00Z", "model": "volume", "tiers": [{"unit_price": "0.00001"}]}]}
        },
    },
}


def write(directory: Path, rating: Any, meters: list[dict[str, Any]] | None = None) -> Path:
    path = directory / "metering.yaml"
    document: dict[str, Any] = {"meters": METERS if meters is None else meters}
    if rating is not None:
        document["rating"] = rating
    path.write_text(yaml.safe_dump(document))
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env or {})
    return "\n".join(err.value.problems)


def test_a_configuration_without_rating_loads_as_before(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, None), env={})
    assert config.rating == Rating()
    assert config.rating.price("acme", "api_calls", MARCH, Decimal(1)) is None


def test_a_valid_rating_section_loads_into_plans_cards_and_customers(tmp_path: Path) -> None:
    rating = load_config(write(tmp_path, VALID), env={}).rating
    assert rating.default_plan == "standard" and sorted(rating.plans) == ["eu", "standard"]
    assert rating.plans["standard"].money == Money("USD", 2, "ROUND_HALF_UP")
    assert rating.plans["eu"].money == Money("EUR", 2, "ROUND_HALF_EVEN")
    api = rating.plans["standard"].cards["api_calls"]
    assert [v.starts_at for v in api.versions] == [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)]
    assert isinstance(api.versions[0].model, Graduated) and api.versions[0].included == 1000
    tokens = rating.plans["eu"].cards["tokens"].versions[0]
    assert tokens.starts_at == datetime(2025, 12, 31, 23, tzinfo=UTC)  # the offset as written, kept as UTC
    assert tokens.quantity_rounding == Rounding(0, "ROUND_UP") and tokens.minimum == Decimal("10.00")
    assert tokens.model.rounding is PackageRounding.DOWN  # type: ignore[union-attr]
    # 101,000 calls: 1,000 included, 100,000 at 0.002, 0 above (tier 2 not reached)
    charge = rating.price("someone", "api_calls", MARCH, Decimal(101_000))
    assert charge is not None and charge.rounded == Decimal("200.00")
    acme = rating.price("acme", "tokens", MARCH, Decimal("2500.5"))
    assert acme is not None and (acme.currency, acme.rated_quantity, acme.rounded) == ("EUR", Decimal(2501), Decimal("10.00"))
    assert rating.price("acme", "api_calls", MARCH, Decimal(1)) is None  # the eu plan prices no api_calls
    bigco = rating.price("bigco", "tokens", MARCH, Decimal(1_000_000))
    assert bigco is not None and bigco.rounded == Decimal("10.00")


def test_unquoted_prices_are_read_as_text_never_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "metering.yaml"
    path.write_text(
        yaml.safe_dump({"meters": METERS})
        + "rating:\n  default_plan: p\n  plans:\n    p:\n      meters:\n        tokens:\n"
        + "          - {starts_at: 2026-01-01T00:00:00Z, model: per_unit, unit_price: 0.10}\n"
    )
    version = load_config(path, env={}).rating.plans["p"].cards["tokens"].versions[0]
    assert str(version.model.unit_price) == "0.10"  # type: ignore[union-attr]


def test_every_problem_is_reported_with_its_path_and_fix(tmp_path: Path) -> None:
    rating = {
        "currency": "usd",
        "rounding": "HALF_UP",
        "default_plan": "standrd",
        "plans": {
            "standard": {
                "meters": {
                    "api_cals": [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1"}],
                    "api_calls": [
                        {
                            "starts_at": "2026-01-01T00:00:00Z",
                            "model": "graduated",
                            "tiers": [
                                {"up_to": "100", "unit_price": "0.0000000000001"},
                                {"up_to": "100", "unit_price": "-1"},
                                {"up_to": "500"},
                            ],
                        }
                    ],
                    "tokens": [
                        {"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "0.1"},
                        {"starts_at": "2026-02-01T00:00:00Z", "model": "per_unit", "unit_price": "0.2", "tiers": []},
                        {"starts_at": "2026-03-01", "model": "tiered"},
                    ],
                    "payments": [
                        {"starts_at": "2026-01-01T00:00:00Z", "model": "percentage", "percent": "1e-3", "min_amount": "0.001"},
                        {"starts_at": "2026-03-01T00:00:00Z", "model": "package", "package_size": "0", "package_price": "1"},
                        {"starts_at": "2026-02-01T00:00:00Z", "ends_before": "2026-01-01T00:00:00Z", "model": "per_unit"},
                    ],
                }
            },
            "exotic": {"currency": "XTS"},
        },
        "customers": {"acme": {"plan": "gold"}, " acme": {}, "bigco": {"meters": {"tokens": "cheap"}}},
        "currencies": {},
    }
    text = problems_of(write(tmp_path, rating))
    for expected in [
        "rating.currencies: unknown key; did you mean rating.currency?",
        "rating.currency: 'usd' is not an ISO 4217 code: three capital letters, e.g. USD",
        "rating.rounding: 'HALF_UP' must be one of ROUND_HALF_UP, ",
        "; did you mean ROUND_HALF_UP?",
        "rating.default_plan: unknown plan 'standrd' (defined: exotic, standard); did you mean 'standard'?",
        "rating.plans.standard.meters.api_cals: unknown meter 'api_cals' (defined: api_calls, payments, tokens); "
        "did you mean 'api_calls'?",
        "rating.plans.standard.meters.api_calls[0].tiers[0].unit_price: 0.0000000000001 has more than 12 decimal places: "
        "round it to at most 12",
        "rating.plans.standard.meters.api_calls[0].tiers[1].unit_price: -1 must not be negative",
        "rating.plans.standard.meters.api_calls[0].tiers[1].up_to: 100 must be greater than the tier before's up_to 100",
        "rating.plans.standard.meters.api_calls[0].tiers[2]: give unit_price, flat_price or both",
        "rating.plans.standard.meters.api_calls[0].tiers[2].up_to: the last tier takes every unit above the one before",
        "rating.plans.standard.meters.tokens[1].tiers: not a key of model per_unit (it belongs to graduated, volume; "
        "per_unit takes unit_price)",
        "rating.plans.standard.meters.tokens[2].starts_at: '2026-03-01' has no offset",
        "rating.plans.standard.meters.tokens[2].model: 'tiered' must be one of per_unit, graduated, volume, package, percentage",
        "rating.plans.standard.meters.payments[0].percent: '1e-3' must be a decimal number written out",
        "rating.plans.standard.meters.payments[1].package_size: 0 must be greater than 0",
        "rating.plans.standard.meters.payments[2].unit_price: required by model per_unit",
        "rating.plans.exotic.currency: unknown currency 'XTS': set rating.plans.exotic.minor_units",
        "rating.customers.acme.plan: unknown plan 'gold'",
        "rating.customers[' acme']: ' acme' is not a valid customer_id",
        "rating.customers.bigco.meters.tokens: must be a list of versions",
    ]:
        assert expected in text, f"missing {expected!r} in:\n{text}"


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (
            [
                {"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1"},
                {"starts_at": "2026-03-01T00:00:00Z", "model": "per_unit", "unit_price": "2"},
            ],
            "tokens[1].starts_at: overlaps version [0], which has no ends_before: give [0] ends_before: 2026-03-01T00:00:00Z",
        ),
        (
            [
                {
                    "starts_at": "2026-01-01T00:00:00Z",
                    "ends_before": "2026-04-01T00:00:00Z",
                    "model": "per_unit",
                    "unit_price": "1",
                },
                {"starts_at": "2026-03-01T00:00:00Z", "model": "per_unit", "unit_price": "2"},
            ],
            "tokens[1].starts_at: overlaps version [0], which ends 2026-04-01T00:00:00Z",
        ),
        (
            [
                {"starts_at": "2026-03-01T00:00:00Z", "model": "per_unit", "unit_price": "1"},
                {
                    "starts_at": "2026-01-01T00:00:00Z",
                    "ends_before": "2026-02-01T00:00:00Z",
                    "model": "per_unit",
                    "unit_price": "2",
                },
            ],
            "tokens[1].starts_at: versions go oldest first",
        ),
        (
            [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1", "minimum": "10.001"}],
            "tokens[0].minimum: 10.001 is an amount of money: at most the currency's 2 minor-unit digit(s)",
        ),
        (
            [{"starts_at": "2026-01-01T00:00:00Z", "model": "per_unit", "unit_price": "1", "quantity_rounding": {"mode": "UP"}}],
            "tokens[0].quantity_rounding.places: required",
        ),
        (
            [
                {
                    "starts_at": "2026-01-01T00:00:00Z",
                    "model": "percentage",
                    "percent": "1",
                    "min_amount": "5.00",
                    "max_amount": "1.00",
                }
            ],
            "tokens[0].max_amount: 1.00 must not be below min_amount 5.00",
        ),
        ([], "rating.plans.p.meters.tokens: must be a list of versions (starts_at, model, prices …), got an empty list"),
        (None, "rating.plans.p.meters.tokens: must be a list of versions (starts_at, model, prices …), got nothing"),
    ],
)
def test_card_problems(tmp_path: Path, versions: list[dict[str, Any]] | None, expected: str) -> None:
    rating = {"default_plan": "p", "plans": {"p": {"meters": {"tokens": versions}}}}
    assert expected in problems_of(write(tmp_path, rating))


def test_plans_need_a_default_plan(tmp_path: Path) -> None:
    rating: dict[str, Any] = {"plans": {"p": {"meters": {}}}}
    assert "rating.default_plan: required: the plan of every customer not assigned one (p)" in problems_of(
        write(tmp_path, rating)
    )


def test_cards_of_unknown_meters_are_refused_even_without_meters(tmp_path: Path) -> None:
    path = write(tmp_path, VALID, meters=[])
    with pytest.raises(ConfigError, match="meters: at least one meter is required"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"rating\.plans\.standard\.meters\.api_calls: unknown meter"):
        load_config(path, env={}, require_meters=False)


def test_environment_overrides_rating_keys_and_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    env = {"METERING__RATING__DEFAULT_PLAN": "eu", "METERING__RATING__CUSTOMERS__ACME__PLAN": "standard"}
    rating = load_config(path, env=env).rating
    assert (rating.plan_of("someone"), rating.plan_of("acme")) == ("eu", "standard")
    chf = load_config(path, env={"METERING__RATING__PLANS__EU__CURRENCY": "CHF"}).rating.plans["eu"].money
    assert (chf.currency, chf.minor_units, chf.mode) == ("CHF", 2, "ROUND_HALF_EVEN")
    # yen have no minor unit: the eu plan's minimum of 10.00 cannot be shown in them
    text = problems_of(path, {"METERING__RATING__PLANS__EU__CURRENCY": "JPY"})
    assert "rating.plans.eu.meters.tokens[0].minimum: 10.00 is an amount of money: at most the currency's 0" in text
    text = problems_of(path, {"METERING__RATING__ROUNDING": "ROUND_NEAREST"})
    line = next(p for p in text.splitlines() if p.startswith("rating.rounding:"))
    assert "METERING__RATING__ROUNDING" in line


def test_a_bad_rating_exits_2_from_the_cli_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rating = {"default_plan": "p", "plans": {"p": {"meters": {"tokens": [{"starts_at": "2026-01-01T00:00:00Z", "model": "x"}]}}}}
    path = write(tmp_path, rating)
    assert main(["config", "validate", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "rating.plans.p.meters.tokens[0].model" in err and "Traceback" not in err
    assert main(["config", "validate", str(path), "--format", "json"]) == EXIT_USAGE
    paths = {e["path"] for e in json.loads(capsys.readouterr().out)["errors"]}
    assert "rating.plans.p.meters.tokens[0].model" in paths


def test_config_validate_summarizes_the_rate_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["config", "validate", str(path), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["rating"]
    assert summary == {
        "default_plan": "standard",
        "plans": {"eu": ["tokens"], "standard": ["api_calls", "payments"]},
        "customers": ["acme", "bigco"],
    }
    assert main(["config", "validate", str(path)]) == 0
    assert "rate plan standard (default): api_calls, payments" in capsys.readouterr().out


def test_the_examples_rate_cards_load_price_and_survive_the_deployment_files() -> None:
    from infra.settings import PROJECT_ROOT

    rating = load_config(PROJECT_ROOT / "config" / "metering.example.yaml", env={}).rating
    assert rating.default_plan == "standard" and rating.plan_of("acme") == "enterprise-eu"
    july = Period(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC))
    # 160,000 calls: 10,000 included, 100,000 x 0.0002 + 50,000 x 0.0001 before July, the later prices from July
    assert [rating.price("someone", "api_calls", p, Decimal(160_000)).rounded for p in (MARCH, july)] == [  # type: ignore[union-attr]
        Decimal("25.00"),
        Decimal("22.50"),
    ]
    acme = rating.price("acme", "api_calls", MARCH, Decimal(1_000_000))
    assert acme is not None and (acme.currency, acme.rounded) == ("EUR", Decimal("500.00"))  # 150.00, trued up
    gpu = rating.price("someone", "gpu_seconds", MARCH, Decimal("36000.4"))
    assert gpu is not None and (gpu.rated_quantity, gpu.rounded) == (Decimal(36001), Decimal("25.00"))
    storage = rating.price("someone", "storage_peak_bytes", MARCH, Decimal(50_000_000_000))
    assert storage is not None and storage.rounded == Decimal("20.00")
    credit = rating.price("someone", "credits_adjustment", MARCH, Decimal("-12.5"))
    assert credit is not None and credit.rounded == Decimal("-12.50")
    assert rating.card_for("bharat-ai", "tokens") != rating.card_for("someone", "tokens")
    assert rating.price("someone", "active_users", MARCH, Decimal(5)) is None  # not priced
    deployed = load_config(
        PROJECT_ROOT / "infra" / "deploy" / "metering.yaml",
        env={"METERING__KAFKA__SECURITY__PASSWORD": "k", "METERING__STORAGE__PASSWORD": "c"},
    )
    assert deployed.rating == rating
