"""Corrections: an event that names, in `corrects`, an earlier event of the same period
whose quantities it adjusts."""

from __future__ import annotations

from metering.rating.charges import Matrix
from metering.rating.recurring import Recurring
from metering.rating.resolve import Resolution
from metering.rating.state import CustomerState
from schemas.event import UsageEvent


def uncorrectable(
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
        rated = cs.rated((start, rid, dim))
        if rated + q < 0:
            return f"it would take {dim} of the period below zero ({rated} rated, correction {q})"
    return None
