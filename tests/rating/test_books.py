"""Loading the catalogue: the shipped example works, a broken file says where and why."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bench.usage_mix import CATALOGUE as LOADGEN_MODELS
from metering.rating.books import CATALOGUE, Books, load_books
from metering.rating.engine import RatingEngine
from metering.rating.loading import CatalogueError
from metering.rating.state import RatingState
from schemas.event import UsageEvent
from schemas.meters import METER_DIMENSIONS, MODES

PRICES = """
currency: USD
versions:
  - id: v1
    effective_from: 2025-01-01T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o, per: million, rates: {input_tokens: 2.50}}
"""


def test_shipped_catalogue_lists_exactly_the_24_example_customers(shipped: Books) -> None:
    assert sorted(shipped.contracts.customers) == [f"cust-{i:04d}" for i in range(1, 25)]


def test_every_shipped_customer_can_use_every_load_generator_model(shipped: Books) -> None:
    """Every customer, model and mode has a price and a cost, so no valid traffic is lost."""
    engine, at = RatingEngine(shipped), datetime(2026, 11, 20, tzinfo=UTC)
    events = [
        UsageEvent(
            f"{customer}-{p.model}-{mode}",
            at,
            customer,
            p.meter,
            p.model,
            p.providers[0],
            mode,
            dict.fromkeys(METER_DIMENSIONS[p.meter], 1000),
        )
        for customer in shipped.contracts.customers
        for p in LOADGEN_MODELS
        for mode in sorted(MODES)
    ]
    result = engine.rate_batch(RatingState(), events)
    assert result.rejections == []
    assert all(line.cost_version is not None and line.amount >= 0 for line in result.lines)
    assert all(line.amount > 0 for line in result.lines if line.customer_id == "cust-0001")


def test_rates_are_exact_decimals_never_floats(shipped: Books) -> None:
    [span] = shipped.prices.spans("llm.tokens", "gpt-4o-mini", "batch", "default")
    schedule = span.value.schedules["cached_input_tokens"]
    assert schedule.rates == (Decimal("0.0375"),) and schedule.per == 1_000_000


def test_a_credit_tier_states_rates_in_credits(shipped: Books) -> None:
    [span] = shipped.prices.spans("image.generation", "sdxl", "realtime", "credits")
    assert span.value.schedules["images"].rates == (Decimal("0.05"),)


def _write(folder: Path, **texts: str) -> dict[str, Path]:
    paths = {}
    for name in ("prices", "contracts", "costs"):
        path = folder / f"{name}.yaml"
        text = texts.get(name)
        if text is None:
            path.write_text((CATALOGUE / f"{name}.yaml").read_text())
        else:
            path.write_text(text)
        paths[name] = path
    return paths


@pytest.mark.parametrize(
    ("prices", "field", "reason"),
    [
        (
            PRICES.replace("input_tokens: 2.50", "input_tokens: -1"),
            "versions[0].prices[0].rates.input_tokens",
            "greater than or equal to 0",
        ),
        (
            PRICES.replace("input_tokens", "audio_seconds"),
            "versions[0].prices[0]",
            "dimension 'audio_seconds' is not measured by 'llm.tokens'",
        ),
        (PRICES.replace("llm.tokens", "llm.tokenz"), "versions[0].prices[0].meter", "llm.tokenz"),
        (PRICES.replace("per: million", "pre: million"), "versions[0].prices[0].pre", "Extra"),
        (
            PRICES.replace("2025-01-01T00:00:00Z", "2025-01-01T00:00:00"),
            "versions[0].effective_from",
            "timezone",
        ),
        (PRICES.replace("currency: USD", "currency: dollars"), "currency", "pattern"),
        (
            PRICES.replace(
                "rates: {input_tokens: 2.50}",
                "graduated: [{up_to: 5, rates: {input_tokens: 1}},"
                " {up_to: 3, rates: {input_tokens: 1}}, {rates: {input_tokens: 1}}]",
            ),
            "versions[0].prices[0]",
            "band bounds must increase",
        ),
        (
            PRICES.replace("rates: {input_tokens: 2.50}", "rates: {gpu_ms: 1}, per: hour"),
            "versions[0].prices[0]",
            "not measured",
        ),
    ],
)
def test_a_malformed_price_book_names_file_field_and_reason(
    tmp_path: Path, prices: str, field: str, reason: str
) -> None:
    paths = _write(tmp_path, prices=prices)
    with pytest.raises(CatalogueError) as caught:
        load_books(**paths)
    assert caught.value.path == str(paths["prices"])
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{paths['prices']}: {field}: ")


def test_yaml_syntax_errors_and_missing_files_name_the_file(tmp_path: Path) -> None:
    paths = _write(tmp_path, prices="versions: [unclosed")
    with pytest.raises(
        CatalogueError, match=r"(?s)prices\.yaml: not valid YAML: .*line 1, column 20"
    ):
        load_books(**paths)
    with pytest.raises(CatalogueError, match=r"nowhere\.yaml: cannot read"):
        load_books(tmp_path / "nowhere.yaml")


def test_contract_errors_name_the_customer_field(tmp_path: Path) -> None:
    contracts = """
customers:
  - id: a
    contract: {id: X, terms: {customer_tier: platinum}}
"""
    paths = _write(tmp_path, contracts=contracts)
    with pytest.raises(CatalogueError) as caught:
        load_books(**paths)
    assert caught.value.field == "customers[0].contract.terms.customer_tier"
    assert "'platinum' is not a price book tier" in caught.value.reason


@pytest.mark.parametrize(
    ("contracts", "field", "reason"),
    [
        ("customers: [{id: a}, {id: a}]", "(top level)", "listed more than once"),
        ("customers: [{id: a, contract: {id: X, terms: {plan: gold}}}]", "(top level)", "'gold'"),
        (
            "customers: [{id: a, contract: {id: X, billing: {anchor: 2025-01-31}}}]",
            "customers[0].contract.billing",
            "anchor day",
        ),
        (
            "customers: [{id: a, contract: {id: X, terms: {discount_percent: 150}}}]",
            "customers[0].contract.terms.discount_percent",
            "less than or equal to 100",
        ),
    ],
)
def test_malformed_contracts(tmp_path: Path, contracts: str, field: str, reason: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        load_books(**_write(tmp_path, contracts=contracts))
    assert (caught.value.field, reason in caught.value.reason) == (field, True)


def test_the_cost_book_must_share_the_price_book_currency(tmp_path: Path) -> None:
    costs = (CATALOGUE / "costs.yaml").read_text().replace("currency: USD", "currency: EUR")
    with pytest.raises(CatalogueError, match=r"costs\.yaml: currency: EUR differs"):
        load_books(**_write(tmp_path, costs=costs))
