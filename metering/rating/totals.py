"""Exact money of a group of rated rows: what statements, replays and diffs add up."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from metering.rating.lines import RatedLine
from metering.rating.money import ZERO


@dataclass(frozen=True, slots=True)
class Totals:
    """Counts and sums of rated rows; `cost` is zero where a caller does not ask for it."""

    events: int = 0
    amount: Decimal = ZERO
    discount: Decimal = ZERO
    credits: Decimal = ZERO
    billable: Decimal = ZERO
    cost: Decimal = ZERO
    margin: Decimal = ZERO

    @classmethod
    def of(cls, line: RatedLine) -> Totals:
        return cls(
            1,
            line.amount,
            line.discount,
            line.credits_applied,
            line.billable_amount,
            line.cost,
            line.margin,
        )

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.events + other.events,
            self.amount + other.amount,
            self.discount + other.discount,
            self.credits + other.credits,
            self.billable + other.billable,
            self.cost + other.cost,
            self.margin + other.margin,
        )
