"""Decode and validate one consumed batch; split what is good by customer shard.

Two topics feed the flow: usage events (Avro) and prepaid credit grants (JSON).

Every record of the batch leaves here as an audit row (the raw event log) and as
either a dead letter or an event bound for its shard, so accounting starts at
the first step.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from metering.catalogue.live import targets
from metering.catalogue.records import CatalogueRecord
from metering.ordering import Source
from metering.rating.credits import CreditGrant, parse_grant
from metering.records import (
    Consumed,
    ConsumedBatch,
    ConsumedCatalogue,
    ConsumedGrant,
    Origin,
    Record,
    Redriven,
    ShardRecord,
)
from metering.stopwatch import Stopwatch
from schemas.event import Rejection, RejectReason
from schemas.serde import HEADER, Decoder
from schemas.validation import TimeBounds, validate_decoded
from sinks.batch import SinkBatch
from sinks.rows import Parsed, audit_batch


@dataclass(frozen=True, slots=True)
class ShardInput:
    """What one consumed batch brings a shard: its records of the shard's customers
    (perhaps none) and how far their partition has got (`metering.ordering`)."""

    source: Source
    bound_ms: int
    items: list[ShardRecord]


Parse = Callable[[Sequence[Record], Stopwatch], list[Parsed]]
"""Records to their outcomes, judged by the clock they arrived by (the broker's append time)."""


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

    def parse(records: Sequence[Record], watch: Stopwatch) -> list[Parsed]:
        with watch.stage("decode"):
            decoded = [decoder.decode(record.value) for record in records]
        with watch.stage("validate"):
            clock = _Clock()
            times = [clock.at(record) for record in records]
            return list(validate_decoded(decoded, times, bounds, catalogue_meters=True))

    return parse


def per_record(parse_one: Callable[[bytes | None, datetime], Parsed]) -> Parse:
    """A parser of one record at a time (grants, catalogue records, redrives), timed as
    decoding."""

    def parse(records: Sequence[Record], watch: Stopwatch) -> list[Parsed]:
        with watch.stage("decode"):
            clock = _Clock()
            return [parse_one(record.value, clock.at(record)) for record in records]

    return parse


def grant_parser(value: bytes | None, _now: datetime) -> Parsed:
    """Credit grants: one JSON object per record (see `metering.rating.credits.parse_grant`)."""
    try:
        record = json.loads(value or b"")
    except ValueError as exc:
        return Rejection(RejectReason.MALFORMED_JSON, f"not valid JSON: {exc}")
    if not isinstance(record, dict):
        return Rejection(RejectReason.MALFORMED_JSON, "a credit grant must be a JSON object")
    return parse_grant(record)


class _Clock:
    """Records' append times as datetimes: a batch's records share a few milliseconds."""

    def __init__(self) -> None:
        self._seen: dict[int, datetime] = {}

    def at(self, record: Record) -> datetime:
        ms = record.timestamp_ms
        at = self._seen.get(ms)
        if at is None:
            at = self._seen[ms] = datetime.fromtimestamp(ms / 1000, UTC)
        return at


@dataclass(frozen=True, slots=True)
class Decoded:
    """A consumed batch as the streams the next steps take, by name."""

    audit: SinkBatch
    """The raw log of the batch and the dead letters of decoding, for the sink."""
    shards: list[tuple[str, ShardInput]]
    """For every shard: its records of the batch (perhaps none) and the partition's bound."""
    reasons: Counter[str]
    """Dead letters by reason."""


def split_batch(batch: ConsumedBatch, parse: Parse, shards: Shards, watch: Stopwatch) -> Decoded:
    """Audit rows and dead letters for the sink; events and grants for their shards, and
    the partition's progress for every shard, which all merge this partition.

    Event times are judged against the record's broker append time: it is in the log,
    so a recovery or a replay judges every record as the first run did."""
    by_shard: dict[str, list[ShardRecord]] = {key: [] for key in shards.keys}
    parsed = parse(batch.records, watch)
    reasons: Counter[str] = Counter()
    for record, outcome in zip(batch.records, parsed, strict=True):
        if isinstance(outcome, Rejection):
            reasons[str(outcome.reason)] += 1
            continue
        origin = Origin(
            batch.topic, batch.partition, record.offset, record.timestamp_ms, record.order_ms
        )
        if isinstance(outcome, CatalogueRecord):
            for shard in targets(outcome, shards.keys, shards.of):
                by_shard[shard].append(ConsumedCatalogue(outcome, origin))
            continue
        item: ShardRecord
        if isinstance(outcome, CreditGrant):
            item = ConsumedGrant(outcome, origin)
        elif isinstance(outcome, Redriven):
            fingerprint = zlib.crc32(record.value or b"")
            item = Consumed(outcome.event, origin, fingerprint, outcome.original)
        else:
            body = memoryview(record.value or b"")[HEADER.size :]
            item = Consumed(outcome, origin, zlib.crc32(body))
        by_shard[shards.of(outcome.customer_id)].append(item)
    with watch.stage("rows"):
        audit = audit_batch(batch, parsed, datetime.fromtimestamp(batch.received_at, UTC))
    source = (batch.topic, batch.partition)
    inputs = [
        (shard, ShardInput(source, batch.bound_ms, items)) for shard, items in by_shard.items()
    ]
    return Decoded(audit, inputs, reasons)
