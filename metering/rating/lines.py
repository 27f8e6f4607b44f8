"""What rating produces: a rated line per event, and period fees.

Money fields are exact Decimals on the 1e-18 grid (see `metering.rating.money`):

- `amount`: the list amount of the event, after tiers and included allowances, before
  discount and credits; the sum of `amounts`. Never negative, except under volume
  pricing, where the line that crosses a threshold carries the (negative) re-pricing of
  the period's earlier usage, and then its discount and billable amount are negative too.
- `discount`: the contract discount on it; `amount - discount` is the revenue.
- `credits_applied`: the part of the revenue paid from prepaid credits.
- `billable_amount`: revenue minus credits applied, what is invoiced.
- `cost`: the provider's cost of the event; `margin` is revenue minus cost.

`charges` breaks down the part of `amount` that is not usage at a per-unit rate, by
kind: `band_fee`, `package`, `percentage`, `transaction_fee`, `dynamic` (before pooled
allowances, discount and credits). `corrects` names the event a correction corrects.

`price_version` is the price book version that priced the event, or
`contract:<version>` for a contract's custom rate; `contract_version` is the contract
or amendment id in force (None at list price); `cost_version` the cost book version
(None where the cost book has no entry, and then cost is 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from metering.rating.alerts import Alert
from metering.rating.money import fmt
from schemas.event import Rejection
from schemas.jsonform import dump_line


@dataclass(slots=True)
class RatedLine:
    event_id: str
    customer_id: str
    timestamp: datetime
    period_start: datetime
    meter: str
    model: str
    provider: str
    mode: str
    project_id: str | None
    feature: str | None
    quantities: Mapping[str, int]
    unit_prices: dict[str, Decimal]
    """Price of one more base unit of each dimension, at the band the event reached."""
    amounts: dict[str, Decimal]
    tiers: tuple[str, ...]
    """Bands and allowances the event fell in, for a person; empty for flat prices."""
    amount: Decimal
    discount: Decimal
    credits_applied: Decimal
    billable_amount: Decimal
    cost: Decimal
    margin: Decimal
    currency: str
    price_version: str
    contract_version: str | None
    cost_version: str | None
    charges: Mapping[str, Decimal] = field(default_factory=dict)
    corrects: str | None = None

    def to_row(self) -> dict[str, Any]:
        """A plain mapping for sinks and JSON: money as decimal strings, times as datetimes."""
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "timestamp": self.timestamp,
            "period_start": self.period_start,
            "meter": self.meter,
            "model": self.model,
            "provider": self.provider,
            "mode": self.mode,
            "project_id": self.project_id,
            "feature": self.feature,
            "quantities": dict(self.quantities),
            "unit_prices": {d: fmt(v) for d, v in self.unit_prices.items()},
            "amounts": {d: fmt(v) for d, v in self.amounts.items()},
            "tiers": list(self.tiers),
            "amount": fmt(self.amount),
            "discount": fmt(self.discount),
            "credits_applied": fmt(self.credits_applied),
            "billable_amount": fmt(self.billable_amount),
            "cost": fmt(self.cost),
            "margin": fmt(self.margin),
            "currency": self.currency,
            "price_version": self.price_version,
            "contract_version": self.contract_version,
            "cost_version": self.cost_version,
            "charges": {kind: fmt(v) for kind, v in self.charges.items()},
            "corrects": self.corrects,
        }

    def to_json(self) -> str:
        return dump_line(self.to_row())


@dataclass(frozen=True, slots=True)
class Fee:
    """A recurring charge of a period (a subscription's base fee), prorated by the share
    of the period each contract version was in force."""

    customer_id: str
    period_start: datetime
    contract_version: str
    amount: Decimal


@dataclass(slots=True)
class RatingResult:
    lines: list[RatedLine] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
