"""Engine behaviour beyond the worked examples: rejections, periods, versions, costs,
budgets, credits, state."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.rating.alerts import AlertKind
from metering.rating.books import Books
from metering.rating.credits import CreditGrant, parse_grant
from metering.rating.engine import RatingEngine
from metering.rating.state import RatingState
from schemas.event import Rejection, RejectReason, UsageEvent

D = Decimal
NOV = datetime(2026, 11, 1, tzinfo=UTC)

PRICES = """
currency: USD
versions:
  - id: p1
    effective_from: 2026-01-01T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o, mode: realtime, per: million,
         rates: {input_tokens: 2.50, output_tokens: 10.00}}
      - {meter: llm.tokens, model: o-reasoner, per: million,
         rates: {input_tokens: 1, output_tokens: 4, reasoning_tokens: 3}}
      - meter: llm.tokens
        model: volume-7b
        per: thousand
        volume:
          - {up_to: 100000, rates: {input_tokens: 0.02}}
          - {rates: {input_tokens: 0.01}}
      - {meter: agent.step, model: agent-runtime, rates: {steps: 0.01}}
  - id: p2
    effective_from: 2026-11-16T00:00:00Z
    prices:
      - {meter: llm.tokens, model: gpt-4o, mode: realtime, per: million,
         rates: {input_tokens: 2.00, output_tokens: 8.00}}
"""

CONTRACTS = """
customers:
  - id: list
  - id: mid-month
    contract: {id: M, billing: {anchor: 2025-01-15}}
  - id: quarterly
    contract: {id: Q, billing: {period: quarterly, anchor: 2025-02-01}}
  - id: capped
    contract:
      id: B
      terms: {budget: {limit: 10, soft_thresholds: [50, 80], hard_cap: true}}
  - id: prepaid
    contract:
      id: P
      terms: {credits: {thresholds: [50], low_balance: 2}}
"""

COSTS = """
currency: USD
versions:
  - id: c1
    effective_from: 2026-01-01T00:00:00Z
    costs:
      - {meter: llm.tokens, model: gpt-4o, per: million,
         rates: {input_tokens: 2, output_tokens: 8}}
      - {meter: llm.tokens, model: o-reasoner, per: million,
         rates: {input_tokens: 1, output_tokens: 2}}
  - id: c2
    effective_from: 2026-11-10T00:00:00Z
    costs:
      - {meter: llm.tokens, model: gpt-4o, per: million,
         rates: {input_tokens: 1.5, output_tokens: 6}}
