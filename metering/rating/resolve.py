"""Which price and cost apply to an event, worked out once per contract version, meter,
model and mode and cached, so the hot path does dictionary lookups only.

A `Resolution` is constant over [start_us, end_us): one contract version and one price
entry. Its `rid` names it in the state's accumulator keys, so usage under different
prices or terms never shares a tally (split-period rating), and it is built from
catalogue ids only, so it is the same after a restart with the same books.

What a resolution prices by is worked out once per set of terms that decide it (tier or
custom rate, allowances, validity window), so contract versions on the same plan share
that work; each version still gets its own `rid` and `price_version`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from metering.rating.books import Books
from metering.rating.charges import Charge
from metering.rating.contracts import ContractVersion
from metering.rating.money import CONTEXT, q18
from metering.rating.pricebook import PriceEntry
from metering.rating.property_prices import UNLISTED, Values, where_label
from metering.rating.tiers import Schedule
from metering.rating.versions import Span, find
from schemas.meters import METER_DIMENSIONS


@dataclass(frozen=True, slots=True)
class Resolution:
    rid: str
    start_us: int
    end_us: int
    price_version: str
    schedules: Mapping[str, Schedule]
    discountable: bool
    """List prices take the contract discount; custom rates are already net."""
    pools: Mapping[str, int]
    """Dimension -> index of the contract allowance it draws on."""
    simple: bool
    """Every schedule flat and no allowance: the fast path."""
    unit_prices: Mapping[str, Decimal]
    """Per base unit, for flat schedules; tiered ones depend on the cumulative quantity."""
    charge: Charge | None = None
    """A price on what the event carries (percentage, dynamic, matrix) instead of schedules."""
    where: str | None = None
    """Which property price priced it, for a meter priced by properties (the line says so)."""
    label: str = ""
    """That property price in the `rid` (`region=eu-west`), so each tallies apart."""


@dataclass(frozen=True, slots=True)
class CostResolution:
    cid: str
    version: str
    schedules: Mapping[str, Schedule]


class Resolver:
    def __init__(self, books: Books):
        self._books = books
        self._prices: dict[tuple[str | None, str, str, str, Values], list[Span[Resolution]]] = {}
        self._shared: dict[Hashable, list[Span[Resolution]]] = {}
        self._costs: dict[tuple[str, str, str], list[Span[CostResolution]]] = {}

    def price(
        self,
        terms: ContractVersion,
        meter: str,
        model: str,
        mode: str,
        ts_us: int,
        values: Values = UNLISTED,
    ) -> Resolution | None:
        """`values`: the event's property values its meter's prices name
        (`metering.rating.property_prices`)."""
        key = (terms.id, meter, model, mode, values)
        spans = self._prices.get(key)
        if spans is None:
            spans = self._prices[key] = self._own_spans(terms, meter, model, mode, values)
        return find(spans, ts_us)

    def _own_spans(
        self, terms: ContractVersion, meter: str, model: str, mode: str, values: Values
    ) -> list[Span[Resolution]]:
        """The terms' resolutions, relabelled from those of any terms that price alike."""
        custom = terms.custom_rate(meter, model, mode)
        if custom is not None and custom.charge is not None:
            return self._price_spans(terms, custom, meter, model, mode, values)  # maps
        rates: Hashable = terms.tier if custom is None else tuple(custom.schedules.items())
        key = (meter, model, mode, values, rates, terms.allowances, terms.start_us, terms.end_us)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = self._price_spans(
                terms, custom, meter, model, mode, values
            )
        out = []
        for span in shared:
            found = span.value
            version = found.price_version if custom is None else custom.version
            rid = _rid(terms, version, span.start_us, meter, model, mode, found.label)
            resolution = replace(found, rid=rid, price_version=version)
            out.append(Span(span.start_us, span.end_us, resolution))
        return out

    def cost(self, meter: str, model: str, mode: str, ts_us: int) -> CostResolution | None:
        key = (meter, model, mode)
        spans = self._costs.get(key)
        if spans is None:
            spans = self._costs[key] = [
                Span(
                    s.start_us,
                    s.end_us,
                    CostResolution(
                        f"{s.value.version}|{meter}|{model}|{mode}",
                        s.value.version,
                        s.value.schedules,
                    ),
                )
                for s in self._books.costs.spans(meter, model, mode)
            ]
        return find(spans, ts_us)

    def _price_spans(
        self,
        terms: ContractVersion,
        custom: PriceEntry | None,
        meter: str,
        model: str,
        mode: str,
        values: Values,
    ) -> list[Span[Resolution]]:
        if custom is not None:
            entries = [Span(terms.start_us, terms.end_us, custom)]
        else:
            entries = self._books.prices.spans(meter, model, mode, terms.tier, values)
        out = []
        for span in entries:
            start, end = max(span.start_us, terms.start_us), min(span.end_us, terms.end_us)
            if start >= end:
                continue
            schedules = span.value.schedules
            charge = span.value.charge
            simple = charge is None and all(s.flat for s in schedules.values())
            pools = {
                d: i
                for d in METER_DIMENSIONS.get(meter, schedules)
                if (i := _pool(terms, meter, model, d)) is not None
            }
            where = span.value.where
            label = "" if where is None else where_label(where)
            note = None if custom is not None else self._books.prices.by_property.note(meter, where)
            resolution = Resolution(
                rid=_rid(terms, span.value.version, start, meter, model, mode, label),
                start_us=start,
                end_us=end,
                price_version=span.value.version,
                schedules=schedules,
                discountable=custom is None,
                pools=pools,
                simple=simple and not pools,
                unit_prices={
                    d: q18(CONTEXT.divide(s.rates[0], s.per)) for d, s in schedules.items()
                }
                if simple
                else {},
                charge=charge,
                where=note,
                label=label,
            )
            out.append(Span(start, end, resolution))
        return out


def _rid(
    terms: ContractVersion, version: str, start: int, meter: str, model: str, mode: str, label: str
) -> str:
    """Names a resolution in the accumulator keys: each contract version's and each
    property price's tallies apart."""
    rid = f"{terms.id or ''}|{version}|{start}|{meter}|{model}|{mode}"
    return f"{rid}|{label}" if label else rid


def _pool(terms: ContractVersion, meter: str, model: str, dimension: str) -> int | None:
    """The first allowance of the terms that includes this dimension, if any."""
    for i, allowance in enumerate(terms.allowances):
        if allowance.pools(meter, model, dimension):
            return i
    return None
