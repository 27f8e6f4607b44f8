"""Each dimension's aggregation over a billing period, rated as the increment an event
makes to the period's aggregate.

`sum` rates the quantity sent, `count` 1 for the event. `max`, `latest` and
`unique_count` keep the period's aggregate in the customer's rating state (`Aggregate`,
keyed like the usage tallies by period, price resolution and dimension) and rate the
change the event makes to it: the new maximum less the old (0 when not raised); the
quantity of the event latest in event time (ties by event id) less the previous latest
one's (negative when it is lower; 0 for an event older than the latest); 1 for a value of
the dimension's property not seen before in the period, else 0. The increments
telescope: the rated quantities of a period add up to its final aggregate in any order of
arrival, so every price that is a function of the period's cumulative quantity (flat,
graduated, volume, packages, free units, allowances) charges F(aggregate), to the last
digit. Each price resolution aggregates apart (a price or contract version, a `where`
price), so a period priced in two spans bills each span's aggregate at its own price.

`unique_count` holds one 64-bit BLAKE2b hash per distinct value, not the value: two of
n values collide with probability about n^2 / 2^65 (1 in 370,000 at ten million values
in a period), and a collision counts them once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Literal

from metering.rating.properties import property_of
from metering.rating.state import Aggregate, CustomerState
from schemas.event import Rejection, RejectReason, UsageEvent

Aggregation = Literal["sum", "count", "max", "latest", "unique_count"]
HELD: frozenset[str] = frozenset({"max", "latest", "unique_count"})
"""Aggregations whose period aggregate is held in the rating state."""


@dataclass(frozen=True, slots=True)
class MeterAggregation:
    """How a meter's dimensions aggregate, for a meter with a dimension not summed."""

    meter: str
    kinds: Mapping[str, Aggregation]
    properties: Mapping[str, str]
    """unique_count dimension -> the property whose distinct values it counts."""

    def increments(
        self, cs: CustomerState, start: int, rid: str, ts_us: int, ev: UsageEvent
    ) -> UsageEvent | Rejection:
        """The event with its quantities replaced by the increments it makes to the
        period's aggregates (updated in `cs`), or why it cannot be aggregated (checked
        before any state changes)."""
        kinds = self.kinds
        if ev.corrects is not None and (
            held := sorted(d for d in ev.quantities if kinds.get(d, "sum") != "sum")
        ):
            detail = (
                f"meter {self.meter!r} aggregates {', '.join(f'{d} by {kinds[d]}' for d in held)}:"
                " a correction adjusts summed quantities only; send the usage again instead"
            )
            return Rejection(RejectReason.INVALID_CORRECTION, detail, ev.event_id, ev.customer_id)
        values = {}
        for dim, prop in self.properties.items():
            if dim not in ev.quantities:
                continue
            value = property_of(ev, prop)
            if value is None:
                detail = (
                    f"properties.{prop} is missing: dimension {dim!r} of meter {self.meter!r} "
                    "counts its distinct values"
                )
                return Rejection(RejectReason.INVALID_FIELD, detail, ev.event_id, ev.customer_id)
            values[dim] = value
        quantities = {}
        aggregates = cs.aggregates
        for dim, q in ev.quantities.items():
            kind = kinds.get(dim, "sum")
            if kind == "sum":
                quantities[dim] = q
                continue
            if kind == "count":
                quantities[dim] = 1
                continue
            key = (start, rid, dim)
            aggregate = aggregates.get(key)
            if aggregate is None:
                aggregate = aggregates[key] = Aggregate()
            if kind == "max":
                quantities[dim] = raised = max(0, q - aggregate.value)
                aggregate.value += raised
            elif kind == "latest":
                quantities[dim] = _latest(aggregate, (ts_us, ev.event_id), q)
            else:
                quantities[dim] = _unique(aggregate, values[dim])
        return replace(ev, quantities=quantities)


def _latest(aggregate: Aggregate, at: tuple[int, str], quantity: int) -> int:
    if aggregate.latest is not None and at <= aggregate.latest:
        return 0
    change = quantity - aggregate.value
    aggregate.value, aggregate.latest = quantity, at
    return change


def _unique(aggregate: Aggregate, value: str) -> int:
    digest = int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "little")
    if digest in aggregate.seen:
        return 0
    aggregate.seen.add(digest)
    aggregate.value += 1
    return 1
