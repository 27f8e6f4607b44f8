"""Pricing models of issue 14, each from the published semantics of a billing system
(Lago's charge models, OpenMeter's prices, Orb's matrix), worked by hand in the docstring
and checked to the last digit; properties check that their period totals do not depend
on how usage is split into events or in what order it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.rating.books import Books
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatedLine
from metering.rating.loading import CatalogueError
from metering.rating.state import RatingState
from schemas.event import Rejection, RejectReason, UsageEvent

D = Decimal
JUNE = datetime(2026, 6, 1, tzinfo=UTC)

PRICES = """
currency: USD
versions:
  - id: models-1
    effective_from: 2020-01-01T00:00:00Z
    prices:
      - meter: api.call
        model: grad-fee
        graduated:
          - {up_to: 100, rates: {calls: 0.10}, flat_fees: {calls: 5}}
          - {up_to: 1000, rates: {calls: 0.05}, flat_fees: {calls: 2}}
          - {rates: {calls: 0.01}}
      - meter: api.call
        model: vol-fee
        volume:
          - {up_to: 100, rates: {calls: 0.10}, flat_fees: {calls: 5}}
          - {rates: {calls: 0.05}, flat_fees: {calls: 20}}
      - {meter: api.call, model: pack, package: 1000, free: {calls: 100}, rates: {calls: 2.00}}
      - meter: api.call
        model: grad-pack
        graduated:
          - {up_to: 10000, package: 1000, rates: {calls: 3}}
          - {package: 5000, rates: {calls: 10}}
      - {meter: image.generation, model: sdxl-free, free: {images: 10}, rates: {images: 0.04}}
      - meter: api.call
        model: payments
        percentage: {amount: {property: amount}, rate: 2.9, fixed_fee: 0.30,
                     min_fee: 0.50, max_fee: 5.00, free_events: 1}
      - meter: api.call
        model: payments-free
        percentage: {amount: {property: amount}, rate: 1, fixed_fee: 0.10, free_amount: 150}
      - meter: api.call
        model: payments-bounded
        percentage: {amount: {property: amount, places: 2}, rate: 2.9, fixed_fee: 0.30,
                     min_fee: 0.50, max_fee: 5.00}
      - meter: api.call
        model: payments-grad
        percentage:
          amount: {property: amount}
          graduated:
            - {up_to: 1000, rate: 2, flat_fee: 1}
            - {rate: 1}
      - meter: api.call
        model: cents
        percentage: {amount: {dimension: calls, minor_units: 2}, rate: 3}
      - meter: llm.tokens
        model: resold
        dynamic: {amount: {property: provider_cost, places: 9}, markup_percent: 20}
      - meter: image.generation
        model: sdxl-matrix
        matrix:
          by: [region, quality]
          cells:
            - {when: {region: eu, quality: hd}, rates: {images: 0.08}}
            - {when: {region: us, quality: hd}, rates: {images: 0.06}}
          default: {images: 0.04}
      - meter: image.generation
        model: strict-matrix
        matrix:
          by: [region]
          cells: [{when: {region: eu}, rates: {images: 0.08}}]
"""

CONTRACTS = """
customers:
  - id: c1
