"""What the flow reads and the shards are given: Kafka records, each with where it was read.

`Origin` is the one type for a record's coordinates; every outcome row records it,
and the shard's order is made from it (`metering.ordering`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from metering.catalogue.records import CatalogueRecord
from metering.rating.credits import CreditGrant
from schemas.event import PickledByPosition, UsageEvent, from_micros, to_micros


@dataclass(slots=True)
class Origin(PickledByPosition):
    """Where a record was read, and its place in the shard's order."""

    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int
    """The broker's append time."""
    order_ms: int = 0
    """The running maximum of append times in the partition (`flows.kafka_source`)."""


@dataclass(slots=True)
class Consumed(PickledByPosition):
    """A valid usage event bound for its customer's shard."""

    event: UsageEvent
    origin: Origin
    fingerprint: int = 0
    """crc32 of the Avro body as sent: tells a conflicting re-send from a faithful one."""
    redrive_of: str = ""
    """For a dead letter redriven (`meterflow redrive`): topic/partition/offset it was
    first read at, the id it is deduplicated on, so it is rated at most once ever."""

    @property
    def dedupe_id(self) -> str:
        return f"redrive:{self.redrive_of}" if self.redrive_of else self.event.event_id


@dataclass(frozen=True, slots=True)
class ConsumedGrant(PickledByPosition):
    """A prepaid credit grant from the grants topic, bound for its customer's shard."""

    grant: CreditGrant
    origin: Origin


@dataclass(frozen=True, slots=True)
class ConsumedCatalogue(PickledByPosition):
    """A catalogue record from the catalogue topic, bound for the shards it concerns."""

    record: CatalogueRecord
    origin: Origin


@dataclass(frozen=True, slots=True)
class Redriven:
    """A dead letter sent back from the redrive topic, as decoded there."""

    event: UsageEvent
    original: str
    """topic/partition/offset of the dead letter."""

    @property
    def customer_id(self) -> str:
        return self.event.customer_id

    @property
    def event_id(self) -> str:
        return self.event.event_id


ShardRecord = Consumed | ConsumedGrant | ConsumedCatalogue

_EVENT = tuple(f.name for f in fields(UsageEvent))
_ORIGIN = tuple(f.name for f in fields(Origin))
_CONSUMED = ("fingerprint", "redrive_of")


def pack_held(records: list[ShardRecord]) -> Any:
    """A partition's records waiting in a shard's order, as its snapshot holds them:
    usage as columns by field name, event times as microseconds. A record waits through
    a snapshot or two, and pickling it object by object costs several times its columns.
    Grants and catalogue records (few) stay as they are."""
    if not records or not all(type(record) is Consumed for record in records):
        return records
    consumed: list[Consumed] = records  # type: ignore[assignment]
    events = [record.event for record in consumed]
    columns = {
        **_columns(events, _EVENT),
        **_columns([record.origin for record in consumed], _ORIGIN),
        **_columns(consumed, _CONSUMED),
    }
    columns["timestamp"] = [to_micros(ts) for ts in columns["timestamp"]]
    return columns


def unpack_held(packed: Any) -> list[ShardRecord]:
    if isinstance(packed, list):
        return packed
    packed["timestamp"] = [from_micros(us) for us in packed["timestamp"]]
    rows = zip(*(packed[name] for name in (*_EVENT, *_ORIGIN, *_CONSUMED)), strict=True)
    split, end = len(_EVENT), len(_EVENT) + len(_ORIGIN)
    return [
        Consumed(
            UsageEvent(**dict(zip(_EVENT, row[:split], strict=True))),
            Origin(**dict(zip(_ORIGIN, row[split:end], strict=True))),
            **dict(zip(_CONSUMED, row[end:], strict=True)),
        )
        for row in rows
    ]


def _columns(items: list[Any], names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: list(map(attrgetter(name), items)) for name in names}


@dataclass(slots=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    """The broker's append time."""
    order_ms: int


@dataclass(frozen=True, slots=True)
class ConsumedBatch:
    """Consecutive records of one partition, in offset order (perhaps none), and a lower
    bound on the order key of every record after them."""

    topic: str
    partition: int
    records: list[Record]
    received_at: float
    bound_ms: int
