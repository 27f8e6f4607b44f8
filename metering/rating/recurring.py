"""Recurring meters (seats, storage, reserved GPUs): an event reports a level, not usage,
and the period is charged for the level it held, settled at period close.

`recurring: {aggregation: max | latest, rates: {dimension: rate per unit per period}}`.
A reading holds from its event time until the next (ties by event id); the level at
the start of a period is the last reading before it, else 0. `latest` charges the
time-weighted level: rate x sum(level x time it held) / period length. `max` charges
the highest level held, prorated by the share of the period. Where the contract or the
price changes inside the period, each part is settled on its own terms for its share
of the period. Rated lines of readings carry no amount; the settlement follows from
the readings alone, so it is order-independent, and settling again after a late
reading re-rates the period exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from metering.rating.loading import Rate, Spec
from metering.rating.money import CONTEXT


class RecurringSpec(Spec):
    aggregation: Literal["max", "latest"]
    rates: dict[str, Rate]
    """Per unit of level per whole billing period."""

    def build(self) -> Recurring:
        return Recurring(self.aggregation, dict(self.rates))


@dataclass(frozen=True, slots=True)
class Recurring:
    aggregation: str
    rates: Mapping[str, Decimal]
    kind = "recurring"

    def scaled(self, factor: Decimal) -> Recurring:
        rates = {d: CONTEXT.multiply(r, factor) for d, r in self.rates.items()}
        return Recurring(self.aggregation, rates)

    def level(self, readings: list[tuple[int, int]], start: int, end: int) -> Decimal:
        """The level charged over [start, end) from (time, level) readings in order:
        time-weighted (in units x microseconds) for `latest`, the highest for `max`."""
        held = _held(readings, start, end)
        if self.aggregation == "max":
            return Decimal(max((value for _, _, value in held), default=0))
        return Decimal(sum((b - a) * value for a, b, value in held))


@dataclass(frozen=True, slots=True)
class Reading:
    """A level an event reported: what settlement needs of a rated line."""

    timestamp_us: int
    event_id: str
    meter: str
    model: str
    mode: str
    quantities: Mapping[str, int]


def _held(readings: Iterable[tuple[int, int]], start: int, end: int) -> list[tuple[int, int, int]]:
    """(from, to, level) pieces covering [start, end): the level before the first reading
    inside is the last one before `start`, else 0."""
    pieces, at, level = [], start, 0
    for ts, value in readings:
        if ts >= end:
            break
        if ts <= start:
            level = value
            continue
        pieces.append((at, ts, level))
        at, level = ts, value
    pieces.append((at, end, level))
    return [(a, b, v) for a, b, v in pieces if b > a]
