"""Decode and validate one consumed batch; split what is good by customer shard.

Two topics feed the flow: usage events (Avro) and prepaid credit grants (JSON).

Every record of the batch leaves here as an audit row (the raw event log) and as
either a dead letter or an event bound for its shard, so accounting starts at
the first step.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flows.catalogue import ConsumedCatalogue, targets
from flows.kafka_source import ConsumedBatch, Record
from flows.redrive import Redriven
from metering.catalogue.records import CatalogueRecord
from metering.ordering import Source
from metering.rating.credits import CreditGrant, parse_grant
from schemas.event import PickledByPosition, Rejection, RejectReason, UsageEvent
from schemas.serde import HEADER, Decoder
from schemas.validation import TimeBounds, validate
from sinks.batch import SinkBatch
from sinks.tables import DEAD_LETTERS, RAW_EVENTS


@dataclass(frozen=True, slots=True)
class Consumed(PickledByPosition):
    """A valid event and where it was read, which every outcome row records."""

    event: UsageEvent
    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int
    order_ms: int = 0
    fingerprint: int = 0
    """crc32 of the Avro body as sent: tells a conflicting re-send from a faithful one."""

    @property
    def dedupe_id(self) -> str:
        return self.event.event_id

    @property
    def redrive_of(self) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class ConsumedRedrive(Consumed):
    """A dead letter redriven (`flows.redrive`): deduplicated on its original coordinates."""

    original: str = ""

    def __reduce__(self) -> tuple[type[ConsumedRedrive], tuple[object, ...]]:
        """Every field, the base's too (`PickledByPosition` reads a class's own slots)."""
        fields = (self.event, self.topic, self.partition, self.offset, self.kafka_timestamp_ms)
        return ConsumedRedrive, (*fields, self.order_ms, self.fingerprint, self.original)

    @property
    def dedupe_id(self) -> str:
        return f"redrive:{self.original}"

    @property
    def redrive_of(self) -> str:
        return self.original


@dataclass(frozen=True, slots=True)
class ConsumedGrant(PickledByPosition):
    """A prepaid credit grant from the grants topic, bound for its customer's shard."""

    grant: CreditGrant
    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int
    order_ms: int = 0


@dataclass(frozen=True, slots=True)
class ShardInput:
    """What one consumed batch brings a shard: its records of the shard's customers
    (perhaps none) and how far their partition has got (`metering.ordering`)."""

    source: Source
    bound_ms: int
    items: list[Consumed | ConsumedGrant | ConsumedCatalogue]


Parsed = UsageEvent | CreditGrant | CatalogueRecord | Redriven | Rejection


Parse = Callable[[bytes | None, datetime], Parsed]
"""A record's value and the clock it arrived by (the broker's append time) to an outcome."""


class Shards:
    """Which shard key a customer's events go to: crc32, not `hash`, which differs
    between processes. A key is also the stream of the shard's rows in ClickHouse
    (`sinks.writer`), so it names the usage topic and the shard count: a flow over
    another topic, or sharded otherwise, never takes these rows for its own."""

    def __init__(self, count: int, topic: str):
        self.count = count
        self.keys = tuple(f"{topic}/shard-{i:03d}-of-{count}" for i in range(count))

    def of(self, customer_id: str) -> str:
        return self.keys[zlib.crc32(customer_id.encode()) % self.count]


def usage_parser(decoder: Decoder, bounds: TimeBounds) -> Parse:
    """Usage events: Confluent-framed Avro, validated against the contract."""

    def parse(value: bytes | None, now: datetime) -> Parsed:
        decoded = decoder.decode(value)
        if isinstance(decoded, Rejection):
            return decoded
        return validate(decoded, now, bounds, typed=True, catalogue_meters=True)

    return parse


