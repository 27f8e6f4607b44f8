"""Prices that depend on event properties: a meter's `price_by` names them, a price of
the book gives `where: {region: eu-west}` for the events it is for, and a price without
`where` is the default for every other value (or an event without the property).

Which price applies is looked up per tier like any price (the customer's tier, then the
default tier), a `where` price first and the default second within each, then mode. The
event's value comes from `properties` (`region` also from the event's region field).
Values no price names all resolve as one (`UNLISTED`), so the price resolution cache
holds one entry per listed value, whatever producers send. Each `where` price tallies
and aggregates apart, and the rated line's `tiers` say which priced it
(`where region=eu-west`, or `where region: default`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from metering.rating.properties import property_of
from schemas.event import UsageEvent

Values = tuple[str, ...]
"""A price's `where` values, or an event's, in the order of the sorted property names."""
UNLISTED: Values = ()


def where_values(where: Mapping[str, str] | None) -> Values:
    return UNLISTED if not where else tuple(where[name] for name in sorted(where))


def where_label(where: Mapping[str, str]) -> str:
    return ",".join(f"{name}={where[name]}" for name in sorted(where))


@dataclass(frozen=True, slots=True)
class PropertyPrices:
    """Meter -> the properties its prices name, and the values they name."""

    names: Mapping[str, tuple[str, ...]]
    listed: Mapping[str, frozenset[Values]]

    @classmethod
    def of(cls, wheres: Iterable[tuple[str, Mapping[str, str]]]) -> PropertyPrices:
        """From (meter, where) of every price that has a `where`."""
        names: dict[str, tuple[str, ...]] = {}
        listed: dict[str, set[Values]] = {}
        for meter, where in wheres:
            names.setdefault(meter, tuple(sorted(where)))
            listed.setdefault(meter, set()).add(where_values(where))
        return cls(names, {meter: frozenset(values) for meter, values in listed.items()})

    def values(self, ev: UsageEvent) -> Values:
        """The event's values of its meter's `where` properties, or `UNLISTED`."""
        names = self.names.get(ev.meter)
        if names is None:
            return UNLISTED
        values = tuple(property_of(ev, name) or "" for name in names)
        return values if values in self.listed[ev.meter] else UNLISTED

    def note(self, meter: str, where: Mapping[str, str] | None) -> str | None:
        """What the rated line says priced it, for a meter whose prices name properties."""
        names = self.names.get(meter)
        if names is None:
            return None
        return f"where {where_label(where)}" if where else f"where {','.join(names)}: default"
