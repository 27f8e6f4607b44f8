"""The typed usage event and the rejection that replaces it when input is bad.

The hot path builds thousands of these a second, so they are slotted dataclasses
rather than pydantic models; validation lives in `schemas.validation`. The records
made once per event (this event, and `metering.records`' Origin and Consumed, the
shard's outcomes and rated lines) are not frozen either: a frozen dataclass sets each
field through `object.__setattr__`, three times the cost of building it, and nothing
changes a record once it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from operator import attrgetter
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class PickledByPosition:
    """For slotted records that snapshots hold by the thousand: dataclasses' own state
    pickling looks up the fields of every instance; this passes them straight to the
    constructor, read by one getter per class."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        cls = type(self)
        getter = _GETTERS.get(cls)
        if getter is None:
            getter = _GETTERS[cls] = attrgetter(*cls.__slots__)  # type: ignore[call-overload]
        return cls, getter(self)


_GETTERS: dict[type[Any], attrgetter[Any]] = {}


@dataclass(slots=True)
class UsageEvent(PickledByPosition):
    """One validated usage event; field names match the Avro schema and JSON form."""

    event_id: str
    timestamp: datetime
    customer_id: str
    meter: str
    model: str
    provider: str
    mode: str
    quantities: Mapping[str, int]
    project_id: str | None = None
    feature: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    region: str | None = None
    corrects: str | None = None
    """The event_id of an earlier event this one corrects by signed quantity deltas."""


class RejectReason(StrEnum):
    """Why an input never became a rated event; stored verbatim in the dead-letter sink."""

    CORRUPT_BYTES = "corrupt_bytes"
    BAD_MAGIC_BYTE = "bad_magic_byte"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    NEGATIVE_QUANTITY = "negative_quantity"
    INVALID_QUANTITY = "invalid_quantity"
    UNKNOWN_METER = "unknown_meter"
    UNKNOWN_DIMENSION = "unknown_dimension"
    FILTERED_OUT = "filtered_out"
    FUTURE_TIMESTAMP = "future_timestamp"
    ANCIENT_TIMESTAMP = "ancient_timestamp"
    UNKNOWN_CUSTOMER = "unknown_customer"
    UNKNOWN_MODEL = "unknown_model"
    BEYOND_DEDUPE_HORIZON = "beyond_dedupe_horizon"
    INVALID_CORRECTION = "invalid_correction"
    INVALID_CATALOGUE_RECORD = "invalid_catalogue_record"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Bad input as data: a reason code and a message a person can act on."""

    reason: RejectReason
    detail: str
    event_id: str | None = None
    customer_id: str | None = None


def to_micros(ts: datetime) -> int:
    """Microseconds since the epoch: the exact integer form of an event time."""
    return (ts - EPOCH) // _MICROSECOND


def from_micros(us: int) -> datetime:
    return EPOCH + us * _MICROSECOND
