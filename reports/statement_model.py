"""What a usage statement holds: line items, allowances, late adjustments, charges by
kind, corrections, base fees and period-close lines, and the exact totals over them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from metering.rating.commitments import PeriodLine
from metering.rating.lines import Fee
from metering.rating.money import CONTEXT, ZERO, q18, to_cents
from metering.rating.tiers import PER_UNITS
from metering.rating.totals import Totals


@dataclass(frozen=True, slots=True)
class DimensionUse:
    dimension: str
    quantity: int
    amount: Decimal
    per: str
    """The unit the price is quoted per: a key of `metering.rating.tiers.PER_UNITS`."""

    @property
    def unit_price(self) -> Decimal | None:
        """The average price per `per` units; None for no quantity."""
        if not self.quantity:
            return None
        with localcontext(CONTEXT):
            return q18(self.amount * PER_UNITS[self.per] / self.quantity)


@dataclass(frozen=True, slots=True)
class LineItem:
    meter: str
    model: str
    mode: str
    dimensions: tuple[DimensionUse, ...]
    charge: Totals


@dataclass(frozen=True, slots=True)
class Overage:
    meter: str
    contract_version: str
    included: Decimal
    """The allowance, prorated to the share of the period this contract version covers."""
    used: int
    amount: Decimal

    @property
    def over(self) -> Decimal:
        return max(ZERO, self.used - self.included)


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Late usage of an earlier period, billed on this statement."""

    original_period_start: datetime
    meter: str
    model: str
    charge: Totals


@dataclass(frozen=True, slots=True)
class ChargeUse:
    """The part of a meter and model's usage amount from one kind of charge."""

    meter: str
    model: str
    kind: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Correction:
    event_id: str
    corrects: str
    meter: str
    model: str
    amount: Decimal
    original_amount: Decimal | None
    """None where the corrected row is not in the table."""


@dataclass(frozen=True)
class Statement:
    customer_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: tuple[LineItem, ...]
    overages: tuple[Overage, ...]
    adjustments: tuple[Adjustment, ...]
    fees: tuple[Fee, ...]
    charges: tuple[ChargeUse, ...] = ()
    corrections: tuple[Correction, ...] = ()
    period_lines: tuple[PeriodLine, ...] = ()

    @property
    def usage(self) -> Totals:
        return sum((line.charge for line in self.lines), Totals())

    @property
    def adjusted(self) -> Totals:
        return sum((a.charge for a in self.adjustments), Totals())

    @property
    def base_fees(self) -> Decimal:
        return sum((fee.amount for fee in self.fees), ZERO)

    @property
    def settled(self) -> Decimal:
        return sum((line.amount for line in self.period_lines), ZERO)

    @property
    def total(self) -> Decimal:
        """Exact: usage and late adjustments after discount and credits, plus base fees
        and commitment lines."""
        return self.usage.billable + self.adjusted.billable + self.base_fees + self.settled

    @property
    def total_due(self) -> Decimal:
        return to_cents(self.total)