"""


@pytest.fixture(scope="module")
def books(make_books: Callable[..., Books]) -> Books:
    return make_books(PRICES, CONTRACTS)


def _event(
    n: int,
    model: str,
    quantities: Mapping[str, int],
    properties: Mapping[str, str] | None = None,
    region: str | None = None,
    minutes: int = 0,
) -> UsageEvent:
    meter = {"sdxl-free": "image.generation", "sdxl-matrix": "image.generation"}
    meter |= {"strict-matrix": "image.generation", "resold": "llm.tokens"}
    return UsageEvent(
        f"e{n}",
        JUNE + timedelta(minutes=minutes or n),
        "c1",
        meter.get(model, "api.call"),
        model,
        "p",
        "realtime",
        dict(quantities),
        properties=dict(properties or {}),
        region=region,
    )


def _rate(books: Books, events: list[UsageEvent]) -> list[RatedLine | Rejection]:
    engine, state = RatingEngine(books), RatingState()
    out: list[RatedLine | Rejection] = []
    for event in events:
        result = engine.rate_batch(state, [event])
        out += [*result.lines, *result.rejections]
    return out


def _lines(books: Books, events: list[UsageEvent]) -> list[RatedLine]:
    rated = _rate(books, events)
    assert all(isinstance(r, RatedLine) for r in rated), rated
    return [r for r in rated if isinstance(r, RatedLine)]


def _calls(books: Books, model: str, sizes: list[int]) -> list[RatedLine]:
    return _lines(books, [_event(i, model, {"calls": q}) for i, q in enumerate(sizes, 1)])


def _paid(books: Books, model: str, amounts: list[str]) -> list[RatedLine]:
    events = [_event(i, model, {"calls": 1}, {"amount": a}) for i, a in enumerate(amounts, 1)]
    return _lines(books, events)


def test_graduated_flat_fee_is_charged_once_when_usage_enters_its_band(books: Books) -> None:
    """Lago graduated ranges 0-100 at 0.10 + flat 5, 101-1000 at 0.05 + flat 2, then 0.01.
    50 calls: 50 x 0.10 + 5 (band 1 entered) = 10.00. 60 more (110): 50 x 0.10 + 10 x 0.05
    + 2 (band 2 entered) = 7.50. 900 more (1010): 890 x 0.05 + 10 x 0.01 = 44.60, band 3
    has no fee. Total 62.10 = 100 x 0.1 + 5 + 900 x 0.05 + 2 + 10 x 0.01."""
    lines = _calls(books, "grad-fee", [50, 60, 900])
    assert [line.amount for line in lines] == [D("10.00"), D("7.50"), D("44.60")]
    assert [line.charges.get("band_fee") for line in lines] == [D(5), D(2), None]
    assert "calls 0-100: 50 @ 0.1/1 + flat fee 5" in lines[0].tiers


def test_volume_flat_fee_is_the_fee_of_the_band_reached(books: Books) -> None:
    """Lago volume ranges 0-100 at 0.10 + flat 5, 101+ at 0.05 + flat 20. 80 calls:
    80 x 0.10 + 5 = 13.00. 40 more (120): the whole period re-priced, 120 x 0.05 + 20 =
    26.00, so this line is 13.00: its band fee part is 20 - 5 = 15, its units part
    6.00 - 8.00 = -2.00."""
    lines = _calls(books, "vol-fee", [80, 40])
    assert [line.amount for line in lines] == [D("13.00"), D("13.00")]
    assert lines[1].charges == {"band_fee": D(15)}
    assert sum(line.amount for line in lines) == D(26)


def test_package_price_per_started_package_after_free_units(books: Books) -> None:
    """Lago package: 2.00 per started package of 1000 units, 100 free units. 100 calls are
    free; the 101st starts a package (2.00); 999 more fill it (0.00); the 1101st starts a
    second (2.00). Total ceil((1101 - 100) / 1000) x 2 = 4.00."""
    lines = _calls(books, "pack", [100, 1, 999, 1])
    assert [line.amount for line in lines] == [D(0), D(2), D(0), D(2)]
    assert [line.charges.get("package") for line in lines] == [None, D(2), None, D(2)]
    assert lines[0].tiers == ("calls free 100: 100 used",)


def test_graduated_packages_count_the_units_inside_each_band(books: Books) -> None:
    """Up to 10000 calls in packages of 1000 at 3, beyond in packages of 5000 at 10.
    2500 calls: 3 packages = 9.00. 8000 more (10500): band 1 full, 10 packages = 30, and
    500 in band 2 start one package = 10: 40.00 in all, 31.00 on this line."""
    lines = _calls(books, "grad-pack", [2500, 8000])
    assert [line.amount for line in lines] == [D(9), D(31)]
    assert [line.charges["package"] for line in lines] == [D(9), D(31)]


def test_free_units_are_the_first_units_of_the_period_to_arrive(books: Books) -> None:
    """10 free images a period at 0.04: 4 and 4 images are free, of the next 5 the first
    2 are free and 3 cost 0.12; the next 5 cost 0.20. A new period starts free again."""
    sizes = [4, 4, 5, 5]
    events = [_event(i, "sdxl-free", {"images": q}) for i, q in enumerate(sizes, 1)]
    july = _event(9, "sdxl-free", {"images": 3}, minutes=60 * 24 * 30 + 1)
    lines = _lines(books, [*events, july])
    assert [line.amount for line in lines] == [D(0), D(0), D("0.12"), D("0.20"), D(0)]


def test_percentage_with_fixed_fee_free_event_and_minimum_and_maximum(books: Books) -> None:
    """Lago percentage, 2.9 % + 0.30 per transaction, min 0.50, max 5.00, 1 free event.
    100.00: the free event, 0. 100.00: 2.90 + 0.30 = 3.20. 5.00: 0.145 + 0.30 = 0.445,
    raised to 0.50. 1000.00: 29.00 + 0.30 = 29.30, lowered to 5.00. Total 8.70."""
    lines = _paid(books, "payments", ["100.00", "100.00", "5.00", "1000.00"])
    assert [line.amount for line in lines] == [D(0), D("3.20"), D("0.50"), D("5.00")]
    assert lines[1].charges == {"percentage": D("2.90"), "transaction_fee": D("0.30")}
    assert lines[2].charges == {"percentage": D("0.20"), "transaction_fee": D("0.30")}
    assert lines[3].amounts == {"calls": D("5.00")}


def test_percentage_free_amount_is_the_first_amount_of_the_period(books: Books) -> None:
    """1 % + 0.10 with 150 free: Lago's free_units_per_total_aggregation. 100 is inside
    the free amount (0); the next 100 pays on the 50 beyond it, 0.50 + 0.10; 10 more pays
    0.10 + 0.10. Total 0.80 = (210 - 150) x 1 % + 2 transactions x 0.10, as Lago computes."""
    lines = _paid(books, "payments-free", ["100", "100", "10"])
    assert [line.amount for line in lines] == [D(0), D("0.60"), D("0.20")]


def test_a_zero_amount_pays_the_minimum_and_the_free_amount_ends_where_it_is_reached(
    books: Books,
) -> None:
    """A 0.00 transaction at 2.9 % + 0.30 pays 0.30, raised to the 0.50 minimum: with no
    free amount nothing is free. 150 with 150 free reaches the free amount: Lago counts
    it as paid (running total not below the free amount), 0 % of nothing + 0.10."""
    (zero,) = _paid(books, "payments-bounded", ["0.00"])
    (reached,) = _paid(books, "payments-free", ["150"])
    assert (zero.amount, reached.amount) == (D("0.50"), D("0.10"))


def test_graduated_percentage_bands_on_the_cumulative_amount(books: Books) -> None:
    """Lago graduated percentage: 0-1000 at 2 % + flat 1, beyond at 1 %. 600: 12.00 + 1
    = 13.00. 600 more (1200): 400 x 2 % + 200 x 1 % = 10.00. Total 23.00."""
    lines = _paid(books, "payments-grad", ["600", "600"])
    assert [line.amount for line in lines] == [D(13), D(10)]
    assert lines[0].charges == {"percentage": D(12), "band_fee": D(1)}


def test_percentage_of_a_dimension_in_minor_units(books: Books) -> None:
    """3 % of calls read as cents: 1999 is 19.99, so 0.5997."""
    (line,) = _calls(books, "cents", [1999])
    assert line.amount == D("0.5997")


def test_dynamic_price_is_the_carried_amount_with_its_markup(books: Books) -> None:
    """OpenMeter dynamic price with multiplier 1.2 (Lago dynamic charge plus a markup):
    provider cost 0.012345 resold at 0.014814."""
    event = _event(1, "resold", {"input_tokens": 10}, {"provider_cost": "0.012345"})
    (line,) = _lines(books, [event])
    assert (line.amount, line.charges) == (D("0.014814"), {"dynamic": D("0.014814")})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "properties.provider_cost (the amount to charge on) is missing"),
        ("-1", "properties.provider_cost must be a finite amount, not negative, got '-1'"),
        ("NaN", "properties.provider_cost must be a finite amount, not negative, got 'NaN'"),
        ("abc", "properties.provider_cost must be a decimal amount, got 'abc'"),
        ("0.0000000001", "properties.provider_cost has more than 9 decimal places"),
    ],
)
def test_a_carried_amount_that_cannot_be_used_rejects_the_event(
    books: Books, value: str | None, problem: str
) -> None:
    properties = {} if value is None else {"provider_cost": value}
    (rejection,) = _rate(books, [_event(1, "resold", {"input_tokens": 1}, properties)])
    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectReason.INVALID_FIELD
    assert rejection.detail.startswith(problem)


def test_matrix_rates_by_event_properties_with_a_default(books: Books) -> None:
    """Orb matrix on region x quality: eu/hd 0.08, us/hd 0.06, else 0.04. 3 images in eu
    (the event's region field) at hd: 0.24; 2 in us (a property) at hd: 0.12; 5 with no
    properties: the default, 0.20. Without a default, an unmatched event is rejected."""
    events = [
        _event(1, "sdxl-matrix", {"images": 3}, {"quality": "hd"}, region="eu"),
        _event(2, "sdxl-matrix", {"images": 2}, {"quality": "hd", "region": "us"}),
        _event(3, "sdxl-matrix", {"images": 5}),
        _event(4, "strict-matrix", {"images": 1}, region="us"),
    ]
    *lines, rejection = _rate(books, events)
    assert [line.amount for line in lines if isinstance(line, RatedLine)] == [
        D("0.24"),
        D("0.12"),
        D("0.20"),
    ]
    assert isinstance(rejection, Rejection)
    assert rejection.detail == "no matrix cell for region=us and no default rates"


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        (
            "{meter: api.call, model: m, package: 10, per: thousand, rates: {calls: 1}}",
            "give 'package' or 'per', not both",
        ),
        (
            "{meter: api.call, model: m, free: {images: 3}, rates: {calls: 1}}",
            "dimension 'images' is not measured by 'api.call'",
        ),
        (
            "{meter: api.call, model: m, rates: {calls: 1}, dynamic: {amount: {property: a}}}",
            "give exactly one of",
        ),
        (
            "{meter: api.call, model: m, percentage: {amount: {property: a}, rate: 1,"
            " min_fee: 2, max_fee: 1}}",
            "min_fee 2 is above max_fee 1",
        ),
        (
            "{meter: api.call, model: m, matrix: {by: [region], cells: [{when: {tier: a},"
            " rates: {calls: 1}}]}}",
            "must give exactly the keys ['region']",
        ),
    ],
)
def test_a_bad_price_is_one_clear_error(
    make_books: Callable[..., Books], price: str, problem: str
) -> None:
    text = f"""
currency: USD
versions:
  - id: v
    effective_from: 2020-01-01T00:00:00Z
    prices: [{price}]
"""
    with pytest.raises(CatalogueError, match="prices") as error:
        make_books(text, CONTRACTS)
    assert problem in str(error.value)


ORDER_FREE = {
    "grad-fee": ("calls", None),
    "vol-fee": ("calls", None),
    "pack": ("calls", None),
    "grad-pack": ("calls", None),
    "sdxl-free": ("images", None),
    "payments-bounded": ("calls", "amount"),
    "payments-grad": ("calls", "amount"),
    "cents": ("calls", None),
    "resold": ("input_tokens", "provider_cost"),
    "sdxl-matrix": ("images", None),
}
"""Models whose period total is order-independent, with their dimension and amount key."""


@st.composite
def _usage(draw: st.DrawFn) -> list[UsageEvent]:
    out = []
    for n in range(draw(st.integers(1, 12))):
        model = draw(st.sampled_from(sorted(ORDER_FREE)))
        dimension, key = ORDER_FREE[model]
        properties = {}
        if key is not None:
            cents = draw(st.integers(0, 10**7))
            properties[key] = str(D(cents).scaleb(-2))
        if model == "sdxl-matrix":
            properties["quality"] = draw(st.sampled_from(["hd", "sd"]))
            properties["region"] = draw(st.sampled_from(["eu", "us", "ap"]))
        quantity = draw(st.integers(1, 20_000))
        out.append(_event(n, model, {dimension: quantity}, properties, minutes=n + 1))
    return out


def _period_totals(books: Books, events: list[UsageEvent]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for line in _lines(books, events):
        for kind, part in (("amount", line.amount), *line.charges.items()):
            key = f"{line.model}:{kind}"
            totals[key] = totals.get(key, D(0)) + part
    return {k: v for k, v in totals.items() if v}


@settings(max_examples=150, deadline=None)
@given(_usage(), st.randoms(use_true_random=False))
def test_new_models_total_the_same_in_any_order(
    books: Books, events: list[UsageEvent], random: Random
) -> None:
    shuffled = list(events)
    random.shuffle(shuffled)
    assert _period_totals(books, shuffled) == _period_totals(books, events)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["grad-fee", "vol-fee", "pack", "grad-pack", "cents", "sdxl-free"]), st.data()
)
def test_cumulative_models_total_the_same_however_usage_is_split(
    books: Books, model: str, data: st.DataObject
) -> None:
    """Split one event's quantity into parts: the parts total what the whole costs."""
    sizes = data.draw(st.lists(st.integers(1, 5_000), min_size=1, max_size=10))
    dimension = ORDER_FREE[model][0]

    def rate(quantities: list[int]) -> list[RatedLine]:
        events = [_event(i, model, {dimension: q}) for i, q in enumerate(quantities, 1)]
        return _lines(books, events)

    whole, parts = rate([sum(sizes)]), rate(sizes)
    assert sum(line.amount for line in parts) == whole[0].amount
    for kind in ("band_fee", "package"):
        split = sum(line.charges.get(kind, D(0)) for line in parts)
        assert split == whole[0].charges.get(kind, D(0))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**8), min_size=1, max_size=10))
def test_graduated_percentage_totals_the_same_however_the_amount_is_split(
    books: Books, cents: list[int]
) -> None:
    """Graduated percentage is a function of the period's cumulative amount."""
    amounts = [str(D(c).scaleb(-2)) for c in cents]
    whole = _paid(books, "payments-grad", [str(D(sum(cents)).scaleb(-2))])
    parts = _paid(books, "payments-grad", amounts)
    assert sum(line.amount for line in parts) == whole[0].amount
