"""Corrections (signed deltas naming the event they correct), and what is settled at
period close: commitments (minimum and maximum spend) and recurring meters (levels held
over time), worked by hand, through the engine and through `meterflow rate`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.rate import rate_file
from metering.rating.books import Books
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatedLine
from metering.rating.recurring import Reading
from metering.rating.state import RatingState
from metering.rating.totals import Totals
from schemas.event import Rejection, RejectReason, UsageEvent, to_micros
from schemas.validation import TimeBounds, validate

D = Decimal
JUNE = datetime(2026, 6, 1, tzinfo=UTC)

PRICES = """
currency: USD
versions:
  - id: p1
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - {meter: image.generation, model: sdxl, rates: {images: 0.04}}
      - meter: api.call
        model: grad-fee
        graduated:
          - {up_to: 100, rates: {calls: 0.10}, flat_fees: {calls: 5}}
          - {rates: {calls: 0.05}, flat_fees: {calls: 2}}
      - meter: api.call
        model: payments
        percentage: {amount: {property: amount}, rate: 2.9}
      - {meter: capacity, model: team-seats, recurring: {aggregation: latest, rates: {seats: 30}}}
      - meter: capacity
        model: gpu-reserved
        recurring: {aggregation: max, rates: {reserved_gpus: 1000}}
"""

CONTRACTS = """
customers:
  - id: c1
  - id: committed
    contract:
      id: K
      terms: {commitment: {minimum: 100.00, maximum: 300.00}}
  - id: split
    contract:
      id: S
      terms: {commitment: {minimum: 100.00}}
      amendments:
        - {id: S2, effective_from: 2026-06-16T00:00:00Z, commitment: {minimum: 200.00}}
"""


@pytest.fixture(scope="module")
def books(make_books: Callable[..., Books]) -> Books:
    return make_books(PRICES, CONTRACTS)


def _ev(
    event_id: str,
    quantities: dict[str, int],
    corrects: str | None = None,
    model: str = "sdxl",
    customer: str = "c1",
    at: datetime = JUNE + timedelta(days=2),
) -> UsageEvent:
    meters = {"sdxl": "image.generation", "team-seats": "capacity", "gpu-reserved": "capacity"}
    meter = meters.get(model, "api.call")
    properties = {"amount": "10"} if model == "payments" else {}
    return UsageEvent(
        event_id,
        at,
        customer,
        meter,
        model,
        "p",
        "realtime",
        quantities,
        properties=properties,
        corrects=corrects,
    )


def _rate(books: Books, events: list[UsageEvent]) -> list[RatedLine | Rejection]:
    engine, state = RatingEngine(books), RatingState()
    out: list[RatedLine | Rejection] = []
    for event in events:
        result = engine.rate_batch(state, [event])
        out += [*result.lines, *result.rejections]
    return out


def test_a_correction_applies_once_and_never_below_zero(books: Books) -> None:
    """10 images at 0.04 = 0.40; c1 corrects e1 by -4: -0.16, traced to e1. A second
    correction of e1 is rejected, and so is one taking the period's 6 images to -14. The
    period bills 6 images, 0.24."""
    rated = _rate(
        books,
        [
            _ev("e1", {"images": 10}),
            _ev("c1", {"images": -4}, corrects="e1"),
            _ev("c2", {"images": -1}, corrects="e1"),
            _ev("c3", {"images": -20}, corrects="e9"),
        ],
    )
    e1, c1, c2, c3 = rated
    assert isinstance(e1, RatedLine) and isinstance(c1, RatedLine)
    assert (c1.amount, c1.billable_amount, c1.corrects) == (D("-0.16"), D("-0.16"), "e1")
    assert "corrects e1" in c1.tiers and c1.to_row()["corrects"] == "e1"
    assert isinstance(c2, Rejection) and isinstance(c3, Rejection)
    assert c2.reason is c3.reason is RejectReason.INVALID_CORRECTION
    assert c2.detail == "event 'e1' was already corrected by 'c1' in this period"
    assert c3.detail == "it would take images of the period below zero (6 rated, correction -20)"
    assert e1.amount + c1.amount == D("0.24")


def test_a_correction_back_out_of_a_band_takes_its_flat_fee_back(books: Books) -> None:
    """150 calls: 100 x 0.10 + 5 + 50 x 0.05 + 2 = 19.50. Corrected by -60 to 90 calls:
    9.00 + 5 = 14.00, so the correction is -5.50, of which -2 is band 2's fee."""
    original, correction = _rate(
        books,
        [
            _ev("e1", {"calls": 150}, model="grad-fee"),
            _ev("c1", {"calls": -60}, corrects="e1", model="grad-fee"),
        ],
    )
    assert isinstance(original, RatedLine) and isinstance(correction, RatedLine)
    assert (original.amount, correction.amount) == (D("19.50"), D("-5.50"))
    assert correction.charges == {"band_fee": D(-2)}


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5_000), st.data())
def test_an_event_and_its_correction_cost_what_the_corrected_quantity_costs(
    books: Books, quantity: int, data: st.DataObject
) -> None:
    """Across band fees: F(q) + (F(q - c) - F(q)) = F(q - c), to the last digit."""
    delta = data.draw(st.integers(-quantity, 5_000))
    rated = _rate(
        books,
        [
            _ev("e1", {"calls": quantity}, model="grad-fee"),
            _ev("c1", {"calls": delta}, corrects="e1", model="grad-fee"),
        ],
    )
    (net,) = _rate(books, [_ev("n", {"calls": quantity + delta}, model="grad-fee")])
    assert all(isinstance(line, RatedLine) for line in [*rated, net])
    assert sum(line.amount for line in rated if isinstance(line, RatedLine)) == (
        net.amount if isinstance(net, RatedLine) else None
    )


