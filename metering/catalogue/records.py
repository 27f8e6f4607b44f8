"""Catalogue records: one identity (kind and id) and its definition, in the YAML's form.

A record is what the catalogue topic carries under the key `kind/id`, so compaction
keeps the latest definition of each identity. The definition is the same pydantic model
the YAML files are read into, so a record is checked exactly as a file is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, Field, ValidationError, model_validator

from metering.rating.aggregation import Aggregation, MeterAggregation
from metering.rating.contracts import CustomerSpec, TermsSpec
from metering.rating.costbook import CostVersionSpec
from metering.rating.loading import Spec, field_path
from metering.rating.pricebook import CATALOGUE_METERS, DEFAULT_TIER, PriceVersionSpec, TierSpec


class Kind(StrEnum):
    METER = "meter"
    PRICE_BOOK = "price_book"
    COST_BOOK = "cost_book"
    PRICE_VERSION = "price_version"
    COST_VERSION = "cost_version"
    PLAN = "plan"
    CUSTOMER = "customer"


class PriceBookHeader(Spec):
    """What a price book states besides its versions."""

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    tiers: dict[str, TierSpec] = Field(default_factory=lambda: {DEFAULT_TIER: TierSpec()})


class CostBookHeader(Spec):
    currency: str = Field(pattern=r"^[A-Z]{3}$")


Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]


class DimensionSpec(Spec):
    unit: str = Field(min_length=1)
    aggregation: Aggregation = "sum"
    """Over a period (`metering.rating.aggregation`): the quantities sent, the events,
    the highest quantity, the quantity of the event latest in event time, or the distinct
    values of `property`."""
    property: str | None = Field(default=None, min_length=1)
    """The event property whose distinct values `unique_count` counts."""

    @model_validator(mode="after")
    def _property(self) -> Self:
        if (self.aggregation == "unique_count") != (self.property is not None):
            raise ValueError("'property' names what unique_count counts; give it there only")
        return self

    def describe(self) -> str:
        if self.aggregation == "sum":
            return self.unit
        of = f" of {self.property}" if self.property is not None else ""
        return f"{self.unit}, {self.aggregation}{of}"


Values = Annotated[list[str], Field(min_length=1)]


class MeterSpec(Spec):
    """What usage of a meter measures: its dimensions, each with a unit and aggregation,
    which events count (`filter`) and what prices may depend on (`price_by`)."""

    description: str | None = None
    dimensions: dict[Name, DimensionSpec] = Field(min_length=1)
    filter: dict[str, Values] | None = Field(default=None, min_length=1)
    """Event property -> the values an event of the meter must have to count
    (`metering.catalogue.filters`); `region` is also the event's region field."""
    price_by: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    """Event properties a price may name in `where` (`metering.rating.property_prices`)."""

    @model_validator(mode="after")
    def _unique_price_by(self) -> Self:
        if self.price_by is not None and len(set(self.price_by)) != len(self.price_by):
            raise ValueError(f"price_by names a property twice: {self.price_by}")
        return self

    def aggregation(self, name: str) -> MeterAggregation | None:
        """How rating aggregates the dimensions, where one is not summed."""
        dims = self.dimensions
        if all(d.aggregation == "sum" for d in dims.values()):
            return None
        kinds = {d: s.aggregation for d, s in dims.items()}
        return MeterAggregation(name, kinds, {d: s.property for d, s in dims.items() if s.property})

    def describe(self, name: str) -> str:
        return f"meter {name!r} measures {self.measures()}"

    def measures(self) -> str:
        return ", ".join(f"{d} ({s.describe()})" for d, s in sorted(self.dimensions.items()))


MODELS: dict[Kind, type[BaseModel]] = {
    Kind.METER: MeterSpec,
    Kind.PRICE_BOOK: PriceBookHeader,
    Kind.PRICE_VERSION: PriceVersionSpec,
    Kind.COST_BOOK: CostBookHeader,
    Kind.COST_VERSION: CostVersionSpec,
    Kind.PLAN: TermsSpec,
    Kind.CUSTOMER: CustomerSpec,
}
APPLY_ORDER = {kind: rank for rank, kind in enumerate(Kind)}
"""What a record may refer to is applied before it: meters, books, versions, plans,
customers."""
BOOK_ID = "book"
"""The id of the one price book header and the one cost book header."""


class InvalidRecord(ValueError):
    """A record that cannot be applied, and why."""


@dataclass(frozen=True, slots=True)
class CatalogueRecord:
    kind: Kind
    id: str
    spec: BaseModel
    text: str
    """The definition as JSON, as the topic carries it: decimals and times as text."""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.id}"

    @property
    def customer_id(self) -> str | None:
        return self.id if self.kind is Kind.CUSTOMER else None

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        """Snapshots hold the text and check it again on resume, like the topic's reader."""
        return record_from, (str(self.kind), self.id, self.text)

    def same_as(self, other: CatalogueRecord) -> bool:
        """Equal definitions, numbers compared by value (2.5 is 2.50)."""
        return self.kind is other.kind and self.id == other.id and self.spec == other.spec


def make_record(kind: Kind, record_id: str, spec: BaseModel) -> CatalogueRecord:
    """A record from a definition read from YAML (already checked)."""
    text = json.dumps(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
    return CatalogueRecord(kind, record_id, spec, text)


def record_from(kind: str, record_id: str, spec_json: str) -> CatalogueRecord:
    """A record from its parts as the topic carries them, or `InvalidRecord`."""
    try:
        known = Kind(kind)
    except ValueError as exc:
        raise InvalidRecord(f"kind {kind!r} is not one of {[k.value for k in Kind]}") from exc
    try:
        data: Any = json.loads(spec_json)
    except ValueError as exc:
        raise InvalidRecord(f"{known}/{record_id}: definition is not JSON: {exc}") from exc
    try:
        spec = MODELS[known].model_validate(data, context=CATALOGUE_METERS)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = field_path(first["loc"]) or "(top level)"
        raise InvalidRecord(f"{known}/{record_id}: {where}: {first['msg']}") from exc
    own_id = getattr(spec, "id", record_id)
    if own_id != record_id:
        raise InvalidRecord(f"{known}/{record_id}: its definition has id {own_id!r}")
    return CatalogueRecord(known, record_id, spec, spec_json)
