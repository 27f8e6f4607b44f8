"""The billing maths of a usage statement: which period a request names, and the line
items and prorated allowances its rated rows add up to."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from typing import Any

from metering.rating.books import Books
from metering.rating.contracts import Customer
from metering.rating.money import CONTEXT, ZERO, q18
from metering.rating.periods import overlap
from metering.rating.totals import Totals
from reports.statement_model import DimensionUse, LineItem, Overage
from schemas.event import from_micros, to_micros

_QUOTED_PER = {"llm.tokens": "million", "gpu.time": "hour", "api.call": "thousand"}
"""The unit each meter's prices are quoted per in the shipped price book."""
_MONTH = re.compile(r"\d{4}-\d{2}")


def billing_period(books: Books, customer_id: str, period: str) -> tuple[datetime, datetime]:
    """The customer's billing period [start, end) for `period`: YYYY-MM names the period
    starting on that month's first day, an ISO date the period holding that day."""
    customer = known_customer(books, customer_id)
    month = _MONTH.fullmatch(period) is not None
    day = date.fromisoformat(f"{period}-01" if month else period)
    at = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_us, end_us = customer.billing.period(to_micros(at))
    start, end = from_micros(start_us), from_micros(end_us)
    if month and start.date() != day:
        raise ValueError(
            f"{customer_id}'s billing periods do not start on {day}; the one holding it runs "
            f"{start.date()} to {end.date()}: give a date in the period wanted"
        )
    return start, end


def known_customer(books: Books, customer_id: str) -> Customer:
    customer = books.contracts.get(customer_id)
    if customer is None:
        raise ValueError(f"customer {customer_id!r} is not in the contracts catalogue")
    return customer


def money_totals(row: Sequence[Any]) -> Totals:
    """Events, amount, discount, credits and billable, as the queries sum them."""
    return Totals(int(row[0]), *row[1:5])


def line_items(uses: Sequence[Sequence[Any]], money: Sequence[Sequence[Any]]) -> Iterable[LineItem]:
    """Dimensions summed over contract versions, under their meter, model and mode."""
    for meter, model, mode, *sums in money:
        per = _QUOTED_PER.get(meter, "unit")
        by_dimension: dict[str, tuple[int, Decimal]] = {}
        for u_meter, u_model, u_mode, _, dimension, quantity, amount in uses:
            if (u_meter, u_model, u_mode) == (meter, model, mode):
                q, a = by_dimension.get(dimension, (0, ZERO))
                by_dimension[dimension] = (q + int(quantity), a + amount)
        dimensions = tuple(DimensionUse(d, q, a, per) for d, (q, a) in sorted(by_dimension.items()))
        yield LineItem(meter, model, mode, dimensions, money_totals(sums))


def overages(
    customer: Customer, start_us: int, end_us: int, uses: Sequence[Sequence[Any]]
) -> Iterable[Overage]:
    for version in customer.versions:
        share = overlap(start_us, end_us, version.start_us, version.end_us)
        if not share or version.id is None:
            continue
        for allowance in version.allowances:
            pooled = [
                (int(quantity), amount)
                for meter, model, _, contract, dimension, quantity, amount in uses
                if contract == version.id and allowance.pools(meter, model, dimension)
            ]
            with localcontext(CONTEXT):
                included = q18(allowance.quantity * Decimal(share) / (end_us - start_us))
            yield Overage(
                allowance.meter,
                version.id,
                included,
                sum(q for q, _ in pooled),
                sum((a for _, a in pooled), ZERO),
            )
