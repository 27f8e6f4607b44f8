"""Outcomes into table columns, by name, a whole batch at a time.

Positions: rows of a Kafka partition's stream (raw events, the dead letters of
decoding) are at their offsets; rows of a shard's stream are numbered per table by
the counter the shard keeps in its state, so a replay numbers them again the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from metering.catalogue.records import CatalogueRecord
from metering.outcomes import DeadLetter, Duplicate, GrantApplied, Outcomes, Parked, Rated
from metering.rating.alerts import Alert
from metering.rating.credits import CreditExpiry, CreditGrant
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
Build = Callable[[str, Sequence[int], Any, datetime], Columns]
"""A table's columns from its outcomes: (stream, positions, outcomes, now)."""

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
    if letters:
        positions = [letter.origin.offset for letter in letters]
        out.add(DEAD_LETTERS, dead_letter_columns(stream, positions, letters, received_at))
    return out


def shard_batch(stream: str, positions: Counter[str], outcomes: Outcomes) -> SinkBatch:
    """A shard's outcomes of one batch, each kind in the shard's order. A table without
    rows in the batch costs nothing: most batches have only rated rows."""
    now = datetime.now(UTC)
    out = SinkBatch(stream)
    adjusted = [r for r in outcomes.rated if r.adjustment]
    tables: tuple[tuple[str, Sequence[Any], Build], ...] = (
        (RATED_USAGE, outcomes.rated, _rated),
        (LATE_ADJUSTMENTS, adjusted, _late_adjustments),
        (DUPLICATES, outcomes.duplicates, _duplicates),
        (DEAD_LETTERS, outcomes.dead_letters, dead_letter_columns),
        (CREDIT_GRANTS, outcomes.grants, _grants),
        (CREDIT_EXPIRIES, outcomes.expiries, _expiries),
        (ALERTS, outcomes.alerts, _alerts),
        (PARKED_USAGE, outcomes.parked, _parked),
    )
    for table, items, build in tables:
        if items:
            first = positions[table]
            positions[table] = first + len(items)
            out.add(table, build(stream, range(first, first + len(items)), items, now))
    return out


def _rated(stream: str, positions: Sequence[int], rated: Sequence[Rated], now: datetime) -> Columns:
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


def _late_adjustments(
    stream: str, positions: Sequence[int], adjusted: Sequence[Rated], _now: datetime
) -> Columns:
    lines = [r.line for r in adjusted]
    return {
        **_origins(stream, positions, [r.consumed.origin for r in adjusted]),
        **_fields(lines, "event_id", "customer_id", "timestamp"),
        "original_period_start": [line.period_start for line in lines],
        **_fields(lines, "meter", "model", *_MONEY, "currency"),
        "lateness_ms": [r.lateness_ms for r in adjusted],
        "watermark": [from_micros(r.watermark_us) for r in adjusted],
    }


def _duplicates(
    stream: str, positions: Sequence[int], duplicates: Sequence[Duplicate], _now: datetime
) -> Columns:
    return {
        **_origins(stream, positions, [d.consumed.origin for d in duplicates]),
        **_fields([d.consumed.event for d in duplicates], "event_id", "customer_id", "timestamp"),
        "first_seen_timestamp": [from_micros(d.first_us) for d in duplicates],
        "fingerprint": [d.consumed.fingerprint for d in duplicates],
        "first_fingerprint": [d.first_fingerprint for d in duplicates],
        "conflicting": [d.conflicting for d in duplicates],
    }


def _grants(
    stream: str, positions: Sequence[int], grants: Sequence[GrantApplied], _now: datetime
) -> Columns:
    consumed = [g.consumed for g in grants]
    return {
        **_origins(stream, positions, [c.origin for c in consumed]),
        **_fields(
            [c.grant for c in consumed],
            "grant_id",
            "customer_id",
            "credits",
            "effective_at",
            "expires_at",
        ),
        "amount": [g.amount for g in grants],
    }


def _expiries(
    stream: str, positions: Sequence[int], expiries: Sequence[CreditExpiry], _now: datetime
) -> Columns:
    return {
        "stream": [stream] * len(expiries),
        "position": positions,
        **_fields(expiries, "grant_id", "customer_id", "expires_at", "credits", "amount"),
    }


def _alerts(
    stream: str, positions: Sequence[int], alerts: Sequence[Alert], _now: datetime
) -> Columns:
    return {
        "stream": [stream] * len(alerts),
        "position": positions,
        **_fields(alerts, "alert_id", "customer_id", "threshold", "value", "period_start", "at"),
        "kind": [str(a.kind) for a in alerts],
        "grant_id": [a.grant_id for a in alerts],
    }


def _parked(
    stream: str, positions: Sequence[int], parked: Sequence[Parked], now: datetime
) -> Columns:
    held = [p.consumed for p in parked]
    return {
        **_origins(stream, positions, [c.origin for c in held]),
        "action": [p.action for p in parked],
        **_fields(parked, "event_id", "customer_id", "timestamp"),
        "kafka_timestamp": [c.origin.kafka_timestamp_ms for c in held],
        "at": _same_time(now, len(parked), MICROS),
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


def _same_time(at: datetime, count: int, unit: pa.TimestampType) -> pa.Array:
    """One moment for every row: converted once, not once a row (and without a cast,
    which costs far more than the conversion on a short column)."""
    ticks = to_micros(at) // (1000 if unit.unit == "ms" else 1)
    return pa.array(np.full(count, ticks, dtype=np.int64), unit)


def _schema_id(value: bytes) -> int | None:
    """The registry id of a Confluent-framed value; none for anything else."""
    return HEADER.unpack_from(value)[1] if len(value) >= HEADER.size and value[0] == 0 else None
