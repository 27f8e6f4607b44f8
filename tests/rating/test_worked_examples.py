"""The worked examples from the field, each amount checked to the cent by hand.

The hand calculation is in each test's docstring; the books are written here so the
examples do not move when someone edits the shipped catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from metering.rating.books import Books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.rating.money import to_cents
from metering.rating.state import RatingState
from schemas.event import UsageEvent

D = Decimal
JUNE = datetime(2026, 6, 1, tzinfo=UTC)

LIST_PRICES = """
currency: USD
tiers:
  default: {}
  credits: {credit_value: 0.01}
versions:
  - id: list-1
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o, mode: realtime, per: million,
         rates: {input_tokens: 2.50, output_tokens: 10.00, cached_input_tokens: 1.25}}
      - {meter: llm.tokens, model: claude-sonnet-4, per: million,
         rates: {input_tokens: 3.00, output_tokens: 15.00}}
      - {meter: agent.step, model: agent-runtime, rates: {steps: 0.01}}
      - meter: llm.tokens
        model: tiered-7b
        per: thousand
        graduated:
          - {up_to: 10000000, rates: {input_tokens: 0.02}}
          - {up_to: 50000000, rates: {input_tokens: 0.015}}
          - {rates: {input_tokens: 0.01}}
      - {meter: image.generation, model: sdxl, rates: {images: 0.04}}
      - {meter: image.generation, model: sdxl, customer_tier: credits, rates: {images: 5}}
"""

HYBRID = """
plans:
  starter-49:
    subscription:
      base_fee: 49
      included:
        - {meter: llm.tokens, quantity: 500000, dimensions: [input_tokens, output_tokens]}
    rates:
      - {meter: llm.tokens, model: "*", per: thousand,
         rates: {input_tokens: 0.015, output_tokens: 0.030}}
      - {meter: agent.step, model: "*", rates: {steps: 0.10}}
customers:
  - id: hybrid
    contract: {id: H-1, terms: {plan: starter-49}}
  - id: amended
    contract:
      id: A-1
      terms: {plan: starter-49}
      amendments:
        - id: A-1-overage
          effective_from: 2026-06-16T00:00:00Z
          rates:
            - {meter: llm.tokens, model: "*", per: thousand,
               rates: {input_tokens: 0.012, output_tokens: 0.024}}
  - id: list
  - id: tiered
  - id: enterprise
    contract:
      id: E-1
      terms:
        discount_percent: 15
        rates:
          - {meter: llm.tokens, model: claude-sonnet-4, per: million, rates: {input_tokens: 2.70}}
  - id: prepaid
    contract:
      id: P-1
      terms:
        customer_tier: credits
        credits: {thresholds: [50, 80, 100], low_balance: 200}
