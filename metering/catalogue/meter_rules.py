"""What a meter's definition allows the prices and allowances of its usage: the checks
that keep a period's total exact for dimensions not summed and prices that depend on
event properties."""

from __future__ import annotations

from metering.catalogue.records import MeterSpec
from metering.rating.aggregation import HELD
from metering.rating.pricebook import PriceSpec, PricingSpec

_EXACT_FORMS = ("rates", "graduated", "volume")


def pricing_problem(name: str, meter: MeterSpec, pricing: PricingSpec) -> str | None:
    """Why a price or contract rate cannot price this meter, if it cannot. A dimension
    aggregated by max, latest or unique_count is rated by increments of the period's
    aggregate, which only a price of the period's cumulative quantity turns into an exact
    total; the charge forms price each event's own amount or level instead."""
    held = sorted(d for d, s in meter.dimensions.items() if s.aggregation in HELD)
    form = next((f for f in ("percentage", "dynamic", "matrix", "recurring")
                 if getattr(pricing, f) is not None), None)  # fmt: skip
    if held and form is not None:
        kinds = ", ".join(f"{d} by {meter.dimensions[d].aggregation}" for d in held)
        return (
            f"meter {name!r} aggregates {kinds}: price it with {', '.join(_EXACT_FORMS)}; "
            f"a {form} price is not a function of the period's aggregate"
        )
    if isinstance(pricing, PriceSpec) and pricing.where is not None:
        by = sorted(meter.price_by or [])
        if sorted(pricing.where) != by:
            allowed = f"price_by {by}" if by else "no price_by"
            return (
                f"where names {sorted(pricing.where)}, but meter {name!r} has {allowed}: "
                "a property price names exactly the meter's price_by properties"
            )
    return None


def allowance_problem(name: str, meter: MeterSpec, dimensions: set[str]) -> str | None:
    """Why an allowance cannot pool these dimensions: a pool adds up the quantities of
    its dimensions, so it pools dimensions of one aggregation."""
    kinds = {meter.dimensions[d].aggregation for d in dimensions if d in meter.dimensions}
    if len(kinds) > 1 and kinds & HELD:
        each = ", ".join(f"{d} by {meter.dimensions[d].aggregation}" for d in sorted(dimensions))
        return (
            f"it pools {each} of meter {name!r}: an allowance pools dimensions of one aggregation"
        )
    return None
