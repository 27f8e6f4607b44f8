"""Builders shared by the rating tests: books from YAML text, events from a few fields."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from metering.rating.books import Books, load_books
from schemas.event import UsageEvent

COSTS = """
currency: USD
versions:
  - id: cost-1
    effective_from: 2020-01-01T00:00:00Z
    costs:
      - {meter: llm.tokens, model: gpt-4o, per: million, rates: {input_tokens: 2, output_tokens: 8}}
"""


@pytest.fixture(scope="session")
def make_books(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Books]:
    """Books from the text of the three YAML files, through the real loader."""

    def make(prices: str, contracts: str, costs: str = COSTS) -> Books:
        folder = tmp_path_factory.mktemp("books")
        for name, text in (("prices", prices), ("contracts", contracts), ("costs", costs)):
            (folder / f"{name}.yaml").write_text(text)
        return load_books(folder / "prices.yaml", folder / "contracts.yaml", folder / "costs.yaml")

    return make


@pytest.fixture(scope="session")
def make_event() -> Callable[..., UsageEvent]:
    def make(
        event_id: str,
        at: datetime,
        customer: str,
        quantities: dict[str, int],
        model: str = "gpt-4o",
        meter: str = "llm.tokens",
        mode: str = "realtime",
    ) -> UsageEvent:
        return UsageEvent(event_id, at, customer, meter, model, "test", mode, quantities)

    return make


@pytest.fixture(scope="session")
def shipped() -> Books:
    """The example catalogue as shipped."""
    return load_books()
