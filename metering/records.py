"""What the flow reads and the shards are given: Kafka records, each with where it was read.

`Origin` is the one type for a record's coordinates; every outcome row records it,
and the shard's order is made from it (`metering.ordering`).
"""

from __future__ import annotations

from dataclasses import dataclass

from metering.catalogue.records import CatalogueRecord
from metering.rating.credits import CreditGrant
from schemas.event import PickledByPosition, UsageEvent


@dataclass(frozen=True, slots=True)
class Origin(PickledByPosition):
    """Where a record was read, and its place in the shard's order."""

    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int
    """The broker's append time."""
    order_ms: int = 0
    """The running maximum of append times in the partition (`flows.kafka_source`)."""


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
