"""The price of one dimension as a function of a period's cumulative quantity.

Flat: quantity x rate. Graduated: each band's units at that band's rate, so crossing a
threshold only changes the price of the units above it. Volume: the whole quantity at the
rate of the band it reached, so crossing a threshold re-prices every earlier unit of the
period, and the price can fall; the line that crosses carries that (negative) adjustment.

A band may also carry a flat fee, and price its units per started package of N units
rather than per `per` units. Graduated: a band's fee is charged once, by the line whose
usage first enters the band; its packages count the units inside the band. Volume: the
fee and package count of the band reached, re-priced with the rest on a crossing.
Free units come first: the bands (and packages) price the units beyond them, so they
are the first units of the period to arrive, whichever event brings them.

Band bounds are in base units and inclusive (`up_to: 10000000` holds the 10,000,000th unit).
`scale` shrinks every bound and the free units for a segment that covers only part of a
period (proration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
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
    """Rates are per `per` base units, or per started package of `packages[i]` units in
    band i; `bounds[i]` is band i's inclusive upper bound, `fees[i]` its flat fee;
    `free` units of each period come before the first band."""

    kind: Kind
    per: int
    bounds: tuple[Decimal | None, ...]
    rates: tuple[Decimal, ...]
    fees: tuple[Decimal, ...] = ()
    packages: tuple[int | None, ...] = ()
    free: int = 0
    unit: Decimal | None = field(init=False, compare=False, repr=False)
    """A flat schedule's price of one base unit where it lies on the 1e-18 grid: every
    quantity's amount is then exactly quantity x unit, whatever the period held before,
    so rating keeps no amount for it (`metering.rating.amounts.flat`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", _exact_unit(self))

    @property
    def flat(self) -> bool:
        return self.kind is Kind.FLAT

    @property
    def packaged(self) -> bool:
        return any(self.packages)

    def price(self, quantity: int | Decimal, scale: Decimal = ONE) -> Decimal:
        """F(quantity) at full precision; the caller quantizes."""
        units, fees = self.split(quantity, scale)
        return units + fees

    def split(self, quantity: int | Decimal, scale: Decimal = ONE) -> tuple[Decimal, Decimal]:
        """F(quantity) as (units at rates or in packages, flat fees of the bands reached)."""
        if self.kind is Kind.FLAT:
            return quantity * self.rates[0] / self.per, ZERO
        paid = Decimal(quantity) - self.free * scale
        if paid <= 0:
            return ZERO, ZERO
        if self.kind is Kind.VOLUME:
            band = self._band(paid, scale)
            return self._units(band, paid), self._fee(band)
        per_unit, packaged, fees, lower = ZERO, ZERO, ZERO, ZERO
        for band, upper in enumerate(self._uppers(scale)):
            inside = (paid if upper is None else min(paid, upper)) - lower
            if self._package(band) is None:
                per_unit += inside * self.rates[band]
            else:
                packaged += self._units(band, inside)
            fees += self._fee(band)
            if upper is None or paid <= upper:
                return per_unit / self.per + packaged, fees
            lower = upper
        raise AssertionError("the last band is unbounded")

    def unit_price(self, quantity: int, scale: Decimal = ONE) -> Decimal:
        """The price of one more base unit at `quantity`: the marginal band's rate (a
        package band's rate shared over its package)."""
        band = self._band(max(ZERO, quantity - self.free * scale), scale)
        return q18(self.rates[band] / (self._package(band) or self.per))

    def scaled(self, factor: Decimal) -> Schedule:
        """The same schedule with every rate and fee multiplied: credits into currency."""
        rates = tuple(CONTEXT.multiply(rate, factor) for rate in self.rates)
        fees = tuple(CONTEXT.multiply(fee, factor) for fee in self.fees)
        return Schedule(self.kind, self.per, self.bounds, rates, fees, self.packages, self.free)

    def describe(self, dimension: str, before: int, after: int, scale: Decimal) -> list[str]:
        """Which bands the units (before, after] fell in, for a person reading the line."""
        if self.kind is Kind.FLAT:
            return []
        out = []
        free = self.free * scale
        if free and before < free:
            out.append(f"{dimension} free {fmt(free)}: {fmt(min(Decimal(after), free))} used")
        paid_before, paid_after = max(ZERO, before - free), Decimal(after) - free
        if paid_after <= 0:
            return out
        uppers = self._uppers(scale)
        lowers = (ZERO, *(u for u in uppers[:-1] if u is not None))
        if self.kind is Kind.VOLUME:
            band = self._band(paid_after, scale)
            return [
                *out,
                f"{dimension} volume {_band(lowers[band], uppers[band])}: "
                f"all {fmt(paid_after)} @ {self._rate(band)}{self._fee_text(band)}",
            ]
        for band, (lower, upper) in enumerate(zip(lowers, uppers, strict=True)):
            top = paid_after if upper is None else min(paid_after, upper)
            inside = top - max(paid_before, lower)
            if inside > 0:
                entered = self._fee_text(band) if paid_before <= lower else ""
                out.append(
                    f"{dimension} {_band(lower, upper)}: {fmt(inside)} @ {self._rate(band)}"
                    f"{entered}"
                )
        return out

    def _units(self, band: int, units: Decimal) -> Decimal:
        package = self._package(band)
        if package is None:
            return units * self.rates[band] / self.per
        started = (units / package).to_integral_value(rounding=ROUND_CEILING, context=CONTEXT)
        return started * self.rates[band]

    def _package(self, band: int) -> int | None:
        return self.packages[band] if self.packages else None

    def _fee(self, band: int) -> Decimal:
        return self.fees[band] if self.fees else ZERO

    def _rate(self, band: int) -> str:
        package = self._package(band)
        per = f"/{self.per}" if package is None else f" per package of {package}"
        return f"{fmt(self.rates[band])}{per}"

    def _fee_text(self, band: int) -> str:
        fee = self._fee(band)
        return f" + flat fee {fmt(fee)}" if fee else ""

    def _uppers(self, scale: Decimal) -> tuple[Decimal | None, ...]:
        return tuple(None if b is None else b * scale for b in self.bounds)

    def _band(self, quantity: int | Decimal, scale: Decimal) -> int:
        for i, upper in enumerate(self._uppers(scale)):
            if upper is None or quantity <= upper:
                return i
        raise AssertionError("the last band is unbounded")


def _exact_unit(schedule: Schedule) -> Decimal | None:
    if schedule.kind is not Kind.FLAT or schedule.free:
        return None
    rate, per = schedule.rates[0], schedule.per
    unit = CONTEXT.divide(rate, per)
    if CONTEXT.multiply(unit, per) != rate or q18(unit) != unit:
        return None
    return unit


def _band(lower: Decimal, upper: Decimal | None) -> str:
    return f"{fmt(lower)}+" if upper is None else f"{fmt(lower)}-{fmt(upper)}"
