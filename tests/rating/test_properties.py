"""Properties that must hold for any events, checked with hypothesis."""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.rating.books import Books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatedLine
from metering.rating.money import CONTEXT, q18
from metering.rating.state import RatingState
from schemas.event import UsageEvent

D = Decimal
START = datetime(2026, 5, 1, tzinfo=UTC)

PRICES = """
currency: USD
tiers:
  default: {}
  credits: {credit_value: 0.01}
versions:
  - id: p1
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o, per: million,
         rates: {input_tokens: 2.50, output_tokens: 10.00, cached_input_tokens: 1.25}}
      - meter: llm.tokens
        model: tiered-7b
        per: thousand
        graduated:
          - {up_to: 100000, rates: {input_tokens: 0.02, output_tokens: 0.05}}
          - {up_to: 400000, rates: {input_tokens: 0.015, output_tokens: 0.04}}
          - {rates: {input_tokens: 0.01, output_tokens: 0.03}}
      - meter: llm.tokens
        model: volume-7b
        per: thousand
        volume:
          - {up_to: 100000, rates: {input_tokens: 0.02}}
          - {rates: {input_tokens: 0.01}}
      - {meter: gpu.time, model: h100, per: hour, rates: {gpu_ms: 4.50}}
      - {meter: image.generation, model: sdxl, rates: {images: 0.04}}
      - {meter: image.generation, model: sdxl, customer_tier: credits, rates: {images: 5}}
  - id: p2
    effective_from: 2026-05-20T00:00:00Z
    prices:
      - {meter: gpu.time, model: h100, per: hour, rates: {gpu_ms: 3.90}}
"""

CONTRACTS = """
customers:
  - id: list
  - id: hybrid
    contract:
      id: H
      billing: {anchor: 2025-01-15}
      terms:
        subscription:
          base_fee: 20
          included: [{meter: llm.tokens, quantity: 300000}]
  - id: discounted
    contract:
      id: D
      terms:
        discount_percent: 15
        rates:
          - {meter: llm.tokens, model: gpt-4o, per: million,
             rates: {input_tokens: 2, output_tokens: 9}}
      amendments:
        - {id: D2, effective_from: 2026-05-18T12:00:00Z, discount_percent: 20}
  - id: prepaid
    contract:
      id: P
      terms: {customer_tier: credits, credits: {low_balance: 100}}
  - id: capped
    contract:
      id: C
      terms: {budget: {limit: 10, soft_thresholds: [50, 80]}}
"""

COSTS = """
currency: USD
versions:
  - id: c1
    effective_from: 2020-01-01T00:00:00Z
    costs:
      - {meter: llm.tokens, model: gpt-4o, per: million, rates: {input_tokens: 2, output_tokens: 8}}
      - {meter: llm.tokens, model: tiered-7b, per: million, rates: {input_tokens: 1}}
      - {meter: gpu.time, model: h100, per: hour, rates: {gpu_ms: 2.85}}
  - id: c2
    effective_from: 2026-05-10T00:00:00Z
    costs:
      - {meter: gpu.time, model: h100, per: hour, rates: {gpu_ms: 2.10}}
"""

CUSTOMERS = ("list", "hybrid", "discounted", "prepaid", "capped")
KINDS = {
    "gpt-4o": ("llm.tokens", ("input_tokens", "output_tokens", "cached_input_tokens")),
    "tiered-7b": ("llm.tokens", ("input_tokens", "output_tokens")),
    "h100": ("gpu.time", ("gpu_ms",)),
    "sdxl": ("image.generation", ("images",)),
}


@pytest.fixture(scope="module")
def books(make_books: Callable[..., Books]) -> Books:
    return make_books(PRICES, CONTRACTS, COSTS)


@st.composite
def events(draw: st.DrawFn, models: tuple[str, ...] = tuple(KINDS)) -> list[UsageEvent]:
    out = []
    for i in range(draw(st.integers(1, 30))):
        model = draw(st.sampled_from(models))
        meter, dimensions = KINDS.get(model, ("llm.tokens", ("input_tokens",)))
        chosen = draw(st.lists(st.sampled_from(dimensions), min_size=1, unique=True))
        quantities = {d: draw(st.integers(0, 300_000)) for d in chosen}
        at = START + timedelta(minutes=draw(st.integers(0, 60 * 24 * 50)))
        customer = draw(st.sampled_from(CUSTOMERS))
        out.append(UsageEvent(f"e{i}", at, customer, meter, model, "p", "realtime", quantities))
    return out


