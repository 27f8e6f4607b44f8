"""A customer's standing now: spend this period against budget, prepaid credits left, the
state of every alert, and whether a gateway should let it keep going.

Everything is read from what the flow writes, in two round trips over small tables:
spend and credits drawn from the `spend_period` roll-up (a row per customer and billing
period, `sinks/migrations/011_spend_period.sql`), grants and lapses from `credit_grants`
and `credit_expiries`, and alerts from `alerts`, all keyed by customer first. So the
answer costs the same on ten rows or ten million, and is as fresh as the flow's
produce-to-queryable latency.

The flow decides; this only reads its decisions. A hard cap is reached when the flow
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
from metering.rating.contracts import Customer
from metering.rating.money import ZERO, fmt
from schemas.event import from_micros, to_micros

HARD_CAP_REACHED = "hard_cap_reached"
CREDITS_EXHAUSTED = "credits_exhausted"

_FIGURES = """
SELECT
    (SELECT sum(billable_amount) FROM spend_period WHERE customer_id = %(c)s
        AND period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC')) AS spent,
    (SELECT sum(credits_applied) FROM spend_period WHERE customer_id = %(c)s) AS used,
    (SELECT sum(amount) FROM credit_grants WHERE customer_id = %(c)s) AS granted,
    (SELECT count() FROM credit_grants WHERE customer_id = %(c)s) AS grants,
    (SELECT sum(amount) FROM credit_expiries WHERE customer_id = %(c)s) AS expired
"""
_ALERTS = """
SELECT kind, max(threshold), max(value), min(at), any(grant_id)
FROM alerts WHERE customer_id = %(c)s
    AND (grant_id IS NOT NULL OR period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC'))
GROUP BY alert_id, kind ORDER BY min(at), kind
"""


@dataclass(frozen=True)
class Balance:
    customer_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    spent: Decimal
    budget: Decimal | None
    hard_cap: bool
    prepaid: bool
    grants: int
    granted: Decimal
    used: Decimal
    expired: Decimal
    alerts: list[dict[str, Any]]

    @property
    def remaining(self) -> Decimal:
        return self.granted - self.used - self.expired

    @property
    def refusal(self) -> str | None:
        """Why a gateway should refuse this customer now (HTTP 402), or None."""
        if any(a["kind"] == AlertKind.BUDGET_HARD_CAP for a in self.alerts):
            return HARD_CAP_REACHED
        if self.prepaid and self.remaining <= ZERO:
            return CREDITS_EXHAUSTED
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "currency": self.currency,
            "time_zone": "UTC",
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "spend": {
                "billable_amount": fmt(self.spent),
                "budget": None if self.budget is None else fmt(self.budget),
                "hard_cap": self.hard_cap,
                "remaining": None if self.budget is None else fmt(self.budget - self.spent),
            },
            "credits": {
                "prepaid": self.prepaid,
                "grants": self.grants,
                "granted": fmt(self.granted),
                "used": fmt(self.used),
                "expired": fmt(self.expired),
                "remaining": fmt(self.remaining),
            },
            "alerts": self.alerts,
        }


def balance(client: Client, books: Books, customer: Customer, now: datetime) -> Balance:
    now_us = to_micros(now)
    start_us, end_us = customer.billing.period(now_us)
    terms = customer.terms_at(now_us)
    params = {"c": customer.id, "start": start_us}
    figures = client.query(_FIGURES, parameters=params).first_item or {}
    fired = {
        (row[0], fmt(row[1]), row[4]): {"at": row[3].isoformat(), "value": fmt(row[2])}
        for row in client.query(_ALERTS, parameters=params, tz_mode="aware").result_rows
    }
    budget = terms.budget
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
        spent=_money(figures["spent"]),
        budget=None if budget is None else budget.limit,
        hard_cap=budget is not None and budget.hard_cap,
        prepaid=books.prices.credit_values.get(terms.tier) is not None,
        grants=int(figures["grants"]),
        granted=_money(figures["granted"]),
        used=_money(figures["used"]),
        expired=_money(figures["expired"]),
        alerts=alerts,
    )


def _money(value: Any) -> Decimal:
    return ZERO if value is None else Decimal(value)
