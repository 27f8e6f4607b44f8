"""What the flow reads and the shards are given: Kafka records, each with where it was read.

`Origin` is the one type for a record's coordinates; every outcome row records it,
and the shard's order is made from it (`metering.ordering`).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class ConsumedGrant(PickledByPosition):
    """A prepaid credit grant from the grants topic, bound for its customer's shard."""

    grant: CreditGrant
    origin: Origin


ShardRecord = Consumed | ConsumedGrant


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
