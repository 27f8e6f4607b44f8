"""Turn a decoded record (from Avro or JSON) into a `UsageEvent` or a `Rejection`.

Nothing here raises on bad input: every record ends as exactly one of the two,
which is what lets the flow account for every consumed offset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.event import Rejection, RejectReason, UsageEvent
from schemas.meters import METER_DIMENSIONS, MODES

MAX_QUANTITY = 10**15
MAX_ID_LENGTH = 256
_REQUIRED_STRINGS = ("event_id", "customer_id", "meter", "model", "provider")


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far from the clock an event time may be before it is absurd, not late."""

    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta | None = timedelta(days=35)


def validate(
    record: Mapping[str, Any],
    now: datetime,
    bounds: TimeBounds,
    typed: bool = False,
    catalogue_meters: bool = False,
) -> UsageEvent | Rejection:
    """Check one record against the contract; `now` is passed in so a batch shares one clock.

    `typed` records come from the Avro decoder, whose reader schema already fixes
    every field's presence and type, so only their meaning is checked: the hot path.
    With `catalogue_meters`, a meter that is not built in may be one of the live
    catalogue's, which the flow checks in order (`flows.catalogue`); only its quantities'
    values are checked here.
    """
    if typed:
        problem = _check_meaning(record, now, bounds, catalogue_meters)
    else:
        problem = _check(record, now, bounds, catalogue_meters)
    if problem is not None:
        ids = (_str_or_none(record.get("event_id")), _str_or_none(record.get("customer_id")))
        return Rejection(problem[0], problem[1], *ids)
    return _event(record)


def validate_decoded(
    records: Sequence[Mapping[str, Any] | Rejection],
    clock: Sequence[datetime],
    bounds: TimeBounds,
    catalogue_meters: bool = False,
) -> list[UsageEvent | Rejection]:
    """A decoded batch, each record judged by its own clock reading: the hot path.

    A plainly valid record (no correction, every check passed) costs one pass with the
    time limits worked out once per clock reading; any other goes through `validate`,
    the one place that words a rejection."""
    limits: dict[datetime, tuple[datetime | None, datetime]] = {}
    out: list[UsageEvent | Rejection] = []
    for record, now in zip(records, clock, strict=True):
        if isinstance(record, Rejection):
            out.append(record)
            continue
        window = limits.get(now)
        if window is None:
            oldest = None if bounds.max_age is None else now - bounds.max_age
            window = limits[now] = (oldest, now + bounds.max_future)
        if _plainly_valid(record, window, catalogue_meters):
            out.append(_event(record))
        else:
            out.append(validate(record, now, bounds, typed=True, catalogue_meters=catalogue_meters))
    return out


def _plainly_valid(
    record: Mapping[str, Any],
    window: tuple[datetime | None, datetime],
    catalogue_meters: bool,
) -> bool:
    """What `_check_meaning` checks, for a record the Avro reader schema has typed."""
    for name in _REQUIRED_STRINGS:
        value = record[name]
        if not value or len(value) > MAX_ID_LENGTH or value.isspace():
            return False
    if record.get("corrects") is not None:
        return False
    oldest, newest = window
    timestamp = record["timestamp"]
    if timestamp > newest or (oldest is not None and timestamp < oldest):
        return False
    quantities = record["quantities"]
    allowed = METER_DIMENSIONS.get(record["meter"])
    if not quantities or (allowed is None and not catalogue_meters):
        return False
    return all(
        (allowed is None or dimension in allowed) and 0 <= value <= MAX_QUANTITY
        for dimension, value in quantities.items()
    )


def _event(record: Mapping[str, Any]) -> UsageEvent:
    return UsageEvent(
        event_id=record["event_id"],
        timestamp=record["timestamp"],
        customer_id=record["customer_id"],
        meter=record["meter"],
        model=record["model"],
        provider=record["provider"],
        mode=record.get("mode") or "realtime",
        quantities=dict(record["quantities"]),
        project_id=record.get("project_id"),
        feature=record.get("feature"),
        properties=dict(record.get("properties") or {}),
        region=record.get("region"),
        corrects=record.get("corrects"),
    )


