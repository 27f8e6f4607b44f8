"""Catalogue records: one identity (kind and id) and its definition, in the YAML's form.

A record is what the catalogue topic carries under the key `kind/id`, so compaction
keeps the latest definition of each identity. The definition is the same pydantic model
the YAML files are read into, so a record is checked exactly as a file is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

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
    aggregation: Literal["sum", "count"] = "sum"
    """Over a period: the quantities sent, or the events whatever quantity they send."""


class MeterSpec(Spec):
    """What usage of a meter measures: its dimensions, each with a unit."""

    description: str | None = None
    dimensions: dict[Name, DimensionSpec] = Field(min_length=1)

    def describe(self, name: str) -> str:
        dims = ", ".join(
            f"{d} ({s.unit}{', count' if s.aggregation == 'count' else ''})"
            for d, s in sorted(self.dimensions.items())
        )
        return f"meter {name!r} measures {dims}"


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