def test_a_per_transaction_charge_cannot_be_corrected_by_quantity(books: Books) -> None:
    _, rejection = _rate(
        books,
        [
            _ev("e1", {"calls": 1}, model="payments"),
            _ev("c1", {"calls": -1}, corrects="e1", model="payments"),
        ],
    )
    assert isinstance(rejection, Rejection)
    assert rejection.detail.startswith("a percentage charge is per transaction")


def test_only_a_correction_may_carry_negative_quantities() -> None:
    record = {
        "event_id": "c1",
        "timestamp": JUNE,
        "customer_id": "c1",
        "meter": "image.generation",
        "model": "sdxl",
        "provider": "p",
        "quantities": {"images": -3},
    }
    bounds = TimeBounds(max_age=None)
    plain = validate(record, JUNE, bounds)
    assert isinstance(plain, Rejection) and plain.reason is RejectReason.NEGATIVE_QUANTITY
    corrected = validate({**record, "corrects": "e1"}, JUNE, bounds)
    assert isinstance(corrected, UsageEvent) and corrected.corrects == "e1"
    itself = validate({**record, "corrects": "c1"}, JUNE, bounds)
    assert isinstance(itself, Rejection) and "cannot correct itself" in itself.detail


def _spend(books: Books, customer: str, sizes: list[tuple[datetime, int]]) -> list[RatedLine]:
    events = [
        _ev(f"e{i}", {"images": q}, customer=customer, at=at) for i, (at, q) in enumerate(sizes)
    ]
    lines = _rate(books, events)
    assert all(isinstance(line, RatedLine) for line in lines)
    return [line for line in lines if isinstance(line, RatedLine)]


def _settle(books: Books, customer: str, lines: list[RatedLine]) -> list[tuple[str, str, Decimal]]:
    usage: dict[str | None, Totals] = {}
    for line in lines:
        usage[line.contract_version] = usage.get(line.contract_version, Totals()) + Totals.of(line)
    settled = RatingEngine(books).close_period(customer, JUNE, usage)
    return [(p.contract_version, p.kind, p.amount) for p in settled]


def test_minimum_spend_is_trued_up_and_spend_above_the_maximum_is_capped(books: Books) -> None:
    """Minimum 100, maximum 300 a month. 1000 images (40.00): true-up 60.00. 10000 images
    (400.00): a cap of -100.00. 5000 images (200.00): neither."""
    day = JUNE + timedelta(days=3)
    assert _settle(books, "committed", _spend(books, "committed", [(day, 1000)])) == [
        ("K", "true_up", D(60))
    ]
    assert _settle(books, "committed", _spend(books, "committed", [(day, 10_000)])) == [
        ("K", "cap", D(-100))
    ]
    assert _settle(books, "committed", _spend(books, "committed", [(day, 5000)])) == []


def test_a_minimum_is_prorated_across_an_amendment_inside_the_period(books: Books) -> None:
    """June has 30 days; S (minimum 100) covers the first 15, S2 (minimum 200) the last 15:
    50.00 and 100.00. 500 images before (20.00) and 3000 after (120.00): true-up 30.00
    on S only."""
    lines = _spend(
        books, "split", [(JUNE + timedelta(days=2), 500), (JUNE + timedelta(days=20), 3000)]
    )
    assert _settle(books, "split", lines) == [("S", "true_up", D(30))]


