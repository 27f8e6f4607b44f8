"""Decode and validate one consumed batch; split what is good by customer shard.

Every record of the batch leaves here as an audit row (the raw event log) and as
either a dead letter or an event bound for its shard, so accounting starts at
the first step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from flows.kafka_source import ConsumedBatch, Record
from schemas.event import Rejection, UsageEvent
from schemas.serde import HEADER, Decoder
from schemas.validation import TimeBounds, validate
from sinks.batch import SinkBatch
from sinks.tables import DEAD_LETTERS, RAW_EVENTS


@dataclass(frozen=True, slots=True)
class Consumed:
    """A valid event and where it was read, which every outcome row records."""

    event: UsageEvent
    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int


def shard_of(customer_id: str, shards: int) -> str:
    """A stable shard key: crc32, not `hash`, which differs between processes."""
    return f"shard-{zlib.crc32(customer_id.encode()) % shards:03d}"


def decode_consumed(
    batch: ConsumedBatch, decoder: Decoder, bounds: TimeBounds, shards: int
) -> tuple[SinkBatch, dict[str, list[Consumed]]]:
    now = datetime.now(UTC)
    received_at = datetime.fromtimestamp(batch.received_at, UTC)
    audit = SinkBatch(f"{batch.topic}/{batch.partition}")
    by_shard: dict[str, list[Consumed]] = {}
    for record in batch.records:
        decoded = decoder.decode(record.value)
        outcome = decoded if isinstance(decoded, Rejection) else validate(decoded, now, bounds)
        audit.add(RAW_EVENTS, _raw_row(audit.stream, batch, record, outcome, received_at))
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
        else:
            consumed = Consumed(
                outcome, batch.topic, batch.partition, record.offset, record.timestamp_ms
            )
            by_shard.setdefault(shard_of(outcome.customer_id, shards), []).append(consumed)
    return audit, by_shard


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
        datetime.fromtimestamp(kafka_timestamp_ms / 1000, UTC),
        received_at,
    )


def _raw_row(
    stream: str,
    batch: ConsumedBatch,
    record: Record,
    outcome: UsageEvent | Rejection,
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
        datetime.fromtimestamp(record.timestamp_ms / 1000, UTC),
        record.key.decode(errors="replace") if record.key is not None else None,
        value,
        schema_id,
        outcome.event_id,
        outcome.customer_id,
        received_at,
    )
