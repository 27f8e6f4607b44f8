"""Contract versions that price alike share their price resolutions, and rate exactly as
if each customer were rated alone: the same lines, alerts and state, with every contract
version's own id on its lines and in its tallies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from metering.rating.books import Books
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatingResult
from metering.rating.state import RatingState
from schemas.event import UsageEvent

JUNE = datetime(2026, 6, 1, tzinfo=UTC)

PRICES = """
currency: USD
tiers:
  default: {}
  gold: {}
versions:
  - id: list-1
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o, per: million,
         rates: {input_tokens: 2.50, output_tokens: 10}}
      - {meter: llm.tokens, model: gpt-4o-mini, per: million,
         rates: {input_tokens: 0.15, output_tokens: 0.60}}
      - {meter: llm.tokens, model: gpt-4o-mini, per: million, customer_tier: gold,
         rates: {input_tokens: 0.10, output_tokens: 0.40}}
  - id: list-2
    effective_from: 2026-06-12T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o-mini, per: million,
         rates: {input_tokens: 0.20, output_tokens: 0.80}}
"""

GROWTH_RATE = """{meter: llm.tokens, model: gpt-4o, per: million,
                rates: {input_tokens: 2.00, output_tokens: 8.00}}"""

CONTRACTS = f"""
plans:
  growth:
    rates:
      - {GROWTH_RATE}
    subscription:
      included: [{{meter: llm.tokens, quantity: 3000000}}]
customers:
  - {{id: list-a}}
  - {{id: list-b}}
  - {{id: g1, contract: {{id: G-1, terms: {{plan: growth}}}}}}
  - {{id: g2, contract: {{id: G-2, terms: {{plan: growth}}}}}}
  - id: g3
    contract:
      id: G-3
      terms: {{plan: growth}}
      amendments:
        - id: G-3-A1
          effective_from: 2026-06-10T00:00:00Z
          subscription: {{included: [{{meter: llm.tokens, quantity: 500000}}]}}
  - id: g4
    contract:
      id: G-4
      terms: {{plan: growth}}
      amendments:
        - {{id: G-4-A1, effective_from: 2026-06-10T00:00:00Z, budget: {{limit: 5}}}}
  - id: anchored
    contract:
      id: G-5
      billing: {{anchor: 2025-01-15}}
      terms: {{plan: growth}}
  - id: own-rates
    contract:
      id: OWN-1
      terms:
        rates:
          - {GROWTH_RATE}
  - {{id: gold-a, contract: {{id: GOLD-A, terms: {{customer_tier: gold}}}}}}
  - {{id: gold-b, contract: {{id: GOLD-B, terms: {{customer_tier: gold, discount_percent: 10}}}}}}
"""

CUSTOMERS = (
    "list-a",
    "list-b",
    "g1",
    "g2",
    "g3",
    "g4",
    "anchored",
    "own-rates",
    "gold-a",
    "gold-b",
)


def _events(make_event: Callable[..., UsageEvent]) -> list[UsageEvent]:
    """Every customer, both models and modes, every 5 hours through June."""
    out = []
    for i in range(144):
        at = JUNE + timedelta(hours=5 * i)
        model = ("gpt-4o", "gpt-4o-mini")[i % 2]
        mode = ("realtime", "batch")[i // 2 % 2]
        for customer in CUSTOMERS:
            quantities = {"input_tokens": 40_000 + 1_000 * i, "output_tokens": 9_000 + 7 * i}
            event_id = f"{customer}-{i}"
            out.append(make_event(event_id, at, customer, quantities, model=model, mode=mode))
    return out


def _of(result: RatingResult, customer: str) -> tuple[list[object], list[object]]:
    return (
        [line for line in result.lines if line.customer_id == customer],
        [alert for alert in result.alerts if alert.customer_id == customer],
    )


def test_customers_rated_together_rate_as_each_alone(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    books = make_books(PRICES, CONTRACTS)
    events = _events(make_event)
    together, state = RatingEngine(books), RatingState()
    result = RatingResult()
    for i in range(0, len(events), 100):
        batch = together.rate_batch(state, events[i : i + 100])
        result.lines += batch.lines
        result.alerts += batch.alerts
        assert batch.rejections == []
    assert len(result.lines) == len(events)
    for customer in CUSTOMERS:
        alone_state = RatingState()
        alone = RatingEngine(books).rate_batch(
            alone_state, [e for e in events if e.customer_id == customer]
        )
        assert _of(result, customer) == (alone.lines, alone.alerts), customer
        assert state.customers[customer] == alone_state.customers[customer], customer


def test_each_contract_version_keeps_its_own_names(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """g1 and g2 price alike on the plan's rate, and g3 after its amendment has its own
    allowance: each line traces its own contract version and each tally is its own."""
    books = make_books(PRICES, CONTRACTS)
    engine, state = RatingEngine(books), RatingState()
    late = JUNE + timedelta(days=15)
    events = [
        make_event(f"{c}-{n}", at, c, {"input_tokens": 1_000_000})
        for n, at in enumerate((JUNE, late))
        for c in ("g1", "g2", "g3", "own-rates")
    ]
    lines = engine.rate_batch(state, events).lines
    assert [(line.customer_id, line.contract_version, line.price_version) for line in lines] == [
        ("g1", "G-1", "contract:G-1"),
        ("g2", "G-2", "contract:G-2"),
        ("g3", "G-3", "contract:G-3"),
        ("own-rates", "OWN-1", "contract:OWN-1"),
        ("g1", "G-1", "contract:G-1"),
        ("g2", "G-2", "contract:G-2"),
        ("g3", "G-3-A1", "contract:G-3-A1"),
        ("own-rates", "OWN-1", "contract:OWN-1"),
    ]
    own = {"g1": {"G-1"}, "g2": {"G-2"}, "g3": {"G-3", "G-3-A1"}, "own-rates": {"OWN-1"}}
    for customer, versions in own.items():
        tallies = state.customers[customer]
        rated = (*tallies.usage, *tallies.quantities)
        assert {rid.split("|")[0] for _, rid, _ in rated} == versions, customer
        pooled = set() if customer == "own-rates" else versions
        assert {version for _, version, _ in tallies.pools} == pooled, customer
    # Alike on the 1st, g1 and g3 differ after G-3-A1: g1 has used 2M of its 3M, g3 1M
    # of the 500k prorated to the 21 days of its amendment.
    g1_late, g3_late = lines[4], lines[6]
    assert g1_late.amount == 0
    assert g3_late.amount > 0
