"""The money of an event priced by a charge (`metering.rating.charges`) rather than by
its quantities: a recurring meter's reading, a matrix cell, or a charge on an amount the
event carries (percentage, transaction, dynamic)."""

from __future__ import annotations

from decimal import Decimal

from metering.rating.amounts import flat
from metering.rating.charges import Charge, Matrix
from metering.rating.money import ZERO, fmt, q18
from metering.rating.recurring import Recurring
from metering.rating.resolve import Resolution
from metering.rating.state import Carried, CustomerState
from schemas.event import UsageEvent


def charge_amounts(
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
        amounts = flat(cs, schedules, f"{res.rid}|{label}", start, ev)
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
