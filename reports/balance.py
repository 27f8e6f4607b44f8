"""A customer's standing now: spend this period against budget, prepaid credits left, the
state of every alert, and whether a gateway should let it keep going.

Everything is read from what the flow writes. An entitlement check reads one customer's
few rows of the `customer_balances` roll-up (spend and credits drawn per billing period,
credits granted and lapsed, hard caps reached: `sinks/migrations/014_customer_balances.sql`),
so it costs the same on ten rated rows or ten million; a balance also reads the
customer's alerts. Both are as fresh as the flow's produce-to-queryable latency.

The flow decides; this only reads its decisions. A hard cap is reached once the flow
wrote the period's `budget_hard_cap` alert (spend >= limit on a hard-capped budget,
`metering.rating.budgets`). Credits are exhausted when a customer on a tier that sells
credits (a prepaid plan) has nothing left of what it was granted: granted, less drawn
(`credits_applied`), less lapsed at expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from metering.rating.alerts import AlertKind
from metering.rating.books import Books
from metering.rating.contracts import BudgetTerms, Customer
from metering.rating.money import ZERO, fmt
from schemas.event import from_micros, to_micros

HARD_CAP_REACHED = "hard_cap_reached"
CREDITS_EXHAUSTED = "credits_exhausted"

_STANDING = """
SELECT
    sumIf(billable_amount, period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC')) AS spent,
    sum(credits_applied) AS used,
    sum(granted) AS granted,
    sum(expired) AS expired,
    sumIf(hard_caps, period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC')) AS hard_caps
FROM customer_balances WHERE customer_id = %(c)s
"""
_ALERTS = """
SELECT kind, max(threshold), max(value), min(at), any(grant_id)
FROM alerts WHERE customer_id = %(c)s
    AND (grant_id IS NOT NULL OR period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC'))
GROUP BY alert_id, kind ORDER BY min(at), kind
"""


@dataclass(frozen=True)
class Standing:
    """What an entitlement check needs, from one read."""

    spent: Decimal
    """Billable amount this period: what counts toward the budget."""
    used: Decimal
    granted: Decimal
    expired: Decimal
    hard_cap_reached: bool
    prepaid: bool
    """On a tier that sells credits: usage is paid from them, so none left means stop."""

    @property
    def remaining(self) -> Decimal:
        return self.granted - self.used - self.expired

    @property
    def refusal(self) -> str | None:
        """Why a gateway should refuse this customer now (HTTP 402), or None."""
        if self.hard_cap_reached:
            return HARD_CAP_REACHED
        if self.prepaid and self.remaining <= ZERO:
            return CREDITS_EXHAUSTED
        return None


@dataclass(frozen=True)
class Balance:
    customer_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    standing: Standing
    budget: BudgetTerms | None
    alerts: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        s, budget = self.standing, self.budget
        return {
            "customer_id": self.customer_id,
            "currency": self.currency,
            "time_zone": "UTC",
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "spend": {
                "billable_amount": fmt(s.spent),
                "budget": None if budget is None else fmt(budget.limit),
                "hard_cap": budget is not None and budget.hard_cap,
                "remaining": None if budget is None else fmt(budget.limit - s.spent),
            },
            "credits": {
                "prepaid": s.prepaid,
                "granted": fmt(s.granted),
                "used": fmt(s.used),
                "expired": fmt(s.expired),
                "remaining": fmt(s.remaining),
            },
            "alerts": self.alerts,
        }


def standing(client: Client, books: Books, customer: Customer, now: datetime) -> Standing:
    now_us = to_micros(now)
    start_us, _ = customer.billing.period(now_us)
    row = client.query(_STANDING, parameters={"c": customer.id, "start": start_us}).first_item
    row = row or {}
    return Standing(
        spent=_money(row.get("spent")),
        used=_money(row.get("used")),
        granted=_money(row.get("granted")),
        expired=_money(row.get("expired")),
        hard_cap_reached=bool(row.get("hard_caps")),
        prepaid=books.prices.credit_values.get(customer.terms_at(now_us).tier) is not None,
    )


def balance(client: Client, books: Books, customer: Customer, now: datetime) -> Balance:
    now_us = to_micros(now)
    start_us, end_us = customer.billing.period(now_us)
    params = {"c": customer.id, "start": start_us}
    fired = {
        (row[0], fmt(row[1]), row[4]): {"at": row[3].isoformat(), "value": fmt(row[2])}
        for row in client.query(_ALERTS, parameters=params, tz_mode="aware").result_rows
    }
    budget = customer.terms_at(now_us).budget
    configured: list[tuple[str, str, str | None]] = []
    if budget is not None:
        soft = AlertKind.BUDGET_SOFT.value
        configured += [(soft, fmt(t), None) for t in budget.soft_thresholds]
        if budget.hard_cap:
            configured.append((AlertKind.BUDGET_HARD_CAP.value, fmt(budget.limit), None))
    alerts = [
        {"kind": kind, "threshold": threshold, "grant_id": grant, "fired": key in fired}
        | fired.get(key, {})
        for key in [*configured, *(k for k in fired if k not in configured)]
        for kind, threshold, grant in [key]
    ]
    return Balance(
        customer_id=customer.id,
        currency=books.currency,
        period_start=from_micros(start_us),
        period_end=from_micros(end_us),
        standing=standing(client, books, customer, now),
        budget=budget,
        alerts=alerts,
    )


def _money(value: Any) -> Decimal:
    return ZERO if value is None else Decimal(value)
