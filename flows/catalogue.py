"""The flow's side of the live catalogue: records decoded from the catalogue topic, and
the seed catalogue from the settings' files.

A customer's record goes to that customer's shard, like its credit grants; every other
record (books, versions, plans) goes to every shard (`metering.catalogue.live.targets`).
A shard applies a record at its place in the shard's order (`metering.ordering`), so
usage after it in that order is rated with it, from the record's effective time on, and
usage before it is not rated again: the same lines in every run and in every recovery.
Each shard's catalogue starts from the seed files and is part of its snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from metering.catalogue.authoring import changes, read_files
from metering.catalogue.catalogue import Catalogue
from metering.catalogue.records import (
    CatalogueRecord,
    InvalidRecord,
    record_from,
)
from metering.parking import Parkable
from metering.rating.books import load_books
from schemas.event import Rejection, RejectReason
from schemas.serde import Decoder

if TYPE_CHECKING:
    from flows.settings import Settings

T = TypeVar("T", bound=Parkable)


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


def seed_catalogue(settings: Settings) -> Catalogue:
    """The catalogue files of the settings as records, checked as the flow always has."""
    books = (settings.prices_file, settings.contracts_file, settings.costs_file)
    load_books(*books)
    seed, _ = changes(Catalogue(), read_files([settings.meters_file, *books]))
    return seed
