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
from metering.rating.books import Books
from metering.rating.budgets import spend
from metering.rating.charges import Charge, Matrix
from metering.rating.closing import close_period, recurring_models
from metering.rating.commitments import PeriodLine
from metering.rating.contracts import ContractVersion, Customer
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
from metering.rating.money import CONTEXT, STEP, ZERO, fmt, q18, q18_down
from metering.rating.periods import overlap
from metering.rating.recurring import Reading, Recurring
from metering.rating.resolve import Resolution, Resolver
from metering.rating.state import Carried, CustomerState, Discount, Pool, RatingState, Tally
from metering.rating.tiers import ONE, Schedule
from metering.rating.totals import Totals
from schemas.event import Rejection, RejectReason, UsageEvent, from_micros, to_micros

_NO_TIERS: tuple[str, ...] = ()
_Members = list[tuple[str, int, Decimal]]


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
        self._recurring_models = recurring_models(books)
        self._periods: dict[str, tuple[int, int, datetime]] = {}
        self._scales: dict[tuple[int, str], Decimal] = {}

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
        res = self._resolver.price(terms, ev.meter, ev.model, ev.mode, ts_us)
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
        if ev.corrects is not None:
            problem = _uncorrectable(cs, res, start, ev, ev.corrects)
            if problem is not None:
                return Rejection(
                    RejectReason.INVALID_CORRECTION, problem, ev.event_id, ev.customer_id
                )
            cs.corrected[start, ev.corrects] = ev.event_id
        charges: dict[str, Decimal] = {}
        if res.charge is not None:
            carried = self._carried(cs, res, start, ev, res.charge, charges)
            if isinstance(carried, str):
                return Rejection(RejectReason.INVALID_FIELD, carried, ev.event_id, ev.customer_id)
            amounts, unit_prices, tiers = carried
        elif res.simple:
            amounts = self._flat(cs, res.schedules, res.rid, start, ev)
            unit_prices = {d: res.unit_prices.get(d, ZERO) for d in ev.quantities}
            tiers = _NO_TIERS
        else:
            amounts, unit_prices, tiers = self._tiered(cs, res, terms, start, end, ev, charges)
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

    def _carried(
        self,
        cs: CustomerState,
        res: Resolution,
        start: int,
        ev: UsageEvent,
        charge: Charge,
        charges: dict[str, Decimal],
    ) -> tuple[dict[str, Decimal], dict[str, Decimal], tuple[str, ...]] | str:
        """A price on what the event carries; a string says why the event cannot be rated
        (checked before any state changes)."""
        if isinstance(charge, Recurring):
            note = f"{charge.kind} {charge.aggregation}: settled at period close"
            return dict.fromkeys(ev.quantities, ZERO), dict.fromkeys(ev.quantities, ZERO), (note,)
        if isinstance(charge, Matrix):
            picked = charge.pick(ev)
            if isinstance(picked, str):
                return picked
            label, schedules = picked
            amounts = self._flat(cs, schedules, f"{res.rid}|{label}", start, ev)
            unit_prices = {
                d: ZERO if (s := schedules.get(d)) is None else q18(s.rates[0] / s.per)
                for d in ev.quantities
            }
            return amounts, unit_prices, (f"matrix {label}",)
        value = charge.amount.read(ev)
        if isinstance(value, str):
            return value
        tally = cs.carried.get((start, res.rid))
        if tally is None:
            tally = cs.carried[start, res.rid] = Carried()
        parts = charge.charge(tally, value)
        charges.update((kind, part) for kind, part in parts.items() if part)
        on = charge.amount.dimension or min(ev.quantities)
        amounts = dict.fromkeys(ev.quantities, ZERO)
        amounts[on] = sum(parts.values(), ZERO)
        return amounts, dict.fromkeys(ev.quantities, ZERO), (f"{charge.kind} of {fmt(value)}",)

    def _flat(
        self,
        cs: CustomerState,
        schedules: Mapping[str, Schedule],
        rid: str,
        start: int,
        ev: UsageEvent,
    ) -> dict[str, Decimal]:
        usage = cs.usage
        amounts = {}
        for dim, q in ev.quantities.items():
            key = (start, rid, dim)
            tally = usage.get(key)
            if tally is None:
                tally = usage[key] = Tally()
            after = tally.quantity + q
            schedule = schedules.get(dim)
            new = (
                ZERO
                if schedule is None
                else (after * schedule.rates[0] / schedule.per).quantize(STEP)
            )
            amounts[dim] = new - tally.amount
            tally.quantity, tally.amount = after, new
        return amounts

    def _tiered(
        self,
        cs: CustomerState,
        res: Resolution,
        terms: ContractVersion,
        start: int,
        end: int,
        ev: UsageEvent,
        charges: dict[str, Decimal],
    ) -> tuple[dict[str, Decimal], dict[str, Decimal], tuple[str, ...]]:
        scale = self._scale(start, end, res.rid, res.start_us, res.end_us)
        amounts: dict[str, Decimal] = {}
        unit_prices: dict[str, Decimal] = {}
        tiers: list[str] = []
        pooled: dict[int, _Members] = {}
        for dim, q in ev.quantities.items():
            tally = cs.usage.get((start, res.rid, dim))
            if tally is None:
                tally = cs.usage[start, res.rid, dim] = Tally()
            before, after = tally.quantity, tally.quantity + q
            schedule = res.schedules.get(dim)
            if schedule is None:
                new, unit_prices[dim] = ZERO, ZERO
            else:
                new = q18(schedule.price(after, scale))
                unit_prices[dim] = schedule.unit_price(after, scale)
                tiers += schedule.describe(dim, before, after, scale)
                if schedule.packaged or any(schedule.fees):
                    _breakdown(charges, schedule, before, after, scale)
            gross = new - tally.amount
            tally.quantity, tally.amount = after, new
            pool = res.pools.get(dim)
            if pool is None:
                amounts[dim] = gross
            else:
                pooled.setdefault(pool, []).append((dim, q, gross))
        for index, members in pooled.items():
            amounts |= self._allowance(cs, terms, index, start, end, members, tiers)
        return {d: amounts[d] for d in ev.quantities}, unit_prices, tuple(tiers)

    def _allowance(
        self,
        cs: CustomerState,
        terms: ContractVersion,
        index: int,
        start: int,
        end: int,
        members: _Members,
        tiers: list[str],
    ) -> dict[str, Decimal]:
        """Billable share (used - included) / used of the pool's gross amount, telescoped."""
        allowance = terms.allowances[index]
        key = (start, terms.id or "", index)
        pool = cs.pools.get(key)
        if pool is None:
            pool = cs.pools[key] = Pool()
        pool.quantity += sum(q for _, q, _ in members)
        pool.gross += sum((g for _, _, g in members), ZERO)
        scale = self._scale(start, end, f"terms:{terms.id}", terms.start_us, terms.end_us)
        included = allowance.quantity * scale
        over = pool.quantity - included
        share = over / pool.quantity if over > 0 else ZERO
        new = q18(over * pool.gross / pool.quantity) if over > 0 else ZERO
        delta, pool.amount = new - pool.amount, new
        tiers.append(
            f"{allowance.meter} included {fmt(included)}: {pool.quantity} used in period, "
            f"billable share {fmt(q18(share))}"
        )
        return _split(delta, members)

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
            start, end = customer.billing.period(ts_us)
            cached = self._periods[customer.id] = (start, end, from_micros(start))
        return cached

    def _scale(self, start: int, end: int, key: str, seg_start: int, seg_end: int) -> Decimal:
        """The share of the period [start, end) that a segment covers, for proration."""
        if seg_start <= start and seg_end >= end:
            return ONE
        scale = self._scales.get((start, key))
        if scale is None:
            scale = self._scales[start, key] = Decimal(overlap(start, end, seg_start, seg_end)) / (
                end - start
            )
        return scale


