"""The money of one event's quantities, as differences of quantized cumulative amounts
on the period's tallies: flat rates, tiered schedules (with their band fees and package
charges) and included allowances pooled across dimensions.

Every amount is the period's new cumulative amount minus the one before, so a period's
totals do not depend on the order events arrive in (see `metering.rating.money`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from metering.rating.contracts import ContractVersion
from metering.rating.money import STEP, ZERO, fmt, q18, q18_down
from metering.rating.periods import Proration
from metering.rating.resolve import Resolution
from metering.rating.state import CustomerState, Pool, Tally
from metering.rating.tiers import Kind, Schedule
from schemas.event import UsageEvent

Members = list[tuple[str, int, Decimal]]
"""A pool's dimensions in one event: dimension, quantity and gross amount."""

_UNPRICED = Schedule(Kind.FLAT, 1, (None,), (ZERO,))
"""A dimension its price does not name: rated at zero, its quantity kept."""


def flat(
    cs: CustomerState,
    schedules: Mapping[str, Schedule],
    rid: str,
    start: int,
    ev: UsageEvent,
) -> dict[str, Decimal]:
    """One rate per dimension on the period's cumulative quantity: no tiers, no proration.
    A unit price on the 1e-18 grid prices each quantity on its own (Q(F(after)) -
    Q(F(before)) is exactly quantity x unit); the period keeps only the quantity."""
    usage, quantities = cs.usage, cs.quantities
    amounts = {}
    for dim, q in ev.quantities.items():
        key = (start, rid, dim)
        schedule = schedules.get(dim, _UNPRICED)
        unit = schedule.unit
        if unit is not None:
            quantities[key] = quantities.get(key, 0) + q
            amounts[dim] = (q * unit).quantize(STEP) if unit else ZERO
            continue
        tally = usage.get(key)
        if tally is None:
            tally = usage[key] = Tally()
        after = tally.quantity + q
        new = (after * schedule.rates[0] / schedule.per).quantize(STEP)
        amounts[dim] = new - tally.amount
        tally.quantity, tally.amount = after, new
    return amounts


def tiered(
    cs: CustomerState,
    res: Resolution,
    terms: ContractVersion,
    start: int,
    end: int,
    ev: UsageEvent,
    charges: dict[str, Decimal],
    proration: Proration,
) -> tuple[dict[str, Decimal], dict[str, Decimal], tuple[str, ...]]:
    """Amounts, unit prices and tier notes of tiered schedules, prorated to the share of the
    period the price version covers; dimensions in an allowance's pool share its overage."""
    scale = proration.scale(start, end, res.rid, res.start_us, res.end_us)
    amounts: dict[str, Decimal] = {}
    unit_prices: dict[str, Decimal] = {}
    tiers: list[str] = []
    pooled: dict[int, Members] = {}
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
                breakdown(charges, schedule, before, after, scale)
        gross = new - tally.amount
        tally.quantity, tally.amount = after, new
        pool = res.pools.get(dim)
        if pool is None:
            amounts[dim] = gross
        else:
            pooled.setdefault(pool, []).append((dim, q, gross))
    for index, members in pooled.items():
        amounts |= allowance(cs, terms, index, start, end, members, tiers, proration)
    return {d: amounts[d] for d in ev.quantities}, unit_prices, tuple(tiers)


def breakdown(
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


def allowance(
    cs: CustomerState,
    terms: ContractVersion,
    index: int,
    start: int,
    end: int,
    members: Members,
    tiers: list[str],
    proration: Proration,
) -> dict[str, Decimal]:
    """Billable share (used - included) / used of the pool's gross amount, telescoped."""
    allowance = terms.allowances[index]
    key = (start, terms.id or "", index)
    pool = cs.pools.get(key)
    if pool is None:
        pool = cs.pools[key] = Pool()
    pool.quantity += sum(q for _, q, _ in members)
    pool.gross += sum((g for _, _, g in members), ZERO)
    scale = proration.scale(start, end, f"terms:{terms.id}", terms.start_us, terms.end_us)
    included = allowance.quantity * scale
    over = pool.quantity - included
    share = over / pool.quantity if over > 0 else ZERO
    new = q18(over * pool.gross / pool.quantity) if over > 0 else ZERO
    delta, pool.amount = new - pool.amount, new
    tiers.append(
        f"{allowance.meter} included {fmt(included)}: {pool.quantity} used in period, "
        f"billable share {fmt(q18(share))}"
    )
    return split(delta, members)


def split(delta: Decimal, members: Members) -> dict[str, Decimal]:
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
