"""The open questions of rating, decided, each with a worked example by hand.

Written down in the price-book and contracts headers and the README too:
- a graduated price without `mode` tiers realtime and batch usage apart;
- reasoning tokens billed at the output rate keep their own running total in its bands;
- base fees do not count toward a budget (usage spend only);
- a lapse that takes a credit balance under its low-balance line alerts at the expiry
  (see `test_worked_examples`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from metering.rating.books import Books
from metering.rating.engine import RatingEngine
from metering.rating.state import RatingState
from schemas.event import UsageEvent

D = Decimal
JUNE = datetime(2026, 6, 1, tzinfo=UTC)

PRICES = """
currency: USD
tiers:
  default: {}
versions:
  - id: list-1
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - meter: llm.tokens
        model: tiered-7b
        per: thousand
        graduated:
          - {up_to: 10000000, rates: {input_tokens: 0.02}}
          - {up_to: 50000000, rates: {input_tokens: 0.015}}
          - {rates: {input_tokens: 0.01}}
      - meter: llm.tokens
        model: thinker
        mode: realtime
        per: million
        graduated:
          - {up_to: 1000000, rates: {input_tokens: 1, output_tokens: 10}}
          - {rates: {input_tokens: 1, output_tokens: 5}}
      - {meter: agent.step, model: agent-runtime, rates: {steps: 0.10}}
"""

CONTRACTS = """
customers:
  - id: list
  - id: budgeted
    contract:
      id: B-1
      terms:
        subscription: {base_fee: 49}
        budget: {limit: 50, soft_thresholds: [50]}
"""


def lines_of(books: Books, events: list[UsageEvent]) -> list[Decimal]:
    result = RatingEngine(books).rate_batch(RatingState(), events)
    assert not result.rejections
    return [line.amount for line in result.lines]


def test_a_graduated_price_without_mode_tiers_realtime_and_batch_apart(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """Bands at 10M tokens: 0.02, then 0.015 per thousand. Realtime 8M: 160.00. Batch 4M
    counts from zero in its own bands: 80.00 (together it would cross: 70.00). Realtime
    4M more: 2M at 0.02 + 2M at 0.015 = 40 + 30 = 70.00. Period: 310.00."""
    books = make_books(PRICES, CONTRACTS)
    events = [
        make_event("r1", JUNE, "list", {"input_tokens": 8_000_000}, model="tiered-7b"),
        make_event(
            "b1", JUNE, "list", {"input_tokens": 4_000_000}, model="tiered-7b", mode="batch"
        ),
        make_event("r2", JUNE, "list", {"input_tokens": 4_000_000}, model="tiered-7b"),
    ]
    assert lines_of(books, events) == [D(160), D(80), D(70)]


def test_reasoning_tokens_at_the_output_rate_keep_their_own_running_total(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """Output bands: 10 per million up to 1M, then 5. One event with 800k output and 800k
    reasoning tokens: 8.00 + 8.00 = 16.00 (sharing the output count it would be 13.00).
    A second event of 400k reasoning tokens crosses its own band at 1M: 200k at 10 +
    200k at 5 = 3.00."""
    books = make_books(PRICES, CONTRACTS)
    think = {"model": "thinker"}
    events = [
        make_event(
            "t1", JUNE, "list", {"output_tokens": 800_000, "reasoning_tokens": 800_000}, **think
        ),
        make_event("t2", JUNE, "list", {"reasoning_tokens": 400_000}, **think),
    ]
    assert lines_of(books, events) == [D(16), D(3)]


def test_base_fees_do_not_count_toward_a_budget(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """Budget 50 with a soft alert at 50 % (25.00), base fee 49. 240 agent steps = 24.00:
    no alert, though 49 + 24 is over the limit; 10 steps more (25.00) alert at 50 %."""
    engine = RatingEngine(make_books(PRICES, CONTRACTS))
    state = RatingState()
    steps = {"model": "agent-runtime", "meter": "agent.step"}
    first = engine.rate_batch(state, [make_event("s1", JUNE, "budgeted", {"steps": 240}, **steps)])
    later = JUNE + timedelta(days=1)
    second = engine.rate_batch(state, [make_event("s2", later, "budgeted", {"steps": 10}, **steps)])
    assert first.alerts == []
    assert [(a.kind.value, a.threshold, a.value) for a in second.alerts] == [
        ("budget_soft", D(50), D(50))
    ]
    assert sum(f.amount for f in engine.period_fees("budgeted", JUNE)) == D(49)
