"""The flow's side of the live catalogue: records read from the catalogue topic, sent
to the shards that need them, and applied in each shard's one order.

A customer's record goes to that customer's shard, like its credit grants; every other
record (books, versions, plans) goes to every shard. A shard applies a record at its
place in the shard's order (`metering.ordering`), so usage after it in that order is
rated with it, from the record's effective time on, and usage before it is not rated
again: the same lines in every run and in every recovery. Each shard's catalogue starts
from the seed files and is part of its snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from metering.catalogue.authoring import changes, read_files
from metering.catalogue.catalogue import Catalogue
from metering.catalogue.records import (
    CatalogueRecord,
    InvalidRecord,
    Kind,
    make_record,
    record_from,
)
from metering.parking import Parkable, Parking
from metering.rating.books import Books, load_books
from metering.rating.contracts import CustomerSpec
from metering.rating.engine import RatingEngine
from schemas.event import PickledByPosition, Rejection, RejectReason, UsageEvent
from schemas.meters import METER_DIMENSIONS
from schemas.serde import Decoder

if TYPE_CHECKING:
    from flows.settings import Settings

T = TypeVar("T", bound=Parkable)


@dataclass(frozen=True, slots=True)
class ConsumedCatalogue(PickledByPosition):
    record: CatalogueRecord
    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int
    order_ms: int = 0


def catalogue_parser(
    decoder: Decoder,
) -> Callable[[bytes | None, datetime], CatalogueRecord | Rejection]:
    """Catalogue records: Confluent-framed Avro whose definition is checked as YAML is."""

    def parse(value: bytes | None, _now: datetime) -> CatalogueRecord | Rejection:
        decoded = decoder.decode(value)
        if isinstance(decoded, Rejection):
            return decoded
        try:
            return record_from(decoded["kind"], decoded["id"], decoded["definition"])
        except InvalidRecord as exc:
            return Rejection(RejectReason.INVALID_CATALOGUE_RECORD, str(exc), decoded["id"])

    return parse


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

    def admit(self, catalogue: Catalogue | None, events: Iterable[UsageEvent]) -> Catalogue | None:
        """At list price, an unknown customer becomes a customer without a contract (list
        price, default tier, calendar months) at its first event's place in the order."""
        if self.unknown.mode != "list_price":
            return catalogue
        current = self.seed if catalogue is None else catalogue
        unknown = {e.customer_id for e in events if not current.knows_customer(e.customer_id)}
        if not unknown:
            return catalogue
        admitted = self.seed.copy() if catalogue is None else catalogue
        for customer_id in sorted(unknown):
            admitted.apply(make_record(Kind.CUSTOMER, customer_id, CustomerSpec(id=customer_id)))
        return admitted


def seed_catalogue(settings: Settings) -> Catalogue:
    """The catalogue files of the settings as records, checked as the flow always has."""
    books = (settings.prices_file, settings.contracts_file, settings.costs_file)
    load_books(*books)
    seed, _ = changes(Catalogue(), read_files([settings.meters_file, *books]))
    return seed


def metered(catalogue: Catalogue | None, events: list[UsageEvent]) -> list[UsageEvent | Rejection]:
    """Events of the catalogue's meters, counted by their aggregation, or why not. Built-in
    meters were checked when decoded; without a catalogue only they are known."""
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
        else:
            counted = {
                d: 1 if meter.dimensions[d].aggregation == "count" else q
                for d, q in event.quantities.items()
            }
            out.append(replace(event, quantities=counted))
    return out
