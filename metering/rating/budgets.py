"""Per-customer spend limits per billing period.

Spend is the billable amount (what will be invoiced: after discount and prepaid
credits), so usage paid from credits does not consume the budget. Each soft threshold
and the hard cap alert once per period; rating itself never stops, the hard-cap alert is
the signal a gateway acts on (for example by answering 402).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from metering.rating.alerts import Alert, AlertKind, alert_id
from metering.rating.books import Books
from metering.rating.contracts import BudgetTerms
from metering.rating.money import HUNDRED, q18
from metering.rating.state import Budget, CustomerState
from schemas.event import to_micros

HARD = "hard"


def spend(
    customer_id: str,
    customer: CustomerState,
    terms: BudgetTerms,
    amount: Decimal,
    period_us: int,
    period_start: datetime,
    at: datetime,
) -> list[Alert]:
    budget = customer.budgets.get(period_us)
    if budget is None:
        budget = customer.budgets[period_us] = Budget()
    budget.spent += amount
    spent, limit = budget.spent, terms.limit
    alerts = []
    for threshold in terms.soft_thresholds:
        key = str(threshold)
        if key not in budget.fired and spent * HUNDRED >= threshold * limit:
            budget.fired.add(key)
            kind = AlertKind.BUDGET_SOFT
            alerts.append(
                Alert(
                    alert_id(customer_id, kind, period_us, threshold),
                    customer_id,
                    kind,
                    threshold,
                    q18(spent * HUNDRED / limit),
                    period_start,
                    at,
                )
            )
    if terms.hard_cap and HARD not in budget.fired and spent >= limit:
        budget.fired.add(HARD)
        kind = AlertKind.BUDGET_HARD_CAP
        alerts.append(
            Alert(
                alert_id(customer_id, kind, period_us),
                customer_id,
                kind,
                limit,
                spent,
                period_start,
                at,
            )
        )
    return alerts


def current_budgets(books: Books, at: datetime) -> list[tuple[str, Decimal, bool]]:
    """(customer, limit, hard cap) of every customer whose terms in force at `at` set a budget."""
    at_us = to_micros(at)
    return [
        (customer.id, terms.budget.limit, terms.budget.hard_cap)
        for customer in books.contracts.customers.values()
        if (terms := customer.terms_at(at_us)).budget is not None
    ]