def _totals(lines: list[RatedLine]) -> dict[tuple[str, datetime], tuple[Decimal, ...]]:
    sums: dict[tuple[str, datetime], list[Decimal]] = defaultdict(lambda: [D(0)] * 3)
    for line in lines:
        row = sums[line.customer_id, line.period_start]
        row[0] += line.amount
        row[1] += line.discount
        row[2] += line.cost
    return {key: tuple(row) for key, row in sums.items()}


@settings(max_examples=150, deadline=None)
@given(events())
def test_amounts_are_never_negative(books: Books, batch: list[UsageEvent]) -> None:
    engine = RatingEngine(books)
    state = RatingState()
    engine.apply_grant(state, CreditGrant("g", "prepaid", D(300), START))
    for line in engine.rate_batch(state, batch).lines:
        assert line.amount >= 0 and line.cost >= 0
        assert 0 <= line.discount <= line.amount
        assert line.credits_applied >= 0 and line.billable_amount >= 0
        assert line.discount + line.credits_applied + line.billable_amount == line.amount
        assert line.margin == line.amount - line.discount - line.cost
        assert all(value >= 0 for value in line.amounts.values())
        assert sum(line.amounts.values()) == line.amount


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_period_totals_do_not_depend_on_arrival_order(books: Books, data: st.DataObject) -> None:
    batch = data.draw(events((*KINDS, "volume-7b")))
    shuffled = data.draw(st.permutations(batch))
    first = RatingEngine(books).rate_batch(RatingState(), batch).lines
    second = RatingEngine(books).rate_batch(RatingState(), shuffled).lines
    assert _totals(first) == _totals(second)


def _graduated(quantity: int, bounds: list[int], rates: list[Decimal], per: int) -> Decimal:
    """The tier formula, written independently of the engine."""
    total, lower = D(0), 0
    for upper, rate in zip([*bounds, None], rates, strict=True):
        top = quantity if upper is None else min(quantity, upper)
        if top > lower:
            total += (top - lower) * rate
        lower = upper or lower
    return q18(CONTEXT.divide(total, per))


@settings(max_examples=60, deadline=None)
@given(
    bounds=st.lists(st.integers(1, 10**7), min_size=1, max_size=4, unique=True).map(sorted),
    rates=st.lists(st.decimals("0", "50", places=4), min_size=5, max_size=5),
    per=st.sampled_from([1, 1000, 1_000_000, 3_600_000]),
    sizes=st.lists(st.integers(0, 4 * 10**6), min_size=1, max_size=25),
    data=st.data(),
)
def test_graduated_total_is_the_tier_formula_on_the_period_total(
    make_books: Callable[..., Books],
    bounds: list[int],
    rates: list[Decimal],
    per: int,
    sizes: list[int],
    data: st.DataObject,
) -> None:
    rates = rates[: len(bounds) + 1]
    bands = [f"{{up_to: {b}, rates: {{gpu_ms: {r}}}}}" for b, r in zip(bounds, rates, strict=False)]
    bands.append(f"{{rates: {{gpu_ms: {rates[-1]}}}}}")
    prices = f"""
currency: USD
versions:
  - id: v
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - {{meter: gpu.time, model: m, per: {per}, graduated: [{", ".join(bands)}]}}
"""
    engine = RatingEngine(make_books(prices, "customers: [{id: c}]"))
    order = data.draw(st.permutations(range(len(sizes))))
    batch = [
        UsageEvent(
            f"e{i}",
            START + timedelta(hours=i),
            "c",
            "gpu.time",
            "m",
            "p",
            "batch",
            {"gpu_ms": sizes[i]},
        )
        for i in order
    ]
    lines = engine.rate_batch(RatingState(), batch).lines
    assert all(line.amount >= 0 for line in lines)
    assert sum(line.amount for line in lines) == _graduated(sum(sizes), bounds, rates, per)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_volume_total_is_the_whole_quantity_at_the_band_reached(
    books: Books, data: st.DataObject
) -> None:
    """Volume lines may be negative (a crossing re-prices the period) but always add up."""
    sizes = data.draw(st.lists(st.integers(0, 60_000), min_size=1, max_size=12))
    at = START + timedelta(days=1)
    batch = [
        UsageEvent(
            f"e{i}", at, "list", "llm.tokens", "volume-7b", "p", "realtime", {"input_tokens": n}
        )
        for i, n in enumerate(data.draw(st.permutations(sizes)))
    ]
    lines = RatingEngine(books).rate_batch(RatingState(), batch).lines
    total = sum(sizes)
    rate = D("0.02") if total <= 100_000 else D("0.01")
    assert sum(line.amount for line in lines) == q18(total * rate / 1000)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**8), min_size=1, max_size=20))
