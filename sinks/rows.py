"""Outcomes into table columns, by name, a whole batch at a time.

Positions: rows of a Kafka partition's stream (raw events, the dead letters of
decoding) are at their offsets; rows of a shard's stream are numbered per table by
the counter the shard keeps in its state, so a replay numbers them again the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from metering.catalogue.records import CatalogueRecord
from metering.outcomes import DeadLetter, Outcomes
from metering.rating.credits import CreditGrant
from metering.records import ConsumedBatch, Origin, Redriven
from schemas.event import Rejection, UsageEvent, from_micros, to_micros
from schemas.serde import HEADER
from sinks.batch import SinkBatch
from sinks.tables import (
    ALERTS,
    CREDIT_EXPIRIES,
    CREDIT_GRANTS,
    DEAD_LETTERS,
    DUPLICATES,
    LATE_ADJUSTMENTS,
    MICROS,
    MILLIS,
    PARKED_USAGE,
    RATED_USAGE,
    RAW_EVENTS,
)

Parsed = UsageEvent | CreditGrant | CatalogueRecord | Redriven | Rejection
Columns = dict[str, Sequence[Any]]

_MONEY = ("amount", "discount", "credits_applied", "billable_amount", "cost")
_LINE = (
    "event_id",
    "customer_id",
    "timestamp",
    "period_start",
    "meter",
    "model",
    "provider",
    "mode",
    "project_id",
    "feature",
    "quantities",
    "unit_prices",
    "amounts",
    "tiers",
    *_MONEY,
    "margin",
    "currency",
    "price_version",
    "contract_version",
    "cost_version",
    "charges",
    "corrects",
)
"""The rated_usage columns a `RatedLine` holds, under the same names."""


def audit_batch(batch: ConsumedBatch, parsed: Sequence[Parsed], received_at: datetime) -> SinkBatch:
    """The raw log of a consumed batch, every record as read, and the dead letters of
    the records that did not decode or validate."""
    stream = f"{batch.topic}/{batch.partition}"
    records = batch.records
    offsets = [r.offset for r in records]
    values = [r.value or b"" for r in records]
    out = SinkBatch(stream)
    out.add(
        RAW_EVENTS,
        {
            **_sources(stream, offsets, batch.topic, batch.partition, offsets),
            "kafka_timestamp": [r.timestamp_ms for r in records],
            "key": [r.key.decode(errors="replace") if r.key is not None else None for r in records],
            "value": values,
            "schema_id": [_schema_id(v) for v in values],
            "event_id": [_record_id(p) for p in parsed],
            "customer_id": [p.customer_id for p in parsed],
            "received_at": _same_time(received_at, len(records), MICROS),
        },
    )
    letters = [
        DeadLetter(Origin(batch.topic, batch.partition, r.offset, r.timestamp_ms), p, value)
        for r, p, value in zip(records, parsed, values, strict=True)
        if isinstance(p, Rejection)
    ]
    positions = [letter.origin.offset for letter in letters]
    out.add(DEAD_LETTERS, dead_letter_columns(stream, positions, letters, received_at))
    return out


def shard_batch(stream: str, positions: Counter[str], outcomes: Outcomes) -> SinkBatch:
    """A shard's outcomes of one batch, each kind in the shard's order."""
    now = datetime.now(UTC)
    out = SinkBatch(stream)

    def take(table: str, count: int) -> range:
        first = positions[table]
        positions[table] = first + count
        return range(first, first + count)

    rated = outcomes.rated
    out.add(RATED_USAGE, _rated(stream, take(RATED_USAGE, len(rated)), outcomes, now))
    adjusted = [r for r in rated if r.adjustment]
    origins = [r.consumed.origin for r in adjusted]
    lines = [r.line for r in adjusted]
    out.add(
        LATE_ADJUSTMENTS,
        {
            **_origins(stream, take(LATE_ADJUSTMENTS, len(adjusted)), origins),
            **_fields(lines, "event_id", "customer_id", "timestamp"),
            "original_period_start": [line.period_start for line in lines],
            **_fields(lines, "meter", "model", *_MONEY, "currency"),
            "lateness_ms": [r.lateness_ms for r in adjusted],
            "watermark": [from_micros(r.watermark_us) for r in adjusted],
        },
    )
    duplicates = outcomes.duplicates
    events = [d.consumed.event for d in duplicates]
    out.add(
        DUPLICATES,
        {
            **_origins(
                stream, take(DUPLICATES, len(duplicates)), [d.consumed.origin for d in duplicates]
            ),
            **_fields(events, "event_id", "customer_id", "timestamp"),
            "first_seen_timestamp": [from_micros(d.first_us) for d in duplicates],
            "fingerprint": [d.consumed.fingerprint for d in duplicates],
            "first_fingerprint": [d.first_fingerprint for d in duplicates],
            "conflicting": [d.conflicting for d in duplicates],
        },
    )
    letters = outcomes.dead_letters
    positions_of_letters = take(DEAD_LETTERS, len(letters))
    out.add(DEAD_LETTERS, dead_letter_columns(stream, positions_of_letters, letters, now))
    grants = outcomes.grants
    out.add(
        CREDIT_GRANTS,
        {
            **_origins(
                stream, take(CREDIT_GRANTS, len(grants)), [g.consumed.origin for g in grants]
            ),
            "grant_id": [g.consumed.grant.grant_id for g in grants],
            "customer_id": [g.consumed.grant.customer_id for g in grants],
            "credits": [g.consumed.grant.credits for g in grants],
            "amount": [g.amount for g in grants],
            "effective_at": [g.consumed.grant.effective_at for g in grants],
            "expires_at": [g.consumed.grant.expires_at for g in grants],
        },
    )
    expiries = outcomes.expiries
    out.add(
        CREDIT_EXPIRIES,
        {
            "stream": [stream] * len(expiries),
            "position": take(CREDIT_EXPIRIES, len(expiries)),
            "grant_id": [x.grant_id for x in expiries],
            "customer_id": [x.customer_id for x in expiries],
            "expires_at": [x.expires_at for x in expiries],
            "credits": [x.credits for x in expiries],
            "amount": [x.amount for x in expiries],
        },
    )
    alerts = outcomes.alerts
    out.add(
        ALERTS,
        {
            "stream": [stream] * len(alerts),
            "position": take(ALERTS, len(alerts)),
            "alert_id": [a.alert_id for a in alerts],
            "customer_id": [a.customer_id for a in alerts],
            "kind": [str(a.kind) for a in alerts],
            "threshold": [a.threshold for a in alerts],
            "value": [a.value for a in alerts],
            "period_start": [a.period_start for a in alerts],
            "at": [a.at for a in alerts],
            "grant_id": [a.grant_id for a in alerts],
        },
    )
    parked = outcomes.parked
    held = [p.consumed for p in parked]
    out.add(
        PARKED_USAGE,
        {
            **_origins(stream, take(PARKED_USAGE, len(parked)), [c.origin for c in held]),
            "action": [p.action for p in parked],
            **_fields(parked, "event_id", "customer_id", "timestamp"),
            "kafka_timestamp": [c.origin.kafka_timestamp_ms for c in held],
            "at": _same_time(now, len(parked), MICROS),
        },
    )
    return out


def _rated(stream: str, positions: range, outcomes: Outcomes, now: datetime) -> Columns:
    rated = outcomes.rated
    origins = [r.consumed.origin for r in rated]
    lines = [r.line for r in rated]
    return {
        **_origins(stream, positions, origins),
        **_fields(lines, *_LINE),
        **_fields(rated, "late", "lateness_ms", "adjustment"),
        "kafka_timestamp": [o.kafka_timestamp_ms for o in origins],
        "rated_at": _same_time(now, len(rated), MILLIS),
        "redrive_of": [r.consumed.redrive_of for r in rated],
    }


def _fields(items: Sequence[Any], *names: str) -> Columns:
    """Columns named as the items' attributes, one list per name."""
    return {name: [getattr(item, name) for item in items] for name in names}