def _uncorrectable(
    cs: CustomerState, res: Resolution, start: int, ev: UsageEvent, original: str
) -> str | None:
    """Why a correction cannot apply: a second correction of the same event, a charge
    per transaction, or a dimension's period total that would fall below zero."""
    if (done := cs.corrected.get((start, original))) is not None:
        return f"event {original!r} was already corrected by {done!r} in this period"
    rid = res.rid
    if isinstance(res.charge, Matrix):
        picked = res.charge.pick(ev)
        if isinstance(picked, str):
            return picked
        rid = f"{rid}|{picked[0]}"
    elif isinstance(res.charge, Recurring):
        return "a recurring meter reports levels: send a new reading instead of a correction"
    elif res.charge is not None:
        return f"a {res.charge.kind} charge is per transaction: it cannot be corrected by quantity"
    for dim, q in ev.quantities.items():
        tally = cs.usage.get((start, rid, dim))
        rated = 0 if tally is None else tally.quantity
        if rated + q < 0:
            return f"it would take {dim} of the period below zero ({rated} rated, correction {q})"
    return None


def _breakdown(
    charges: dict[str, Decimal], schedule: Schedule, before: int, after: int, scale: Decimal
) -> None:
    """Band fees and package charges of the units (before, after], telescoped like amounts."""
    units_before, fees_before = schedule.split(before, scale)
    units_after, fees_after = schedule.split(after, scale)
    parts = {"band_fee": q18(fees_after) - q18(fees_before)}
    if schedule.packaged:
        parts["package"] = q18(units_after) - q18(units_before)
    for kind, part in parts.items():
        if part:
            charges[kind] = charges.get(kind, ZERO) + part


def _split(delta: Decimal, members: _Members) -> dict[str, Decimal]:
    """Share a pool's amount among the event's dimensions by their gross amounts (by
    quantity where those are not all positive), rounding down; the last takes the rest."""
    weights = [g for _, _, g in members]
    if min(weights) < 0 or not sum(weights):
        weights = [Decimal(q) for _, q, _ in members]
    total = sum(weights, ZERO)
    out, left = {}, delta
    for (dim, _, _), weight in zip(members[:-1], weights, strict=False):
        share = q18_down(delta * weight / total) if total else ZERO
        out[dim], left = share, left - share
    out[members[-1][0]] = left
    return out


def _unknown_customer(customer_id: str, event_id: str) -> Rejection:
    return Rejection(
        RejectReason.UNKNOWN_CUSTOMER,
        f"customer {customer_id!r} is not in the contracts catalogue",
        event_id,
        customer_id,
    )
