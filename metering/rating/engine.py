"""The rating engine: usage events in; rated lines, rejections and alerts out.

Pure and deterministic: everything it knows is in the books and the `RatingState`
passed in, all arithmetic runs in `money.CONTEXT`, and every amount is a difference of
quantized cumulative amounts (see `metering.rating.money`), so a period's totals are the
same to the last digit in any order of arrival and after replay from a snapshot.
Credits and budget alerts follow arrival order, as prepaid balances do in reality.
Deduplication happens upstream: every event passed in is rated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, localcontext

from metering.rating.alerts import Alert
from metering.rating.amounts import flat, tiered
from metering.rating.books import Books
from metering.rating.budgets import spend
from metering.rating.charge_amounts import charge_amounts
from metering.rating.closing import close_period, recurring_models
from metering.rating.commitments import PeriodLine
from metering.rating.contracts import ContractVersion, Customer
from metering.rating.corrections import uncorrectable
from metering.rating.credits import (
    CreditExpiry,
    CreditGrant,
    add_grant,
    credit_alerts,
    draw,
    expire,
    low_balance_alert,
)
from metering.rating.lines import Fee, RatedLine, RatingResult
from metering.rating.money import CONTEXT, STEP, ZERO, q18
from metering.rating.periods import Billing, Proration, overlap
from metering.rating.property_prices import UNLISTED
from metering.rating.recurring import Reading
from metering.rating.resolve import Resolution, Resolver
from metering.rating.state import CustomerState, Discount, RatingState, Tally
from metering.rating.tiers import ONE
from metering.rating.totals import Totals
from schemas.event import Rejection, RejectReason, UsageEvent, from_micros, to_micros

_NO_TIERS: tuple[str, ...] = ()


class RatingEngine:
    """Rates events against one set of books; holds only caches derived from them."""

    def __init__(self, books: Books):
        self.books = books
        self.currency = books.currency
        self._customers = books.contracts.customers
        self._models = books.prices.models
        self._credit_values = {
            tier: value or ONE for tier, value in books.prices.credit_values.items()
        }
        self._resolver = Resolver(books)
        self._meters = books.meters
        self._by_property = books.prices.by_property
        self._priced_by = self._by_property.names
        self._recurring_models = recurring_models(books)
        self._periods: dict[str, tuple[int, int, datetime]] = {}
        self._billed: dict[Billing, tuple[int, int, datetime]] = {}
        """The last period found per billing, shared by the customers billed alike."""
        self._proration = Proration()

    def rate_batch(self, state: RatingState, events: Sequence[UsageEvent]) -> RatingResult:
        """Rate events in order, updating `state`; the hot path of the dataflow."""
        result = RatingResult()
        with localcontext(CONTEXT):
            for event in events:
                rated = self._rate(state, event, result.alerts)
                if isinstance(rated, RatedLine):
                    result.lines.append(rated)
                else:
                    result.rejections.append(rated)
        return result

    def apply_grant(self, state: RatingState, grant: CreditGrant) -> Rejection | None:
        """Add a prepaid credit grant; a replayed grant (same id) changes nothing."""
        customer = self._customers.get(grant.customer_id)
        if customer is None:
            return _unknown_customer(grant.customer_id, grant.grant_id)
        with localcontext(CONTEXT):
            terms = customer.terms_at(to_micros(grant.effective_at))
            value = self._credit_values.get(terms.tier, ONE)
            add_grant(state.customer(customer.id), grant, value, terms.credits.low_balance)
        if grant.expires_at is not None:
            state.lapse_us = min(state.lapse_us, to_micros(grant.expires_at))
        return None

    def lapse_due(self, state: RatingState, watermark_us: int) -> bool:
        """Whether a grant expires at or before the watermark and has not lapsed yet: the
        caller lapses it there, at that place in its order (`expire`)."""
        return watermark_us >= state.lapse_us

    def grant_amount(self, grant: CreditGrant) -> Decimal:
        """What a known customer's grant is worth in currency, at its tier's credit value."""
        terms = self._customers[grant.customer_id].terms_at(to_micros(grant.effective_at))
        return q18(grant.credits * self._credit_values.get(terms.tier, ONE))

    def expire(self, state: RatingState, now: datetime) -> tuple[list[CreditExpiry], list[Alert]]:
        """Lapse grants whose expiry is at or before `now`, one record per grant, once; a
        lapse that takes a balance under its low-balance line raises that alert, dated at
        the expiry, rather than at the next draw."""
        now_us = to_micros(now)
        expiries: list[CreditExpiry] = []
        alerts: list[Alert] = []
        with localcontext(CONTEXT):
            for customer_id, cs in state.customers.items():
                lapsed = expire(customer_id, cs, now_us)
                customer = self._customers.get(customer_id)
                if not lapsed or customer is None:
                    continue
                expiries += lapsed
                at = max(record.expires_at for record in lapsed)
                at_us = to_micros(at)
                terms = customer.terms_at(at_us)
                value = self._credit_values.get(terms.tier, ONE)
                _, _, period_start = self._period(customer, at_us)
                alerts += low_balance_alert(
                    customer_id, cs, terms.credits, value, at_us, period_start, at
                )
        state.lapse_us = state.next_expiry_us()
        return expiries, alerts

    def period_fees(self, customer_id: str, period_start: datetime) -> list[Fee]:
        """Base fees of the period starting at `period_start`, prorated per contract version."""
        customer = self._customers.get(customer_id)
        if customer is None:
            return []
        start, end = customer.billing.period(to_micros(period_start))
        with localcontext(CONTEXT):
            return [
                Fee(
                    customer_id,
                    from_micros(start),
                    str(v.id),
                    q18(v.base_fee * share / (end - start)),
                )
                for v in customer.versions
                if v.base_fee and (share := overlap(start, end, v.start_us, v.end_us))
            ]

    def reads_level(self, meter: str, model: str) -> bool:
        """Whether some price of this meter and model is a recurring meter's: its lines are
        readings for `close_period`."""
        return (meter, model) in self._recurring_models or (meter, "*") in self._recurring_models

    def close_period(
        self,
        customer_id: str,
        period_start: datetime,
        usage: Mapping[str | None, Totals],
        readings: Iterable[Reading] = (),
    ) -> list[PeriodLine]:
        """The lines of a closed period (see `metering.rating.closing`)."""
        customer = self._customers.get(customer_id)
        if customer is None:
            return []
        start, end = customer.billing.period(to_micros(period_start))
        with localcontext(CONTEXT):
            return close_period(self._resolver, customer, start, end, usage, readings)

    def _rate(
        self, state: RatingState, ev: UsageEvent, alerts: list[Alert]
    ) -> RatedLine | Rejection:
        customer = self._customers.get(ev.customer_id)
        if customer is None:
            return _unknown_customer(ev.customer_id, ev.event_id)
        if (ev.meter, ev.model) not in self._models:
            return Rejection(
                RejectReason.UNKNOWN_MODEL,
                f"model {ev.model!r} is not in the price book for meter {ev.meter!r}",
                ev.event_id,
                ev.customer_id,
            )
        ts_us = to_micros(ev.timestamp)
        terms = customer.terms_at(ts_us)
        values = self._by_property.values(ev) if ev.meter in self._priced_by else UNLISTED
        res = self._resolver.price(terms, ev.meter, ev.model, ev.mode, ts_us, values)
        if res is None:
            return Rejection(
                RejectReason.UNKNOWN_MODEL,
                f"no price for meter {ev.meter!r} model {ev.model!r} in {ev.mode} mode "
                f"at {ev.timestamp.isoformat()}",
                ev.event_id,
                ev.customer_id,
            )
        start, end, period_start = self._period(customer, ts_us)
        cs = state.customer(customer.id)
        aggregation = self._meters.get(ev.meter)
        if aggregation is not None:
            increments = aggregation.increments(cs, start, res.rid, ts_us, ev)
            if isinstance(increments, Rejection):
                return increments
            ev = increments
        if ev.corrects is not None:
            problem = uncorrectable(cs, res, start, ev, ev.corrects)
            if problem is not None:
                return Rejection(
                    RejectReason.INVALID_CORRECTION, problem, ev.event_id, ev.customer_id
                )
            cs.corrected[start, ev.corrects] = ev.event_id
        charges: dict[str, Decimal] = {}
        if res.charge is not None:
            carried = charge_amounts(cs, res, start, ev, res.charge, charges)
            if isinstance(carried, str):
                return Rejection(RejectReason.INVALID_FIELD, carried, ev.event_id, ev.customer_id)
            amounts, unit_prices, tiers = carried
        elif res.simple:
            amounts = flat(cs, res.schedules, res.rid, start, ev)
            unit_prices = {d: res.unit_prices.get(d, ZERO) for d in ev.quantities}
            tiers = _NO_TIERS
        else:
            amounts, unit_prices, tiers = tiered(
                cs, res, terms, start, end, ev, charges, self._proration
            )
        amount = sum(amounts.values(), ZERO)
        discount = self._discount(cs, res, terms, start, amount)
        revenue = amount - discount
        cost, cost_version = self._cost(cs, ev, start, ts_us)
        credits = ZERO
        if cs.grants and revenue > 0:
            credits, used = draw(cs, revenue, ts_us)
            if used:
                value = self._credit_values.get(terms.tier, ONE)
                alerts += credit_alerts(
                    customer.id, cs, used, terms.credits, value, ts_us, period_start, ev.timestamp
                )
        billable = revenue - credits
        if res.where is not None:
            tiers = (res.where, *tiers)
        if ev.corrects is not None:
            tiers = (*tiers, f"corrects {ev.corrects}")
        if terms.budget is not None:
            alerts += spend(
                customer.id, cs, terms.budget, billable, start, period_start, ev.timestamp
            )
        return RatedLine(
            ev.event_id,
            ev.customer_id,
            ev.timestamp,
            period_start,
            ev.meter,
            ev.model,
            ev.provider,
            ev.mode,
            ev.project_id,
            ev.feature,
            ev.quantities,
            unit_prices,
            amounts,
            tiers,
            amount,
            discount,
            credits,
            billable,
            cost,
            revenue - cost,
            self.currency,
            res.price_version,
            terms.id,
            cost_version,
            charges,
            ev.corrects,
        )

    def _discount(
        self,
        cs: CustomerState,
        res: Resolution,
        terms: ContractVersion,
        start: int,
        amount: Decimal,
    ) -> Decimal:
        if not res.discountable or not terms.discount:
            return ZERO
        key = (start, terms.id or "")
        tally = cs.discounts.get(key)
        if tally is None:
            tally = cs.discounts[key] = Discount()
        tally.base += amount
        new = q18(tally.base * terms.discount)
        delta, tally.discount = new - tally.discount, new
        return delta

    def _cost(
        self, cs: CustomerState, ev: UsageEvent, start: int, ts_us: int
    ) -> tuple[Decimal, str | None]:
        found = self._resolver.cost(ev.meter, ev.model, ev.mode, ts_us)
        if found is None:
            return ZERO, None
        costs, total = cs.costs, ZERO
        for dim, q in ev.quantities.items():
            schedule = found.schedules.get(dim)
            if schedule is None:
                continue
            unit = schedule.unit
            if unit is not None:
                total += (q * unit).quantize(STEP)
                continue
            key = (start, found.cid, dim)
            tally = costs.get(key)
            if tally is None:
                tally = costs[key] = Tally()
            after = tally.quantity + q
            new = (after * schedule.rates[0] / schedule.per).quantize(STEP)
            total += new - tally.amount
            tally.quantity, tally.amount = after, new
        return total, found.version

    def period_bounds(self, customer_id: str, ts_us: int) -> tuple[int, int]:
        """[start, end) in microseconds of the known customer's billing period holding `ts_us`."""
        start, end, _ = self._period(self._customers[customer_id], ts_us)
        return start, end

    def _period(self, customer: Customer, ts_us: int) -> tuple[int, int, datetime]:
        cached = self._periods.get(customer.id)
        if cached is None or not cached[0] <= ts_us < cached[1]:
            cached = self._periods[customer.id] = self._billed_period(customer.billing, ts_us)
        return cached

    def _billed_period(self, billing: Billing, ts_us: int) -> tuple[int, int, datetime]:
        cached = self._billed.get(billing)
        if cached is None or not cached[0] <= ts_us < cached[1]:
            start, end = billing.period(ts_us)
            cached = self._billed[billing] = (start, end, from_micros(start))
        return cached


def _unknown_customer(customer_id: str, event_id: str) -> Rejection:
    return Rejection(
        RejectReason.UNKNOWN_CUSTOMER,
        f"customer {customer_id!r} is not in the contracts catalogue",
        event_id,
        customer_id,
    )
