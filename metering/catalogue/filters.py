"""Which events of a meter count: a meter's `filter` gives, per event property, the values
an event must have (every property listed must match one of its values; `region` is
also the event's region field).

An event of the meter that does not match is not usage of that meter by its own
definition, so it is never rated, not even at zero: rated rows are the billable ledger
every statement and total adds up. It is dead-lettered as `filtered_out`, the reason
naming the filter and the event's value, so it is accounted for like every record
(`meterflow reconcile` counts it), queryable by reason, and kept whole in the raw log.
"""

from __future__ import annotations

from metering.catalogue.records import MeterSpec
from metering.rating.properties import property_of
from schemas.event import UsageEvent


def filtered_out(name: str, meter: MeterSpec, ev: UsageEvent) -> str | None:
    """Why the event does not count for its meter, or None when it does."""
    for prop, allowed in sorted((meter.filter or {}).items()):
        value = property_of(ev, prop)
        if value not in allowed:
            has = "has none" if value is None else f"is {value!r}"
            return f"meter {name!r} counts events whose {prop} is one of {allowed}; this one {has}"
    return None
