"""Charges on what an event carries: a percentage of an amount it carries, its own
price (dynamic), or per-unit rates picked by its properties (matrix).

An amount comes from a `properties` key (a decimal string in the currency, at most
`places` decimal places, never negative) or from a quantity dimension in minor units
(`minor_units: 2` reads 1999 as 19.99). A bad or missing amount rejects the event
with a reason; it is never rated as zero.

Percentage (Lago's percentage charge): per transaction, `rate` percent of the amount
plus `fixed_fee`, then raised to `min_fee` or lowered to `max_fee`. The first
`free_events` transactions of the period pay nothing, and so does the first
`free_amount` of the period's carried amount (an event ending below it pays nothing,
the one reaching or crossing it pays on the part beyond, as Lago counts free events).
Free events and free amount go by arrival order; without them a period's total is the
same in any order. Graduated percentage (Lago's graduated_percentage): bands on the
period's cumulative amount, each band's part at its rate, plus a band's `flat_fee` once
when the amount enters it; no per-transaction terms, and the total is order-independent
like any graduated price.

Dynamic (Lago's dynamic charge, OpenMeter's dynamic price): the carried amount is the
charge, times (1 + `markup_percent` / 100).

Matrix (Orb's matrix price): cells keyed by event properties (`region` falls back to
the event's region field) each give flat per-unit rates; an event matching no cell
takes the `default` rates, or is rejected where there is none. Each cell tallies apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Self

from pydantic import Field, model_validator

from metering.rating.loading import Rate, Spec
from metering.rating.money import CONTEXT, HUNDRED, ZERO, q18
from metering.rating.properties import property_of
from metering.rating.recurring import Recurring
from metering.rating.state import Carried
from metering.rating.tiers import Kind, Schedule
from schemas.event import UsageEvent

MAX_PLACES = 18
"""Amounts are stored as Decimal(38, 18): a carried amount finer than that cannot be kept."""
Places = Annotated[int, Field(ge=0, le=MAX_PLACES)]


class AmountSpec(Spec):
    """Where the event carries the amount: exactly one of `property` and `dimension`."""

    property: str | None = Field(default=None, min_length=1)
    dimension: str | None = None
    minor_units: Places = 0
    """Decimal places of a dimension's integer quantity (2: the quantity counts cents)."""
    places: Places = MAX_PLACES
    """The most decimal places a property's amount may have."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.property is None) == (self.dimension is None):
            raise ValueError("give exactly one of 'property' and 'dimension'")
        if self.property is not None and self.minor_units:
            raise ValueError("'minor_units' reads a dimension; a property is in the currency")
        return self

    def build(self) -> Amount:
        unit = Decimal(1).scaleb(-self.minor_units)
        return Amount(self.property, self.dimension, unit, self.places)


class PercentBandSpec(Spec):
    up_to: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    """Inclusive upper bound of the band, in the currency of the carried amount."""
    rate: Rate
    """Percent of the part of the amount inside the band."""
    flat_fee: Rate = ZERO


class PercentageSpec(Spec):
    amount: AmountSpec
    rate: Rate | None = None
    """Percent of each transaction's amount; or give `graduated` bands instead."""
    graduated: list[PercentBandSpec] | None = None
    fixed_fee: Rate = ZERO
    min_fee: Rate | None = None
    max_fee: Rate | None = None
    free_events: Annotated[int, Field(ge=0)] = 0
    free_amount: Rate = ZERO

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.rate is None) == (self.graduated is None):
            raise ValueError("give exactly one of 'rate' and 'graduated'")
        per_transaction = (self.fixed_fee, self.min_fee, self.max_fee, self.free_events)
        if self.graduated is not None:
            if any(per_transaction) or self.free_amount:
                raise ValueError(
                    "graduated percentage bands take no fixed, minimum or maximum fee and no "
                    "free events or amount: give a first band at rate 0 for a free amount"
                )
            _check_bands(self.graduated)
        if self.min_fee is not None and self.max_fee is not None and self.min_fee > self.max_fee:
            raise ValueError(f"min_fee {self.min_fee} is above max_fee {self.max_fee}")
        if self.max_fee is not None and self.max_fee < self.fixed_fee:
            raise ValueError(f"max_fee {self.max_fee} is below fixed_fee {self.fixed_fee}")
        return self

    def build(self) -> Percentage:
        bands = None
        if self.graduated is not None:
            bands = Schedule(
                Kind.GRADUATED,
                100,
                tuple(b.up_to for b in self.graduated),
                tuple(b.rate for b in self.graduated),
                tuple(b.flat_fee for b in self.graduated),
            )
        return Percentage(
            "percentage",
            self.amount.build(),
            CONTEXT.divide(self.rate or ZERO, HUNDRED),
            bands,
            self.fixed_fee,
            self.min_fee,
            self.max_fee,
            self.free_events,
            self.free_amount,
        )


def _check_bands(bands: list[PercentBandSpec]) -> None:
    if not bands or bands[-1].up_to is not None or any(b.up_to is None for b in bands[:-1]):
        raise ValueError("every band but the last needs 'up_to'; the last has none")
    bounds = [b.up_to or ZERO for b in bands[:-1]]
    if bounds != sorted(set(bounds)):
        raise ValueError(f"band bounds must increase, got {bounds}")


class DynamicSpec(Spec):
    amount: AmountSpec
    markup_percent: Rate = ZERO

    def build(self) -> Percentage:
        rate = CONTEXT.divide(HUNDRED + self.markup_percent, HUNDRED)
        return Percentage("dynamic", self.amount.build(), rate)


class MatrixCellSpec(Spec):
    when: dict[str, str] = Field(min_length=1)
    rates: dict[str, Rate]