def dead_letter_columns(
    stream: str, positions: Sequence[int], letters: Sequence[DeadLetter], received_at: datetime
) -> Columns:
    rejections = [letter.rejection for letter in letters]
    origins = [letter.origin for letter in letters]
    return {
        **_origins(stream, positions, origins),
        "reason": [str(r.reason) for r in rejections],
        "detail": [r.detail for r in rejections],
        "event_id": [r.event_id for r in rejections],
        "customer_id": [r.customer_id for r in rejections],
        "payload": [letter.payload for letter in letters],
        "kafka_timestamp": [o.kafka_timestamp_ms for o in origins],
        "received_at": _same_time(received_at, len(letters), MICROS),
    }


def _origins(stream: str, positions: Sequence[int], origins: Sequence[Origin]) -> Columns:
    return {
        "stream": [stream] * len(origins),
        "position": positions,
        "topic": [o.topic for o in origins],
        "partition": [o.partition for o in origins],
        "offset": [o.offset for o in origins],
    }


def _sources(
    stream: str, positions: Sequence[int], topic: str, partition: int, offsets: Sequence[int]
) -> Columns:
    count = len(offsets)
    return {
        "stream": [stream] * count,
        "position": positions,
        "topic": [topic] * count,
        "partition": [partition] * count,
        "offset": offsets,
    }


def _record_id(parsed: Parsed) -> str | None:
    if isinstance(parsed, CreditGrant):
        return parsed.grant_id
    if isinstance(parsed, CatalogueRecord):
        return parsed.key
    return parsed.event_id


def _same_time(at: datetime, count: int, unit: pa.DataType) -> pa.Array:
    """One moment for every row: converted once, not once a row."""
    return pa.array(np.full(count, to_micros(at), dtype=np.int64), MICROS).cast(unit, safe=False)


def _schema_id(value: bytes) -> int | None:
    """The registry id of a Confluent-framed value; none for anything else."""
    return HEADER.unpack_from(value)[1] if len(value) >= HEADER.size and value[0] == 0 else None
