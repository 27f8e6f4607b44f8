"""The price of one dimension as a function of a period's cumulative quantity.

Flat: quantity x rate. Graduated: each band's units at that band's rate, so crossing a
threshold only changes the price of the units above it. Volume: the whole quantity at the
rate of the band it reached, so crossing a threshold re-prices every earlier unit of the
period, and the price can fall; the line that crosses carries that (negative) adjustment.

Band bounds are in base units and inclusive (`up_to: 10000000` holds the 10,000,000th unit).
`scale` shrinks every bound for a segment that covers only part of a period (proration).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from metering.rating.money import CONTEXT, ZERO, fmt, q18

PER_UNITS = {"unit": 1, "thousand": 1_000, "million": 1_000_000, "hour": 3_600_000}
"""Named rate denominators; `hour` is an hour of a millisecond dimension (gpu_ms)."""

ONE = Decimal(1)


class Kind(StrEnum):
    FLAT = "flat"
    GRADUATED = "graduated"
    VOLUME = "volume"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Rates are per `per` base units; `bounds[i]` is band i's inclusive upper bound."""

    kind: Kind
    per: int
    bounds: tuple[int | None, ...]
    rates: tuple[Decimal, ...]

    @property
    def flat(self) -> bool:
        return self.kind is Kind.FLAT

    def price(self, quantity: int, scale: Decimal = ONE) -> Decimal:
        """F(quantity) at full precision; the caller quantizes."""
        if self.kind is Kind.FLAT:
            return quantity * self.rates[0] / self.per
        if self.kind is Kind.VOLUME:
            return quantity * self.rates[self._band(quantity, scale)] / self.per
        total, lower = ZERO, ZERO
        for upper, rate in zip(self._uppers(scale), self.rates, strict=True):
            if upper is None or quantity <= upper:
                return (total + (quantity - lower) * rate) / self.per
            total += (upper - lower) * rate
            lower = upper
        raise AssertionError("the last band is unbounded")

    def unit_price(self, quantity: int, scale: Decimal = ONE) -> Decimal:
        """The price of one more base unit at `quantity`: the marginal band's rate."""
        return q18(self.rates[self._band(quantity, scale)] / self.per)

    def scaled(self, factor: Decimal) -> Schedule:
        """The same schedule with every rate multiplied: credits into currency."""
        rates = tuple(CONTEXT.multiply(rate, factor) for rate in self.rates)
        return Schedule(self.kind, self.per, self.bounds, rates)

    def describe(self, dimension: str, before: int, after: int, scale: Decimal) -> list[str]:
        """Which bands the units (before, after] fell in, for a person reading the line."""
        if self.kind is Kind.FLAT:
            return []
        uppers = self._uppers(scale)
        lowers = (ZERO, *(u for u in uppers[:-1] if u is not None))
        if self.kind is Kind.VOLUME:
            band = self._band(after, scale)
            return [
                f"{dimension} volume {_band(lowers[band], uppers[band])}: "
                f"all {after} @ {fmt(self.rates[band])}/{self.per}"
            ]
        out = []
        for lower, upper, rate in zip(lowers, uppers, self.rates, strict=True):
            top = Decimal(after) if upper is None else min(Decimal(after), upper)
            inside = top - max(Decimal(before), lower)
            if inside > 0:
                out.append(
                    f"{dimension} {_band(lower, upper)}: {fmt(inside)} @ {fmt(rate)}/{self.per}"
                )
        return out

    def _uppers(self, scale: Decimal) -> tuple[Decimal | None, ...]:
        return tuple(None if b is None else b * scale for b in self.bounds)

    def _band(self, quantity: int, scale: Decimal) -> int:
        for i, upper in enumerate(self._uppers(scale)):
            if upper is None or quantity <= upper:
                return i
        raise AssertionError("the last band is unbounded")


def _band(lower: Decimal, upper: Decimal | None) -> str:
    return f"{fmt(lower)}+" if upper is None else f"{fmt(lower)}-{fmt(upper)}"