"""


def _day(day: int) -> datetime:
    return JUNE.replace(day=day)


def _invoice(engine: RatingEngine, lines: list[Decimal], customer: str) -> Decimal:
    fees = sum((f.amount for f in engine.period_fees(customer, JUNE)), D(0))
    return to_cents(sum(lines, D(0)) + fees)


def test_hybrid_49_plan_with_allowance_and_overage(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """49/month including 500,000 tokens; overage 0.015/1k prompt, 0.030/1k completion,
    0.10 per agent step. June: 400k prompt + 200k completion tokens and 12 steps.
    Tokens: 600k used, 100k over: 1/6 of (400k x 0.015/1k + 200k x 0.030/1k = 12.00) = 2.00.
    Steps: 12 x 0.10 = 1.20. Invoice: 49.00 + 2.00 + 1.20 = 52.20."""
    engine = RatingEngine(make_books(LIST_PRICES, HYBRID))
    events = [
        make_event("e1", _day(3), "hybrid", {"input_tokens": 300_000, "output_tokens": 100_000}),
        make_event(
            "e2",
            _day(9),
            "hybrid",
            {"input_tokens": 100_000, "output_tokens": 100_000},
            model="claude-sonnet-4",
        ),
        make_event("e3", _day(10), "hybrid", {"steps": 12}, "agent-runtime", "agent.step"),
    ]
    lines = engine.rate_batch(RatingState(), events).lines
    assert [line.amount for line in lines] == [D(0), D(2), D("1.2")]
    # the line's 2.00 is shared by its dimensions' gross amounts, 1.50 : 3.00
    assert lines[1].amounts == {
        "input_tokens": D("0.666666666666666666"),
        "output_tokens": D("1.333333333333333334"),
    }
    assert [f.amount for f in engine.period_fees("hybrid", JUNE)] == [D(49)]
    assert _invoice(engine, [line.billable_amount for line in lines], "hybrid") == D("52.20")

    reversed_lines = engine.rate_batch(RatingState(), events[::-1]).lines
    assert [line.amount for line in reversed_lines] == [D("1.2"), D(0), D(2)]


def test_hybrid_plan_within_allowance_pays_the_base_fee_only(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """450k tokens of a 500k allowance: no overage; invoice 49.00."""
    engine = RatingEngine(make_books(LIST_PRICES, HYBRID))
    event = make_event("e1", _day(3), "hybrid", {"input_tokens": 300_000, "output_tokens": 150_000})
    [line] = engine.rate_batch(RatingState(), [event]).lines
    assert line.billable_amount == 0
    assert line.tiers == ("llm.tokens included 500000: 450000 used in period, billable share 0",)
    assert _invoice(engine, [line.billable_amount], "hybrid") == D("49.00")


def test_graduated_tiers(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """0-10M at 0.02/1k, 10-50M at 0.015/1k, above 50M at 0.01/1k; 25M + 30M + 5M tokens.
    Period: 10M x 0.02/1k = 200 + 40M x 0.015/1k = 600 + 10M x 0.01/1k = 100 -> 900.00.
    Lines in arrival order: 25M -> 200 + 15M x 0.015/1k = 425.00; 30M -> 850 - 425 = 425.00;
    5M -> 900 - 850 = 50.00."""
    engine = RatingEngine(make_books(LIST_PRICES, HYBRID))
    sizes = [25_000_000, 30_000_000, 5_000_000]
    events = [
        make_event(f"e{i}", _day(i + 1), "tiered", {"input_tokens": n}, model="tiered-7b")
        for i, n in enumerate(sizes)
    ]
    lines = engine.rate_batch(RatingState(), events).lines
    assert [line.amount for line in lines] == [D(425), D(425), D(50)]
    assert lines[1].tiers == (
        "input_tokens 10000000-50000000: 25000000 @ 0.015/1000",
        "input_tokens 50000000+: 5000000 @ 0.01/1000",
    )
    assert lines[1].unit_prices == {"input_tokens": D("0.00001")}
    for order in ([2, 0, 1], [1, 2, 0]):
        shuffled = engine.rate_batch(RatingState(), [events[i] for i in order]).lines
        assert sum(line.amount for line in shuffled) == D(900)


def test_enterprise_discount_of_15_percent(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """15% off list; the custom claude rate is net. gpt-4o list: 3 x 333,333 input tokens
    at 2.50/M = 2.4999975, 1M output at 10/M = 10.00 -> 12.4999975 list, discount
    1.874999625, net 10.624997875. Claude 1M input at the custom 2.70/M, undiscounted.
    Invoice: 10.624997875 + 2.70 = 13.324997875 -> 13.32."""
    engine = RatingEngine(make_books(LIST_PRICES, HYBRID))
    events = [
        make_event(f"in{i}", _day(2 + i), "enterprise", {"input_tokens": 333_333}) for i in range(3)
    ]
    events.append(make_event("out", _day(6), "enterprise", {"output_tokens": 1_000_000}))
    events.append(
        make_event("claude", _day(7), "enterprise", {"input_tokens": 1_000_000}, "claude-sonnet-4")
    )
    lines = engine.rate_batch(RatingState(), events).lines
    assert sum(line.amount for line in lines[:4]) == D("12.4999975")
    assert sum(line.discount for line in lines) == D("1.874999625")
    assert lines[4].discount == 0 and lines[4].amount == D("2.7")
    assert lines[4].price_version == "contract:E-1"
    assert lines[0].price_version == "list-1" and lines[0].contract_version == "E-1"
    billable = [line.billable_amount for line in lines]
    assert sum(billable) == D("13.324997875")
    assert _invoice(engine, billable, "enterprise") == D("13.32")


def test_credit_grant_drawn_to_zero_then_overage_then_top_up(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """Credits tier: 1 credit = 0.01 USD, 1 image = 5 credits. Grant 500 credits (5.00).
    60 images = 300 credits: all from credits. 50 images = 250 credits: 200 from credits,
    the balance is then 0 and 50 credits (0.50) are billable overage. Top-up of 1000
    credits mid-period; 10 images = 50 credits: all from the top-up. Billable 0.50."""
    engine = RatingEngine(make_books(LIST_PRICES, HYBRID))
    state = RatingState()
    june_end = datetime(2026, 7, 1, tzinfo=UTC)
    engine.apply_grant(state, CreditGrant("g1", "prepaid", D(500), JUNE, june_end))
    sdxl = {"model": "sdxl", "meter": "image.generation"}
    first = engine.rate_batch(
        state,
        [
            make_event("e1", _day(2), "prepaid", {"images": 60}, **sdxl),
            make_event("e2", _day(5), "prepaid", {"images": 50}, **sdxl),
        ],
    )
    engine.apply_grant(state, CreditGrant("g2", "prepaid", D(1000), _day(15), june_end))
    second = engine.rate_batch(
        state, [make_event("e3", _day(16), "prepaid", {"images": 10}, **sdxl)]
    )
    lines = first.lines + second.lines
    assert [line.amount for line in lines] == [D(3), D("2.5"), D("0.5")]
    assert [line.credits_applied for line in lines] == [D(3), D(2), D("0.5")]
    assert [line.billable_amount for line in lines] == [D(0), D("0.5"), D(0)]
    assert _invoice(engine, [line.billable_amount for line in lines], "prepaid") == D("0.50")

    fired = [(a.kind.value, a.threshold, a.grant_id) for a in first.alerts]
    assert fired == [
        ("credit_threshold", D(50), "g1"),
        ("credit_threshold", D(80), "g1"),
        ("credit_threshold", D(100), "g1"),
        ("credit_low", D(200), None),
    ]
    assert second.alerts == []

    expired, low = engine.expire(state, june_end)
    # The top-up re-armed the low-balance alert; the expiry takes 950 credits to 0: it
    # alerts at the expiry, not at some later draw.
    assert [(a.kind.value, a.threshold, a.value, a.at) for a in low] == [
        ("credit_low", D(200), D(0), june_end)
    ]
    assert [(e.grant_id, e.credits, e.amount) for e in expired] == [
        ("g1", D(0), D(0)),
        ("g2", D(950), D("9.5")),
    ]
    assert expired[1].to_row()["credits"] == "950"
    assert first.alerts[0].to_row()["value"] == "60"
    assert engine.expire(state, june_end) == ([], [])


def test_amendment_changes_the_overage_rate_mid_period(
    make_books: Callable[..., Books], make_event: Callable[..., UsageEvent]
) -> None:
    """The 49 plan, amended from 16 June (June has 30 days: two halves) to 0.012/1k prompt
    and 0.024/1k completion. Each half includes 250k tokens and 24.50 of the base fee.
    5 June, 300k + 100k: 150k over of 400k; 150/400 x (4.50 + 3.00) = 2.8125, old terms.
    20 June, 200k + 100k: 50k over of 300k; 50/300 x (2.40 + 2.40) = 0.80, new terms.
    Invoice: 49.00 + 2.8125 + 0.80 = 52.6125 -> 52.61."""
    engine = RatingEngine(make_books(LIST_PRICES, HYBRID))
    events = [
        make_event(
            "late", _day(20), "amended", {"input_tokens": 200_000, "output_tokens": 100_000}
        ),
        make_event(
            "early", _day(5), "amended", {"input_tokens": 300_000, "output_tokens": 100_000}
        ),
    ]
    lines = engine.rate_batch(RatingState(), events).lines
    assert [(line.amount, line.contract_version) for line in lines] == [
        (D("0.8"), "A-1-overage"),
        (D("2.8125"), "A-1"),
    ]
    assert [line.price_version for line in lines] == ["contract:A-1-overage", "contract:A-1"]
    fees = engine.period_fees("amended", JUNE)
    assert [(f.contract_version, f.amount) for f in fees] == [
        ("A-1", D("24.5")),
        ("A-1-overage", D("24.5")),
    ]
    assert _invoice(engine, [line.billable_amount for line in lines], "amended") == D("52.61")


def test_shipped_catalogue_prices_gpt_4o(
    shipped: Books, make_event: Callable[..., UsageEvent]
) -> None:
    """gpt-4o on llm.tokens: 2.50/M input, 10.00/M output, 1.25/M cached in realtime,
    half in batch. One million of each: 13.75 realtime, 6.875 batch, at list price."""
    engine = RatingEngine(shipped)
    million = {"input_tokens": 10**6, "output_tokens": 10**6, "cached_input_tokens": 10**6}
    events = [
        make_event("rt", _day(2), "cust-0001", million),
        make_event("batch", _day(2), "cust-0002", million, mode="batch"),
    ]
    realtime, batch = engine.rate_batch(RatingState(), events).lines
    assert realtime.amounts == {
        "input_tokens": D("2.5"),
        "output_tokens": D(10),
        "cached_input_tokens": D("1.25"),
    }
    assert (realtime.amount, batch.amount) == (D("13.75"), D("6.875"))
    assert realtime.contract_version is None and realtime.billable_amount == D("13.75")
