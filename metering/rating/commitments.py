"""Commitments: a minimum and a maximum spend per billing period, settled at period close.

Spend is a period's usage revenue (amount - discount: before credits, which only pay
for it; base fees apart) under each contract version, against that version's commitment
prorated by the share of the period it was in force, as base fees are. Below the
minimum, the shortfall is a `true_up` line. Above the maximum, the excess is a negative
`cap` line, so spend above it is not billed; it takes back at most what is billable
after credits (credits drawn for the excess stay drawn), and rated lines and their
alerts stay as they were. Both follow from period totals alone, so they are
order-independent, and a late event re-settles its period when it is settled again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from metering.rating.contracts import Customer
from metering.rating.money import ZERO, fmt, q18
from metering.rating.periods import overlap
from metering.rating.totals import Totals
from schemas.event import from_micros


@dataclass(frozen=True, slots=True)
class PeriodLine:
    """A line rated at period close: `true_up` (positive) or `cap` (negative) of a
    commitment, or `recurring` for a recurring meter's level."""

    customer_id: str
    period_start: datetime
    contract_version: str
    kind: str
    item: str
    """What it settles: `minimum`, `maximum`, or `meter model dimension (aggregation)`."""
    basis: Decimal
    """The commitment prorated to the version's share of the period, or the level
    charged (the highest for `max`, the time-weighted average over the part of the
    period the version was in force for `latest`)."""
    spend: Decimal
    """The usage spend a commitment was settled against (zero on a recurring line)."""
    amount: Decimal

    def to_row(self) -> dict[str, Any]:
        """Money as exact decimal strings and the period as ISO 8601, for JSON."""
        row = asdict(self) | {"period_start": self.period_start.isoformat()}
        return row | {k: fmt(row[k]) for k in ("basis", "spend", "amount")}


def settle(
    customer: Customer, start_us: int, end_us: int, usage: Mapping[str | None, Totals]
) -> list[PeriodLine]:
    """The commitment lines of the period [start_us, end_us), from its usage per contract
    version (`Totals` of the rated rows; versions without usage spent nothing)."""
    out = []
    for version in customer.versions:
        terms = version.commitment
        share = overlap(start_us, end_us, version.start_us, version.end_us)
        if terms is None or not share or version.id is None:
            continue
        used = usage.get(version.id, Totals())
        spend = used.amount - used.discount
        part = Decimal(share) / (end_us - start_us)
        start = from_micros(start_us)
        if terms.minimum is not None and spend < (floor := q18(terms.minimum * part)):
            shortfall = floor - spend
            out.append(
                PeriodLine(
                    customer.id, start, version.id, "true_up", "minimum", floor, spend, shortfall
                )
            )
        if terms.maximum is not None and spend > (ceiling := q18(terms.maximum * part)):
            excess = min(spend - ceiling, max(ZERO, used.billable))
            out.append(
                PeriodLine(
                    customer.id, start, version.id, "cap", "maximum", ceiling, spend, -excess
                )
            )
    return out
