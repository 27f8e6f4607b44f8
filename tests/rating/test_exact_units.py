"""A flat rate whose unit price lies on the 1e-18 grid keeps no amount in the state: each
line's amount is its own quantity x unit. It must equal what the cumulative rule gives,
Q(F(after)) - Q(F(before)), for every line, corrections included."""

import random
from datetime import UTC, datetime
from decimal import Decimal, localcontext

import pytest

from metering.rating.amounts import flat
from metering.rating.money import CONTEXT, q18
from metering.rating.state import CustomerState
from metering.rating.tiers import Kind, Schedule
from schemas.event import UsageEvent

D = Decimal
START = 1_793_491_200_000_000


def schedule(rate: str, per: int) -> Schedule:
    return Schedule(Kind.FLAT, per, (None,), (D(rate),))


def test_a_unit_price_is_exact_only_on_the_grid() -> None:
    assert schedule("2.50", 1_000_000).unit == D("0.0000025")
    assert schedule("0.000000000000000001", 1).unit == D("1e-18")
    assert schedule("2.50", 3_600_000).unit is None  # gpu_ms at a per-hour rate
    assert schedule("0.000000000000000001", 10).unit is None  # below the grid
    graduated = Schedule(Kind.GRADUATED, 1_000, (D(1000), None), (D(2), D(1)))
    assert graduated.unit is None


@pytest.mark.parametrize(
    ("rate", "per"), [("2.50", 1_000_000), ("0.15", 1_000), ("2.50", 3_600_000), ("7", 3)]
)
def test_every_line_is_the_difference_of_quantized_cumulative_amounts(rate: str, per: int) -> None:
    rng = random.Random(f"{rate}/{per}")
    priced = schedule(rate, per)

    def cumulative(quantity: int) -> Decimal:
        return q18(quantity * priced.rates[0] / per)

    state, total = CustomerState(), 0
    with localcontext(CONTEXT):
        for i in range(400):
            q = rng.randint(1, 5_000_000) if total < 1_000 or rng.random() < 0.8 else -total // 2
            event = UsageEvent(
                f"e{i}", datetime(2026, 11, 2, tzinfo=UTC), "c", "m", "x", "p", "realtime", {"d": q}
            )
            amount = flat(state, {"d": priced}, "rid", START, event)["d"]
            before, total = total, total + q
            assert amount == cumulative(total) - cumulative(before)
    assert state.rated((START, "rid", "d")) == total
    assert bool(state.quantities) is (priced.unit is not None)
