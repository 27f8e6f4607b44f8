"""An event's properties as prices, filters and aggregations read them."""

from __future__ import annotations

from schemas.event import UsageEvent


def property_of(ev: UsageEvent, name: str) -> str | None:
    """The `properties` map's value; for `region`, the event's region field where the map
    has none (usage v2 carries the region as a field of its own)."""
    value = ev.properties.get(name)
    return ev.region if value is None and name == "region" else value