def test_meterflow_rate_adds_the_true_up_to_what_is_due(
    books: Books, tmp_path: Path, make_books: Callable[..., Books]
) -> None:
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "prices.yaml").write_text(PRICES)
    (folder / "contracts.yaml").write_text(CONTRACTS)
    (folder / "costs.yaml").write_text(
        "currency: USD\nversions:\n  - id: c\n"
        "    effective_from: 2020-01-01T00:00:00Z\n    costs: []\n"
    )
    record = {
        "event_id": "a",
        "timestamp": "2026-06-02T10:00:00Z",
        "customer_id": "committed",
        "meter": "image.generation",
        "model": "sdxl",
        "provider": "p",
        "quantities": {"images": 1000},
    }
    correction = record | {"event_id": "b", "corrects": "a", "quantities": {"images": -250}}
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(record) + "\n" + json.dumps(correction) + "\n")
    out, err = io.StringIO(), io.StringIO()
    code = rate_file(
        events,
        folder / "prices.yaml",
        folder / "contracts.yaml",
        folder / "costs.yaml",
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["amount"], r["corrects"]) for r in rows] == [("40", None), ("-10", "a")]
    (period,) = [line for line in err.getvalue().splitlines() if line.startswith("period: ")]
    assert json.loads(period.removeprefix("period: "))["amount"] == "70"
    row = next(line for line in err.getvalue().splitlines() if line.startswith("committed"))
    # 30.00 billable usage, 70.00 true-up to the 100.00 minimum: 100.00 due.
    assert row.split()[5:8] == ["30.00", "70.00", "100.00"]


SEATS = [
    ("s0", JUNE - timedelta(days=12), 10),
    ("s1", JUNE + timedelta(days=10), 20),
    ("s2", JUNE + timedelta(days=20), 5),
]
GPUS = [
    ("g0", JUNE + timedelta(days=4), 2),
    ("g1", JUNE + timedelta(days=9), 4),
    ("g2", JUNE + timedelta(days=19), 1),
]


def _levels(
    books: Books, customer: str, seats: list[tuple[str, datetime, int]]
) -> list[tuple[str, str, Decimal, Decimal]]:
    events = [
        _ev(i, {"seats": q}, model="team-seats", customer=customer, at=t) for i, t, q in seats
    ]
    events += [
        _ev(i, {"reserved_gpus": q}, model="gpu-reserved", customer=customer, at=t)
        for i, t, q in GPUS
    ]
    lines = [line for line in _rate(books, events) if isinstance(line, RatedLine)]
    assert len(lines) == len(events) and all(line.amount == 0 for line in lines)
    readings = [
        Reading(to_micros(x.timestamp), x.event_id, x.meter, x.model, x.mode, x.quantities)
        for x in lines
    ]
    usage = {line.contract_version: Totals() for line in lines}
    settled = RatingEngine(books).close_period(customer, JUNE, usage, readings)
    return [(p.contract_version, p.item, p.basis, p.amount) for p in settled]


def test_recurring_meters_charge_the_time_weighted_latest_or_the_maximum(books: Books) -> None:
    """June has 30 days. Seats at 30.00 a seat a month, time-weighted: 10 carried from
    May for 10 days, 20 for 10, 5 for 10: 350 seat-days, 11.67 seats on average, 350.00.
    Reserved GPUs at 1000.00 a month, the maximum held: 2, 4, 1 -> 4000.00."""
    assert _levels(books, "c1", SEATS) == [
        ("", "capacity gpu-reserved reserved_gpus (max)", D(4), D(4000)),
        ("", "capacity team-seats seats (latest)", D("11.666666666666666667"), D(350)),
    ]


def test_a_late_reading_re_rates_the_period_exactly(books: Books) -> None:
    """8 seats from June 26: 100 + 200 + 5 x 5 + 8 x 5 = 365 seat-days, 365.00."""
    late = [*SEATS, ("s3", JUNE + timedelta(days=25), 8)]
    assert _levels(books, "c1", late)[1][3] == D(365)


def test_recurring_meters_are_prorated_across_an_amendment(books: Books) -> None:
    """S until June 16, S2 after. Seats: S 10 x 10 + 20 x 5 = 200 seat-days, 200.00; S2
    20 x 5 + 5 x 10 = 150, 150.00. GPUs: 4 held in each half, 4 x 1000 x 15/30 = 2000.00
    each. The 4350.00 of recurring spend clears both minimums."""
    assert _levels(books, "split", SEATS) == [
        ("S", "capacity gpu-reserved reserved_gpus (max)", D(4), D(2000)),
        ("S2", "capacity gpu-reserved reserved_gpus (max)", D(4), D(2000)),
        ("S", "capacity team-seats seats (latest)", D("13.333333333333333333"), D(200)),
        ("S2", "capacity team-seats seats (latest)", D(10), D(150)),
    ]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-40, 29), st.integers(0, 500)), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_recurring_settlement_does_not_depend_on_reading_order(
    books: Books, readings: list[tuple[int, int]], random: Random
) -> None:
    seats = [(f"r{i}", JUNE + timedelta(days=d), q) for i, (d, q) in enumerate(readings)]
    shuffled = list(seats)
    random.shuffle(shuffled)
    assert _levels(books, "split", shuffled) == _levels(books, "split", seats)
