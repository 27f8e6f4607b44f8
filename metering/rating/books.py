"""The three catalogue files loaded together and checked against each other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from metering.rating.aggregation import MeterAggregation
from metering.rating.contracts import Contracts, ContractsSpec
from metering.rating.costbook import CostBook, CostBookSpec
from metering.rating.loading import CatalogueError, load_model
from metering.rating.pricebook import PriceBook, PriceBookSpec

CATALOGUE = Path(__file__).resolve().parent / "catalogue"
"""The shipped example catalogue: prices.yaml, contracts.yaml, costs.yaml."""


@dataclass(frozen=True, slots=True)
class Books:
    prices: PriceBook
    contracts: Contracts
    costs: CostBook
    meters: Mapping[str, MeterAggregation] = field(default_factory=dict)
    """Meters with a dimension not summed (`metering.rating.aggregation`); the live
    catalogue's meters only, the built-in ones are all summed."""

    @property
    def currency(self) -> str:
        return self.prices.currency


def load_books(
    prices: Path | str = CATALOGUE / "prices.yaml",
    contracts: Path | str = CATALOGUE / "contracts.yaml",
    costs: Path | str = CATALOGUE / "costs.yaml",
) -> Books:
    """Load and cross-check the books, or raise `CatalogueError` naming file, field and reason."""
    price_spec = load_model(prices, PriceBookSpec)
    contract_spec = load_model(contracts, ContractsSpec)
    cost_spec = load_model(costs, CostBookSpec)
    if cost_spec.currency != price_spec.currency:
        raise CatalogueError(
            costs,
            "currency",
            f"{cost_spec.currency} differs from the price book's {price_spec.currency}",
        )
    _check_tiers(contracts, contract_spec, set(price_spec.tiers))
    return Books(PriceBook(price_spec), Contracts(contract_spec), CostBook(cost_spec))


def _check_tiers(path: Path | str, spec: ContractsSpec, tiers: set[str]) -> None:
    named = [(f"plans.{name}", plan) for name, plan in spec.plans.items()]
    for i, customer in enumerate(spec.customers):
        if customer.contract is not None:
            where = f"customers[{i}].contract"
            named.append((f"{where}.terms", customer.contract.terms))
            named += [
                (f"{where}.amendments[{j}]", a) for j, a in enumerate(customer.contract.amendments)
            ]
    for where, terms in named:
        if terms.customer_tier is not None and terms.customer_tier not in tiers:
            raise CatalogueError(
                path,
                f"{where}.customer_tier",
                f"{terms.customer_tier!r} is not a price book tier ({sorted(tiers)})",
            )
