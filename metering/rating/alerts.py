"""Alerts: events a gateway or a person acts on, with ids that survive replay.

An alert's id hashes what makes it unique (customer, kind, threshold and the period or
grant it belongs to), so a replay from a snapshot produces the same ids and a sink can
drop the repeats.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from metering.rating.money import fmt


class AlertKind(StrEnum):
    CREDIT_THRESHOLD = "credit_threshold"
    """A grant's consumption reached a configured percentage."""
    CREDIT_LOW = "credit_low"
    """The customer's available credits fell below the configured balance."""
    BUDGET_SOFT = "budget_soft"
    """Spend in the period reached a configured percentage of the budget."""
    BUDGET_HARD_CAP = "budget_hard_cap"
    """Spend reached the budget: a gateway may refuse further usage (HTTP 402)."""


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    customer_id: str
    kind: AlertKind
    threshold: Decimal
    """Percent for threshold kinds, credits for credit_low, currency for budget_hard_cap."""
    value: Decimal
    """The measured value, in the threshold's unit, when the alert fired."""
    period_start: datetime
    at: datetime
    """Event time of the usage that crossed the threshold."""
    grant_id: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "customer_id": self.customer_id,
            "kind": self.kind.value,
            "threshold": fmt(self.threshold),
            "value": fmt(self.value),
            "period_start": self.period_start,
            "at": self.at,
            "grant_id": self.grant_id,
        }


def alert_id(customer_id: str, kind: AlertKind, *parts: object) -> str:
    key = "|".join((customer_id, kind.value, *(str(p) for p in parts)))
    return hashlib.sha256(key.encode()).hexdigest()[:24]
