"""YAML stays the authoring format: catalogue files into records, each traced to where it
was written, and the changes a set of records makes to a catalogue.

A file is meters (`meters`), a price book (`versions` of `prices`), a cost book
(`versions` of `costs`) or contracts (`plans`, `customers`), as in
`metering/rating/catalogue/`. For `catalogue
apply` a file may hold only part of one: a new customer, a new price version, a plan;
what it refers to (a plan, a tier, the currency) may already be in the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from metering.catalogue.catalogue import Catalogue
from metering.catalogue.records import (
    APPLY_ORDER,
    BOOK_ID,
    CatalogueRecord,
    CostBookHeader,
    InvalidRecord,
    Kind,
    MeterSpec,
    PriceBookHeader,
    make_record,
)
from metering.rating.contracts import CustomerSpec, TermsSpec
from metering.rating.costbook import CostVersionSpec
from metering.rating.loading import CatalogueError, Spec, read_yaml, validate_model
from metering.rating.pricebook import CATALOGUE_METERS, PriceVersionSpec, TierSpec


class PricesFile(Spec):
    currency: str | None = None
    tiers: dict[str, TierSpec] | None = None
    versions: list[PriceVersionSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _currency(self) -> PricesFile:
        if self.tiers is not None and self.currency is None:
            raise ValueError("tiers are stated with the book's currency")
        return self


class CostsFile(Spec):
    currency: str | None = None
    versions: list[CostVersionSpec] = Field(default_factory=list)


class MetersFile(Spec):
    meters: dict[str, MeterSpec] = Field(default_factory=dict)


class ContractsFile(Spec):
    plans: dict[str, TermsSpec] = Field(default_factory=dict)
    customers: list[CustomerSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Authored:
    """A record and where it was written: the file and the field path."""

    record: CatalogueRecord
    file: str
    field: str


@dataclass(frozen=True, slots=True)
class Change:
    action: Literal["added", "changed"]
    record: CatalogueRecord
    fields: tuple[str, ...] = ()
    """Changed: the paths whose values differ."""

    def line(self) -> str:
        if self.action == "added":
            return f"+ {self.record.key}"
        return f"~ {self.record.key}: {', '.join(self.fields)}"


def read_files(paths: Sequence[Path | str]) -> list[Authored]:
    """Every record of the files, in the order they may be applied, or `CatalogueError`
    naming the file, the field path and the reason."""
    out: list[Authored] = []
    seen: dict[str, Authored] = {}
    for path in paths:
        for authored in _read(path):
            first = seen.setdefault(authored.record.key, authored)
            if first is not authored and not first.record.same_as(authored.record):
                raise CatalogueError(
                    path,
                    authored.field,
                    f"{authored.record.key} is also defined, otherwise, in {first.file} "
                    f"{first.field}",
                )
            out.append(authored)
    return sorted(out, key=lambda a: APPLY_ORDER[a.record.kind])


def _read(path: Path | str) -> list[Authored]:
    data: Any = read_yaml(path)
    where = str(path)
    if not isinstance(data, dict):
        raise CatalogueError(path, "", "a catalogue file is a mapping (prices, costs or contracts)")
    if "meters" in data:
        meters = validate_model(path, data, MetersFile, CATALOGUE_METERS)
        return [
            Authored(make_record(Kind.METER, name, meter), where, f"meters.{name}")
            for name, meter in meters.meters.items()
        ]
    if "customers" in data or "plans" in data:
        contracts = validate_model(path, data, ContractsFile, CATALOGUE_METERS)
        return [
            Authored(make_record(Kind.PLAN, name, terms), where, f"plans.{name}")
            for name, terms in contracts.plans.items()
        ] + [
            Authored(make_record(Kind.CUSTOMER, c.id, c), where, f"customers[{i}]")
            for i, c in enumerate(contracts.customers)
        ]
    versions = data.get("versions")
    if isinstance(versions, list) and any(isinstance(v, dict) and "costs" in v for v in versions):
        costs = validate_model(path, data, CostsFile, CATALOGUE_METERS)
        out = [
            Authored(make_record(Kind.COST_VERSION, v.id, v), where, f"versions[{i}]")
            for i, v in enumerate(costs.versions)
        ]
        if costs.currency is not None:
            header = CostBookHeader(currency=costs.currency)
            out.append(Authored(make_record(Kind.COST_BOOK, BOOK_ID, header), where, "currency"))
        return out
    prices = validate_model(path, data, PricesFile, CATALOGUE_METERS)
    out = [
        Authored(make_record(Kind.PRICE_VERSION, v.id, v), where, f"versions[{i}]")
        for i, v in enumerate(prices.versions)
    ]
    if prices.currency is not None:
        book = PriceBookHeader.model_validate(
            {"currency": prices.currency}
            | ({} if prices.tiers is None else {"tiers": prices.tiers})
        )
        out.append(Authored(make_record(Kind.PRICE_BOOK, BOOK_ID, book), where, "currency"))
    return out


def changes(live: Catalogue, authored: Iterable[Authored]) -> tuple[Catalogue, list[Change]]:
    """The catalogue once the records are applied and what each changes, or
    `CatalogueError` naming the record that cannot follow the live catalogue."""
    after = live.copy()
    out: list[Change] = []
    for a in authored:
        before = after.records.get(a.record.key)
        try:
            if not after.apply(a.record):
                continue
        except InvalidRecord as exc:
            raise CatalogueError(a.file, a.field, str(exc)) from exc
        if before is None:
            out.append(Change("added", a.record))
        else:
            fields = tuple(_differences(_plain(before), _plain(a.record), ""))
            out.append(Change("changed", a.record, fields))
    try:
        after.books()
    except (InvalidRecord, ValueError) as exc:
        raise CatalogueError(", ".join(sorted({a.file for a in authored})), "", str(exc)) from exc
    return after, out


def _plain(record: CatalogueRecord) -> Any:
    return record.spec.model_dump(mode="python")


def _differences(old: Any, new: Any, path: str) -> Iterable[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (o, n) in enumerate(zip(old, new, strict=True)):
            yield from _differences(o, n, f"{path}[{i}]")
    elif isinstance(old, list) and isinstance(new, list) and new[: len(old)] == old:
        yield from (f"{path}[{i}] added" for i in range(len(old), len(new)))
    elif old != new:
        yield path or "(definition)"