def test_gpu_time_at_an_hourly_rate_adds_up_exactly(books: Books, sizes: list[int]) -> None:
    """ms x 4.50/3,600,000 is not a terminating decimal: the period total is still exact."""
    at = START + timedelta(days=2)
    batch = [
        UsageEvent(f"e{i}", at, "list", "gpu.time", "h100", "p", "realtime", {"gpu_ms": n})
        for i, n in enumerate(sizes)
    ]
    lines = RatingEngine(books).rate_batch(RatingState(), batch).lines
    assert sum(line.amount for line in lines) == q18(
        CONTEXT.divide(sum(sizes) * D("4.5"), 3_600_000)
    )
    assert all(line.amount >= 0 for line in lines)


@settings(max_examples=100, deadline=None)
@given(events(), st.integers(0, 30))
def test_identical_input_gives_identical_output_even_across_a_snapshot(
    books: Books, batch: list[UsageEvent], cut: int
) -> None:
    whole = RatingEngine(books).rate_batch(RatingState(), batch)
    engine, state = RatingEngine(books), RatingState()
    before = engine.rate_batch(state, batch[:cut])
    restored = pickle.loads(pickle.dumps(state))
    after = RatingEngine(books).rate_batch(restored, batch[cut:])
    assert [line.to_row() for line in whole.lines] == [
        line.to_row() for line in before.lines + after.lines
    ]
    assert whole.alerts == before.alerts + after.alerts
    again = RatingEngine(books).rate_batch(RatingState(), batch)
    assert [line.to_row() for line in again.lines] == [line.to_row() for line in whole.lines]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_credits_applied_never_exceed_credits_granted(books: Books, data: st.DataObject) -> None:
    batch = data.draw(events(("sdxl", "gpt-4o")))
    engine, state = RatingEngine(books), RatingState()
    granted: dict[str, Decimal] = defaultdict(D)
    applied: dict[str, Decimal] = defaultdict(D)
    for i, event in enumerate(batch):
        if data.draw(st.booleans()):
            customer = data.draw(st.sampled_from(("prepaid", "list")))
            credits = data.draw(st.decimals("0.01", "2000", places=2))
            expires = START + timedelta(days=data.draw(st.integers(1, 60)))
            engine.apply_grant(state, CreditGrant(f"g{i}", customer, credits, START, expires))
            granted[customer] += credits * (D("0.01") if customer == "prepaid" else 1)
        for line in engine.rate_batch(state, [event]).lines:
            assert line.credits_applied <= line.amount - line.discount
            applied[line.customer_id] += line.credits_applied
    for customer, total in applied.items():
        assert total <= granted[customer]
    for customer in state.customers.values():
        assert all(grant.remaining >= 0 for grant in customer.grants.values())


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_every_snapshot_of_a_state_in_use_restores_equal_to_it(
    books: Books, data: st.DataObject
) -> None:
    """A snapshot re-pickles only the customers reached since the one before; whatever
    the engine did in between (rating, grants, lapses, forgetting closed periods), the
    next snapshot restores exactly the state in use."""
    engine, state = RatingEngine(books), RatingState()
    batch = data.draw(events(("sdxl", "gpt-4o", "h100")))
    for i, event in enumerate(batch):
        step = data.draw(st.sampled_from(("rate", "grant", "expire", "forget")))
        if step == "grant":
            expires = START + timedelta(days=data.draw(st.integers(1, 60)))
            grant = CreditGrant(
                f"g{i}", data.draw(st.sampled_from(CUSTOMERS)), D(50), START, expires
            )
            engine.apply_grant(state, grant)
        elif step == "expire":
            engine.expire(state, event.timestamp)
        elif step == "forget":
            state.forget_before(event.timestamp - timedelta(days=31))
        engine.rate_batch(state, [event])
        if data.draw(st.booleans()):
            assert pickle.loads(pickle.dumps(state)) == state
    assert pickle.loads(pickle.dumps(state)) == state