def _check(
    record: Mapping[str, Any], now: datetime, bounds: TimeBounds, catalogue_meters: bool = False
) -> tuple[RejectReason, str] | None:
    for name in (*_REQUIRED_STRINGS, "timestamp", "quantities"):
        if record.get(name) is None:
            return RejectReason.MISSING_FIELD, f"required field '{name}' is missing"
    for name in _REQUIRED_STRINGS:
        if not isinstance(record[name], str):
            return _bad_string(name)
    for name in ("project_id", "feature", "region", "corrects"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return RejectReason.INVALID_FIELD, f"'{name}' must be a string or null"
    properties = record.get("properties")
    if properties is not None and not _is_str_map(properties):
        return RejectReason.INVALID_FIELD, "'properties' must map strings to strings"
    mode = record.get("mode") or "realtime"
    if mode not in MODES:
        return RejectReason.INVALID_FIELD, f"'mode' must be one of {sorted(MODES)}, got {mode!r}"
    return _check_meaning(record, now, bounds, catalogue_meters)


def _check_meaning(
    record: Mapping[str, Any], now: datetime, bounds: TimeBounds, catalogue_meters: bool = False
) -> tuple[RejectReason, str] | None:
    for name in _REQUIRED_STRINGS:
        value = record[name]
        if not value.strip() or len(value) > MAX_ID_LENGTH:
            return _bad_string(name)
    corrects = record.get("corrects")
    if corrects is not None and (not corrects.strip() or len(corrects) > MAX_ID_LENGTH):
        return _bad_string("corrects")
    if corrects == record["event_id"]:
        return RejectReason.INVALID_FIELD, "an event cannot correct itself ('corrects')"
    return _check_time(record["timestamp"], now, bounds) or _check_quantities(
        record["meter"], record["quantities"], catalogue_meters, signed=corrects is not None
    )


def _bad_string(name: str) -> tuple[RejectReason, str]:
    detail = f"'{name}' must be a non-empty string of at most {MAX_ID_LENGTH} characters"
    return RejectReason.INVALID_FIELD, detail


def _check_time(ts: Any, now: datetime, bounds: TimeBounds) -> tuple[RejectReason, str] | None:
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        return RejectReason.INVALID_FIELD, "'timestamp' must be a time with a UTC offset"
    if ts - now > bounds.max_future:
        return (
            RejectReason.FUTURE_TIMESTAMP,
            f"timestamp {ts.isoformat()} is over {bounds.max_future} ahead of {now.isoformat()}",
        )
    if bounds.max_age is not None and now - ts > bounds.max_age:
        return (
            RejectReason.ANCIENT_TIMESTAMP,
            f"timestamp {ts.isoformat()} is more than {bounds.max_age} before {now.isoformat()}",
        )
    return None


def _check_quantities(
    meter: str, quantities: Any, catalogue_meters: bool = False, signed: bool = False
) -> tuple[RejectReason, str] | None:
    """`catalogue_meters`: meters the catalogue defines are checked in the shard's order;
    `signed`: a correction's quantities are deltas and may be negative."""
    allowed = METER_DIMENSIONS.get(meter)
    if allowed is None and not catalogue_meters:
        return (
            RejectReason.UNKNOWN_METER,
            f"meter {meter!r} is not one of {sorted(METER_DIMENSIONS)}",
        )
    if not isinstance(quantities, Mapping) or not quantities:
        return (
            RejectReason.INVALID_FIELD,
            "'quantities' must be a non-empty map of dimension to integer",
        )
    for dimension, value in quantities.items():
        if allowed is not None and dimension not in allowed:
            return (
                RejectReason.UNKNOWN_DIMENSION,
                f"meter {meter!r} has no dimension {dimension!r} (allowed: {sorted(allowed)})",
            )
        if isinstance(value, bool) or not isinstance(value, int):
            shown = "NaN" if isinstance(value, float) and math.isnan(value) else repr(value)
            return (
                RejectReason.INVALID_QUANTITY,
                f"quantity {dimension!r} must be an integer, got {shown}",
            )
        if value < 0 and not signed:
            return RejectReason.NEGATIVE_QUANTITY, f"quantity {dimension!r} is negative ({value})"
        if abs(value) > MAX_QUANTITY:
            return RejectReason.INVALID_QUANTITY, f"quantity {dimension!r} exceeds {MAX_QUANTITY}"
    return None


def _is_str_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def utc_now() -> datetime:
    return datetime.now(UTC)