def parse_grant_value(value: bytes | None, _now: datetime) -> Parsed:
    """Credit grants: one JSON object per record (see `metering.rating.credits.parse_grant`)."""
    try:
        record = json.loads(value or b"")
    except ValueError as exc:
        return Rejection(RejectReason.MALFORMED_JSON, f"not valid JSON: {exc}")
    if not isinstance(record, dict):
        return Rejection(RejectReason.MALFORMED_JSON, "a credit grant must be a JSON object")
    return parse_grant(record)


def split_batch(
    batch: ConsumedBatch, parse: Parse, shards: Shards
) -> tuple[SinkBatch, list[tuple[str, ShardInput]]]:
    """Audit rows and dead letters for the sink; events and grants for their shards, and
    the partition's progress for every shard, which all merge this partition.

    Event times are judged against the record's broker append time: it is in the log,
    so a recovery or a replay judges every record as the first run did."""
    received_at = datetime.fromtimestamp(batch.received_at, UTC)
    audit = SinkBatch(f"{batch.topic}/{batch.partition}")
    by_shard: dict[str, list[Consumed | ConsumedGrant | ConsumedCatalogue]] = {
        key: [] for key in shards.keys
    }
    for record in batch.records:
        appended_at = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
        outcome = parse(record.value, appended_at)
        audit.add(RAW_EVENTS, _raw_row(audit.stream, batch, record, outcome, received_at))
        coordinates = (
            batch.topic,
            batch.partition,
            record.offset,
            record.timestamp_ms,
            record.order_ms,
        )
        item: Consumed | ConsumedGrant
        if isinstance(outcome, CatalogueRecord):
            for shard in targets(outcome, shards.keys, shards.of):
                by_shard[shard].append(ConsumedCatalogue(outcome, *coordinates))
            continue
        if isinstance(outcome, Rejection):
            audit.add(
                DEAD_LETTERS,
                dead_letter_row(
                    audit.stream,
                    record.offset,
                    batch.topic,
                    batch.partition,
                    record.offset,
                    outcome,
                    record.value or b"",
                    record.timestamp_ms,
                    received_at,
                ),
            )
            continue
        if isinstance(outcome, CreditGrant):
            item = ConsumedGrant(outcome, *coordinates)
        elif isinstance(outcome, Redriven):
            fingerprint = zlib.crc32(record.value or b"")
            item = ConsumedRedrive(outcome.event, *coordinates, fingerprint, outcome.original)
        else:
            item = Consumed(
                outcome, *coordinates, zlib.crc32(memoryview(record.value or b"")[HEADER.size :])
            )
        by_shard[shards.of(outcome.customer_id)].append(item)
    source = (batch.topic, batch.partition)
    return audit, [
        (shard, ShardInput(source, batch.bound_ms, items)) for shard, items in by_shard.items()
    ]


def dead_letter_row(
    stream: str,
    position: int,
    topic: str,
    partition: int,
    offset: int,
    rejection: Rejection,
    payload: bytes,
    kafka_timestamp_ms: int,
    received_at: datetime,
) -> tuple[object, ...]:
    return (
        stream,
        position,
        topic,
        partition,
        offset,
        str(rejection.reason),
        rejection.detail,
        rejection.event_id,
        rejection.customer_id,
        payload,
        kafka_timestamp_ms,
        received_at,
    )


def _raw_row(
    stream: str,
    batch: ConsumedBatch,
    record: Record,
    outcome: Parsed,
    received_at: datetime,
) -> tuple[object, ...]:
    value = record.value or b""
    schema_id = (
        HEADER.unpack_from(value)[1] if len(value) >= HEADER.size and value[0] == 0 else None
    )
    return (
        stream,
        record.offset,
        batch.topic,
        batch.partition,
        record.offset,
        record.timestamp_ms,
        record.key.decode(errors="replace") if record.key is not None else None,
        value,
        schema_id,
        outcome.grant_id
        if isinstance(outcome, CreditGrant)
        else outcome.key
        if isinstance(outcome, CatalogueRecord)
        else outcome.event_id,
        outcome.customer_id,
        received_at,
    )