class MatrixSpec(Spec):
    by: list[str] = Field(min_length=1)
    """The event properties that key the cells (`region`: also the event's region field)."""
    cells: list[MatrixCellSpec] = Field(min_length=1)
    default: dict[str, Rate] | None = None
    """Rates of an event that matches no cell; omitted, such an event is rejected."""

    @model_validator(mode="after")
    def _keys(self) -> Self:
        keys = [tuple(cell.when.get(k, "") for k in self.by) for cell in self.cells]
        for cell in self.cells:
            if set(cell.when) != set(self.by):
                raise ValueError(f"cell {cell.when} must give exactly the keys {self.by}")
        if dupes := sorted({str(k) for k in keys if keys.count(k) > 1}):
            raise ValueError(f"more than one cell for {', '.join(dupes)}")
        return self

    def dimensions(self) -> set[str]:
        rated = [cell.rates for cell in self.cells] + [self.default or {}]
        return {d for rates in rated for d in rates}


@dataclass(frozen=True, slots=True)
class Amount:
    property: str | None
    dimension: str | None
    unit: Decimal
    places: int

    def read(self, ev: UsageEvent) -> Decimal | str:
        """The amount the event carries, or why it cannot be used."""
        if self.dimension is not None:
            quantity = ev.quantities.get(self.dimension)
            if quantity is None:
                return f"quantity {self.dimension!r} (the amount to charge on) is missing"
            return quantity * self.unit
        text = ev.properties.get(self.property or "")
        where = f"properties.{self.property}"
        if text is None:
            return f"{where} (the amount to charge on) is missing"
        try:
            value = Decimal(text)
        except InvalidOperation:
            return f"{where} must be a decimal amount, got {text!r}"
        if not value.is_finite() or value < 0:
            return f"{where} must be a finite amount, not negative, got {text!r}"
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -self.places:
            return f"{where} has more than {self.places} decimal places: {text!r}"
        return value


@dataclass(frozen=True, slots=True)
class Percentage:
    """A percentage (or, at `rate` 1 + markup, a dynamic) charge on a carried amount."""

    kind: str
    amount: Amount
    rate: Decimal
    """A fraction of the amount (2.9 percent is 0.029)."""
    bands: Schedule | None = None
    fixed_fee: Decimal = ZERO
    min_fee: Decimal | None = None
    max_fee: Decimal | None = None
    free_events: int = 0
    free_amount: Decimal = ZERO

    def charge(self, tally: Carried, value: Decimal) -> dict[str, Decimal]:
        """The charge of one transaction of `value` by kind; updates the period's tally."""
        before = tally.base
        tally.base += value
        tally.events += 1
        if self.bands is not None:
            new = q18(self.bands.price(tally.base))
            delta, tally.amount = new - tally.amount, new
            fees = q18(self.bands.split(tally.base)[1]) - q18(self.bands.split(before)[1])
            return {self.kind: delta - fees, "band_fee": fees}
        if tally.events <= self.free_events or tally.base < self.free_amount:
            return {}
        paid = min(value, tally.base - self.free_amount)
        percent = q18(paid * self.rate)
        fee = percent + self.fixed_fee
        if self.min_fee is not None and fee < self.min_fee:
            fee = self.min_fee
        if self.max_fee is not None and fee > self.max_fee:
            fee = self.max_fee
        tally.amount += fee
        if not self.fixed_fee:
            return {self.kind: fee}
        return {self.kind: fee - self.fixed_fee, "transaction_fee": self.fixed_fee}

    def scaled(self, factor: Decimal) -> Percentage:
        """Fees stated in credits, into currency; the carried amount is in currency."""

        def scale(fee: Decimal | None) -> Decimal | None:
            return None if fee is None else CONTEXT.multiply(fee, factor)

        return Percentage(
            self.kind,
            self.amount,
            self.rate,
            None if self.bands is None else self.bands.scaled(factor),
            CONTEXT.multiply(self.fixed_fee, factor),
            scale(self.min_fee),
            scale(self.max_fee),
            self.free_events,
            self.free_amount,
        )


@dataclass(frozen=True, slots=True)
class Matrix:
    by: tuple[str, ...]
    cells: Mapping[tuple[str, ...], Mapping[str, Schedule]]
    default: Mapping[str, Schedule] | None

    def pick(self, ev: UsageEvent) -> tuple[str, Mapping[str, Schedule]] | str:
        """The cell's label and flat schedules for the event, or why there is none."""
        key = tuple(property_of(ev, name) or "" for name in self.by)
        label = ",".join(f"{name}={value}" for name, value in zip(self.by, key, strict=True))
        found = self.cells.get(key)
        if found is not None:
            return label, found
        if self.default is not None:
            return "default", self.default
        return f"no matrix cell for {label} and no default rates"

    def scaled(self, factor: Decimal) -> Matrix:
        def scale(schedules: Mapping[str, Schedule]) -> dict[str, Schedule]:
            return {d: s.scaled(factor) for d, s in schedules.items()}

        cells = {key: scale(schedules) for key, schedules in self.cells.items()}
        return Matrix(self.by, cells, None if self.default is None else scale(self.default))


def flat(rates: Mapping[str, Decimal], per: int) -> dict[str, Schedule]:
    return {d: Schedule(Kind.FLAT, per, (None,), (r,)) for d, r in rates.items()}


def matrix(spec: MatrixSpec, per: int) -> Matrix:
    cells = {tuple(c.when[k] for k in spec.by): flat(c.rates, per) for c in spec.cells}
    default = None if spec.default is None else flat(spec.default, per)
    return Matrix(tuple(spec.by), cells, default)


Charge = Percentage | Matrix | Recurring
"""A price computed from what the event carries rather than from per-dimension schedules."""
