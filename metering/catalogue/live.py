"""The live catalogue in a shard: an engine per shard for the catalogue it has applied,
records applied at their place in the shard's order, and what usage of a customer not in
the catalogue meets. Pure: the flow's side is `flows.catalogue`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from metering.catalogue.catalogue import Catalogue
from metering.catalogue.filters import filtered_out
from metering.catalogue.records import CatalogueRecord, InvalidRecord, Kind, make_record
from metering.parking import Parkable, Parking
from metering.rating.books import Books
from metering.rating.contracts import CustomerSpec
from metering.rating.engine import RatingEngine
from metering.records import ConsumedCatalogue
from schemas.event import Rejection, RejectReason, UsageEvent
from schemas.meters import METER_DIMENSIONS

T = TypeVar("T", bound=Parkable)


def targets(record: CatalogueRecord, keys: tuple[str, ...], of: Callable[[str], str]) -> list[str]:
    """The shards a record goes to: its customer's, or all."""
    return list(keys) if record.customer_id is None else [of(record.customer_id)]


@dataclass(frozen=True, slots=True)
class UnknownCustomers:
    """What usage of a customer not in the catalogue meets (`flows.settings`)."""

    mode: Literal["park", "list_price", "dead_letter"] = "dead_letter"
    max_events: int = 0
    max_age_ms: int = 0


class LiveCatalogue:
    """The seed catalogue and an engine per shard for the catalogue it has applied.

    Engines only cache what the books imply, so a shard whose catalogue changed gets a
    new one, and one shard's engine is never used with another's catalogue."""

    def __init__(
        self,
        seed: Catalogue,
        reporting_shard: str,
        unknown: UnknownCustomers = UnknownCustomers(),
    ):
        self.seed = seed
        self.seed_engine = RatingEngine(seed.books())
        self.unknown = unknown
        self._reporting_shard = reporting_shard
        self._engines: dict[str, tuple[Books, RatingEngine]] = {}

    def engine(self, shard: str, catalogue: Catalogue | None) -> RatingEngine:
        if catalogue is None:
            return self.seed_engine
        books = catalogue.books()
        cached = self._engines.get(shard)
        if cached is None or cached[0] is not books:
            cached = self._engines[shard] = (books, RatingEngine(books))
        return cached[1]

    def apply(
        self, shard: str, catalogue: Catalogue | None, item: ConsumedCatalogue
    ) -> tuple[Catalogue | None, Rejection | None]:
        """The shard's catalogue with the record applied, or as it was and why not. A
        record every shard receives is reported by one shard only. A customer's record
        is applied in place (checked first, it cannot break the books); any other to a
        copy whose books are built before it replaces the shard's."""
        record = item.record
        applied = self.seed.copy() if catalogue is None else catalogue
        if record.customer_id is None:
            applied = applied.copy()
        try:
            applied.apply(record)
            if record.customer_id is None:
                applied.books()
        except (InvalidRecord, ValueError) as exc:
            if record.customer_id is None and shard != self._reporting_shard:
                return catalogue, None
            detail = f"{record.key}: {exc}"
            reason = RejectReason.INVALID_CATALOGUE_RECORD
            return catalogue, Rejection(reason, detail, record.key, record.customer_id)
        return applied, None

    def current(self, catalogue: Catalogue | None) -> Catalogue:
        return self.seed if catalogue is None else catalogue

    def parks(self, rejection: Rejection) -> bool:
        return self.unknown.mode == "park" and rejection.reason is RejectReason.UNKNOWN_CUSTOMER

    def parking_due(self, parking: Parking[Any], order_ms: int) -> bool:
        unknown = self.unknown
        return bool(parking) and parking.due(order_ms, unknown.max_age_ms, unknown.max_events)

    def over_bound(self, parking: Parking[T], order_ms: int) -> list[T]:
        return parking.over_bound(order_ms, self.unknown.max_age_ms, self.unknown.max_events)

    def admit(self, catalogue: Catalogue | None, customer_ids: Iterable[str]) -> Catalogue | None:
        """At list price, an unknown customer becomes a customer without a contract (list
        price, default tier, calendar months) at its first event's or grant's place in
        the order."""
        if self.unknown.mode != "list_price":
            return catalogue
        current = self.seed if catalogue is None else catalogue
        unknown = {c for c in customer_ids if not current.knows_customer(c)}
        if not unknown:
            return catalogue
        admitted = self.seed.copy() if catalogue is None else catalogue
        for customer_id in sorted(unknown):
            admitted.apply(make_record(Kind.CUSTOMER, customer_id, CustomerSpec(id=customer_id)))
        return admitted


def metered(catalogue: Catalogue | None, events: list[UsageEvent]) -> list[UsageEvent | Rejection]:
    """Events of the catalogue's meters that count (`metering.catalogue.filters`), or why
    not; rating aggregates them
    (`metering.rating.aggregation`). Built-in meters were checked when decoded; without a
    catalogue only they are known."""
    out: list[UsageEvent | Rejection] = []
    for event in events:
        if event.meter in METER_DIMENSIONS:
            out.append(event)
            continue
        meter = None if catalogue is None else catalogue.meter(event.meter)
        ids = (event.event_id, event.customer_id)
        if meter is None:
            known = sorted(METER_DIMENSIONS if catalogue is None else catalogue.meter_names())
            detail = f"meter {event.meter!r} is not one of {known}"
            out.append(Rejection(RejectReason.UNKNOWN_METER, detail, *ids))
        elif undefined := sorted(set(event.quantities) - set(meter.dimensions)):
            detail = f"dimensions {undefined} are not defined: {meter.describe(event.meter)}"
            out.append(Rejection(RejectReason.UNKNOWN_DIMENSION, detail, *ids))
        elif meter.filter is not None and (outside := filtered_out(event.meter, meter, event)):
            out.append(Rejection(RejectReason.FILTERED_OUT, outside, *ids))
        else:
            out.append(event)
    return out
