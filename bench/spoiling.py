"""Malformed sends: a realistic record spoiled so the pipeline must reject it with one
particular reason, through the bytes (framing, schema id) or through the contents."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from bench.wire import Wire
from schemas.event import RejectReason
from schemas.jsonform import dump_line
from schemas.serde import MAGIC_BYTE, frame, parsed_schema
from schemas.validation import MAX_QUANTITY

UNKNOWN_CUSTOMER_ID = "cust-9999"
UNPRICED_MODEL = "mystery-model-7b"
"""A model name no price book has."""
UNREGISTERED_SCHEMA_ID = 999_999

MALFORMED_REASONS: tuple[RejectReason, ...] = (
    RejectReason.CORRUPT_BYTES,
    RejectReason.BAD_MAGIC_BYTE,
    RejectReason.UNKNOWN_SCHEMA_ID,
    RejectReason.MISSING_FIELD,
    RejectReason.INVALID_FIELD,
    RejectReason.NEGATIVE_QUANTITY,
    RejectReason.INVALID_QUANTITY,
    RejectReason.UNKNOWN_DIMENSION,
    RejectReason.UNKNOWN_METER,
    RejectReason.FUTURE_TIMESTAMP,
    RejectReason.ANCIENT_TIMESTAMP,
    RejectReason.UNKNOWN_CUSTOMER,
    RejectReason.UNKNOWN_MODEL,
)
"""Every reason reachable through the Avro path, assigned round-robin to malformed sends."""


def spoil(
    rng: random.Random, reason: RejectReason, record: dict[str, Any], sent_at: datetime
) -> tuple[Wire, dict[str, Any] | bytes]:
    """Make a realistic record produce `reason`: a fault of the bytes or of the contents."""
    quantities = dict(record["quantities"])
    first = next(iter(quantities))
    match reason:
        case RejectReason.CORRUPT_BYTES:
            if rng.random() < 0.5:
                return Wire.RAW, bytes([MAGIC_BYTE, 0, 0])
            return Wire.TRUNCATED, record
        case RejectReason.BAD_MAGIC_BYTE:
            return Wire.RAW, dump_line(record).encode()
        case RejectReason.UNKNOWN_SCHEMA_ID:
            return Wire.RAW, frame(UNREGISTERED_SCHEMA_ID, _latest_schema(), record)
        case RejectReason.MISSING_FIELD:
            return Wire.BROKEN, {k: v for k, v in record.items() if k != "customer_id"}
        case RejectReason.INVALID_FIELD:
            record["provider"] = ""
        case RejectReason.NEGATIVE_QUANTITY:
            quantities[first] = -quantities[first]
        case RejectReason.INVALID_QUANTITY:
            quantities[first] = MAX_QUANTITY * 10
        case RejectReason.UNKNOWN_DIMENSION:
            quantities["audio_seconds"] = rng.randint(1, 600)
        case RejectReason.UNKNOWN_METER:
            record["meter"] = "video.generation"
        case RejectReason.FUTURE_TIMESTAMP:
            record["timestamp"] = sent_at + timedelta(days=rng.uniform(1, 30))
        case RejectReason.ANCIENT_TIMESTAMP:
            record["timestamp"] = sent_at - timedelta(days=rng.uniform(2 * 365, 10 * 365))
        case RejectReason.UNKNOWN_CUSTOMER:
            record["customer_id"] = UNKNOWN_CUSTOMER_ID
        case RejectReason.UNKNOWN_MODEL:
            record["model"] = UNPRICED_MODEL
        case _:
            raise ValueError(f"the load generator cannot produce {reason}")
    record["quantities"] = quantities
    return Wire.V2, record


@cache
def _latest_schema() -> Any:
    return parsed_schema()