"""


@pytest.fixture(scope="module")
def engine(make_books: Callable[..., Books]) -> RatingEngine:
    return RatingEngine(make_books(PRICES, CONTRACTS, COSTS))


def ev(
    event_id: str,
    at: datetime,
    customer: str = "list",
    model: str = "gpt-4o",
    mode: str = "realtime",
    **quantities: int,
) -> UsageEvent:
    meter = "agent.step" if model == "agent-runtime" else "llm.tokens"
    return UsageEvent(
        event_id, at, customer, meter, model, "p", mode, quantities or {"input_tokens": 1}
    )


def test_unknown_customers_and_unpriced_models_are_rejected(engine: RatingEngine) -> None:
    result = engine.rate_batch(
        RatingState(),
        [
            ev("a", NOV, customer="stranger"),
            ev("b", NOV, model="mystery-model-7b"),
            ev("c", NOV, mode="batch"),
            ev("d", datetime(2025, 6, 1, tzinfo=UTC)),
            ev("e", NOV),
        ],
    )
    reasons = [(r.reason, r.event_id) for r in result.rejections]
    assert reasons == [
        (RejectReason.UNKNOWN_CUSTOMER, "a"),
        (RejectReason.UNKNOWN_MODEL, "b"),
        (RejectReason.UNKNOWN_MODEL, "c"),
        (RejectReason.UNKNOWN_MODEL, "d"),
    ]
    assert "'mystery-model-7b'" in result.rejections[1].detail
    assert [line.event_id for line in result.lines] == ["e"]


@pytest.mark.parametrize(
    ("customer", "at", "period_start"),
    [
        ("list", datetime(2026, 11, 30, 23, 59, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
        (
            "mid-month",
            datetime(2026, 11, 14, 23, 59, tzinfo=UTC),
            datetime(2026, 10, 15, tzinfo=UTC),
        ),
        ("mid-month", datetime(2026, 11, 15, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)),
        ("quarterly", datetime(2026, 4, 30, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        ("quarterly", datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)),
    ],
)
def test_billing_periods_follow_the_contract_anchor(
    engine: RatingEngine, customer: str, at: datetime, period_start: datetime
) -> None:
    [line] = engine.rate_batch(RatingState(), [ev("a", at, customer=customer)]).lines
    assert line.period_start == period_start


def test_a_late_event_lands_in_its_own_period(engine: RatingEngine) -> None:
    state = RatingState()
    engine.rate_batch(
        state, [ev("nov", NOV + timedelta(days=3), model="volume-7b", input_tokens=90_000)]
    )
    [late] = engine.rate_batch(
        state, [ev("oct", NOV - timedelta(days=3), model="volume-7b", input_tokens=20_000)]
    ).lines
    assert late.period_start == datetime(2026, 10, 1, tzinfo=UTC)
    assert late.amount == D("0.4")


def test_a_price_change_mid_period_rates_each_event_on_the_version_in_force(
    engine: RatingEngine,
) -> None:
    before, after = engine.rate_batch(
        RatingState(),
        [
            ev("a", datetime(2026, 11, 15, 23, tzinfo=UTC), input_tokens=10**6),
            ev("b", datetime(2026, 11, 16, 1, tzinfo=UTC), input_tokens=10**6),
        ],
    ).lines
    assert (before.amount, before.price_version) == (D("2.5"), "p1")
    assert (after.amount, after.price_version) == (D(2), "p2")


def test_costs_are_effective_dated_and_margin_is_revenue_minus_cost(engine: RatingEngine) -> None:
    early, late, unknown = engine.rate_batch(
        RatingState(),
        [
            ev("a", NOV + timedelta(days=2), input_tokens=10**6),
            ev("b", NOV + timedelta(days=12), input_tokens=10**6),
            ev("c", NOV, model="agent-runtime", steps=10),
        ],
    ).lines
    assert (early.cost, early.margin, early.cost_version) == (D(2), D("0.5"), "c1")
    assert (late.cost, late.margin, late.cost_version) == (D("1.5"), D(1), "c2")
    assert (unknown.cost, unknown.margin, unknown.cost_version) == (D(0), D("0.1"), None)


def test_reasoning_tokens_take_their_own_rate_or_the_output_rate(engine: RatingEngine) -> None:
    own, fallback = engine.rate_batch(
        RatingState(),
        [
            ev("a", NOV, model="o-reasoner", reasoning_tokens=10**6),
            ev("b", NOV, output_tokens=0, reasoning_tokens=10**6),
        ],
    ).lines
    assert own.amounts == {"reasoning_tokens": D(3)}
    assert own.cost == D(2)
    assert fallback.amounts == {"output_tokens": D(0), "reasoning_tokens": D(10)}


def test_a_volume_threshold_crossing_re_prices_the_period(engine: RatingEngine) -> None:
    """60k at 0.02/1k = 1.20; at 110k the whole period is at 0.01/1k = 1.10, so the
    crossing line is an adjustment of -0.10 and the period total stays exact."""
    lines = engine.rate_batch(
        RatingState(),
        [
            ev("a", NOV, model="volume-7b", input_tokens=60_000),
            ev("b", NOV, model="volume-7b", input_tokens=50_000),
        ],
    ).lines
    assert [line.amount for line in lines] == [D("1.2"), D("-0.1")]
    assert lines[1].tiers == ("input_tokens volume 100000+: all 110000 @ 0.01/1000",)


def test_budget_alerts_fire_once_per_threshold_and_period(engine: RatingEngine) -> None:
    state = RatingState()
    four_dollars = {"input_tokens": 1_600_000}
    batch = [
        ev(f"n{i}", NOV + timedelta(days=i), customer="capped", **four_dollars) for i in range(4)
    ]
    batch.append(ev("dec", datetime(2026, 12, 2, tzinfo=UTC), customer="capped", **four_dollars))
    alerts = engine.rate_batch(state, batch).alerts
    fired = [(a.kind, a.threshold, a.at.day, a.period_start.month) for a in alerts]
    assert fired == [
        (AlertKind.BUDGET_SOFT, D(50), 2, 11),
        (AlertKind.BUDGET_SOFT, D(80), 2, 11),
        (AlertKind.BUDGET_HARD_CAP, D(10), 3, 11),
    ]
    assert alerts[2].value == D(12)
    again = engine.rate_batch(RatingState(), batch).alerts
    assert [a.alert_id for a in again] == [a.alert_id for a in alerts]
    assert len({a.alert_id for a in alerts}) == 3


def test_credits_draw_from_grants_in_force_soonest_expiry_first(engine: RatingEngine) -> None:
    state = RatingState()
    later = CreditGrant("later", "prepaid", D(5), NOV, NOV + timedelta(days=60))
    sooner = CreditGrant("sooner", "prepaid", D(5), NOV, NOV + timedelta(days=20))
    future = CreditGrant("future", "prepaid", D(5), NOV + timedelta(days=10))
    for grant in (later, sooner, future, sooner):
        assert engine.apply_grant(state, grant) is None
    [line] = engine.rate_batch(
        state, [ev("a", NOV + timedelta(days=1), customer="prepaid", input_tokens=2_800_000)]
    ).lines
    assert (line.amount, line.credits_applied, line.billable_amount) == (D(7), D(7), D(0))
    grants = state.customers["prepaid"].grants
    assert [grants[g].remaining for g in ("sooner", "later", "future")] == [D(0), D(3), D(5)]


def test_low_balance_alert_re_arms_after_a_top_up(engine: RatingEngine) -> None:
    state = RatingState()
    engine.apply_grant(state, CreditGrant("g1", "prepaid", D(3), NOV))
    use = {"input_tokens": 800_000}
    first = engine.rate_batch(state, [ev("a", NOV, customer="prepaid", **use)]).alerts
    engine.apply_grant(state, CreditGrant("g2", "prepaid", D(10), NOV))
    quiet = engine.rate_batch(state, [ev("b", NOV, customer="prepaid", **use)]).alerts
    big = {"input_tokens": 3_000_000}
    second = engine.rate_batch(state, [ev("c", NOV, customer="prepaid", **big)]).alerts
    lows = [a for a in first + quiet + second if a.kind is AlertKind.CREDIT_LOW]
    assert [(a.value, a.at) for a in lows] == [(D(1), NOV), (D("1.5"), NOV)]
    assert lows[0].alert_id != lows[1].alert_id


def test_grants_for_unknown_customers_are_rejected(engine: RatingEngine) -> None:
    rejected = engine.apply_grant(RatingState(), CreditGrant("g", "stranger", D(1), NOV))
    assert isinstance(rejected, Rejection) and rejected.reason is RejectReason.UNKNOWN_CUSTOMER


def test_parse_grant_reads_the_json_form() -> None:
    record = json.loads(
        '{"grant_id": "g", "customer_id": "c", "credits": 500.50,'
        ' "effective_at": "2026-11-01T00:00:00Z", "expires_at": "2026-12-01T00:00:00+00:00"}',
        parse_float=D,
    )
    assert parse_grant(record) == CreditGrant(
        "g", "c", D("500.50"), NOV, datetime(2026, 12, 1, tzinfo=UTC)
    )
    bad = [
        {**record, "credits": -1},
        {**record, "credits": "lots"},
        {**record, "effective_at": "2026-11-01T00:00:00"},
        {**record, "expires_at": "2026-10-01T00:00:00Z"},
        {key: value for key, value in record.items() if key != "customer_id"},
    ]
    assert all(isinstance(parse_grant(r), Rejection) for r in bad)


def test_state_survives_pickling_with_every_kind_of_entry(
    engine: RatingEngine, shipped: Books
) -> None:
    full = RatingEngine(shipped)
    state = RatingState()
    full.apply_grant(state, CreditGrant("g", "cust-0015", D(100), NOV))
    at = NOV + timedelta(days=1)
    events = [
        UsageEvent(
            f"e{i}", at, c, "llm.tokens", "gpt-4o", "p", "realtime", {"input_tokens": 90_000}
        )
        for i, c in enumerate(("cust-0009", "cust-0013", "cust-0015", "cust-0007", "cust-0001"))
    ]
    full.rate_batch(state, events)
    restored = pickle.loads(pickle.dumps(state))
    assert restored == state
    assert full.rate_batch(restored, events) == full.rate_batch(state, events)


def test_forget_before_drops_closed_periods_only(engine: RatingEngine) -> None:
    state = RatingState()
    engine.rate_batch(
        state,
        [ev("oct", NOV - timedelta(days=1), customer="capped"), ev("nov", NOV, customer="capped")],
    )
    state.forget_before(NOV)
    capped = state.customers["capped"]
    assert {key[0] for key in capped.quantities} == {1_793_491_200_000_000}
    assert list(capped.budgets) == [1_793_491_200_000_000]


def test_a_rated_line_as_a_row_has_money_as_decimal_strings(engine: RatingEngine) -> None:
    [line] = engine.rate_batch(RatingState(), [ev("a", NOV, input_tokens=333_333)]).lines
    row = json.loads(line.to_json())
    assert row["amount"] == "0.8333325" and row["billable_amount"] == "0.8333325"
    assert row["cost"] == "0.666666" and row["margin"] == "0.1666665"
    assert row["unit_prices"] == {"input_tokens": "0.0000025"}
    assert row["timestamp"] == "2026-11-01T00:00:00Z" and row["currency"] == "USD"
    assert (row["price_version"], row["contract_version"], row["cost_version"]) == (
        "p1",
        None,
        "c1",
    )
