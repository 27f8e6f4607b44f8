"""The JSON-lines form of the event contract: RFC 3339 times, same field names as Avro."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any

from schemas.event import Rejection, RejectReason, UsageEvent
from schemas.validation import TimeBounds, validate


def parse_line(line: str) -> dict[str, Any] | Rejection:
    """One JSON line to a record ready for `schemas.validation.validate`."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        return Rejection(RejectReason.MALFORMED_JSON, f"not valid JSON: {exc}")
    return parse_record(record)


def parse_record(record: Any) -> dict[str, Any] | Rejection:
    """A decoded JSON value to a record ready for `schemas.validation.validate`: the
    HTTP API's events arrive already decoded, in a batch."""
    if not isinstance(record, dict):
        return Rejection(RejectReason.MALFORMED_JSON, "a usage event must be a JSON object")
    stamp = record.get("timestamp")
    if isinstance(stamp, str):
        try:
            record["timestamp"] = datetime.fromisoformat(stamp)
        except ValueError:
            return Rejection(
                RejectReason.INVALID_FIELD,
                f"'timestamp' {stamp!r} is not an RFC 3339 time",
                record.get("event_id") if isinstance(record.get("event_id"), str) else None,
            )
    elif stamp is not None:
        return Rejection(RejectReason.INVALID_FIELD, "'timestamp' must be an RFC 3339 string")
    return record


def event_from_line(line: str, now: datetime, bounds: TimeBounds) -> UsageEvent | Rejection:
    """One JSON line checked against the contract, as `meterflow produce` and `rate` read it."""
    record = parse_line(line)
    return record if isinstance(record, Rejection) else validate(record, now, bounds)


def line_problem(number: int, rejection: Rejection) -> str:
    """How a bad line of a JSON-lines file is reported."""
    return f"line {number}: {rejection.reason.value}: {rejection.detail}"


def to_record(event: UsageEvent) -> dict[str, Any]:
    """The event as a plain record, the shape the Avro encoder and JSON writer take.

    Field by field, not `dataclasses.asdict`, whose deep copies were most of the cost of
    an event taken over HTTP; the two maps are copied, the rest is immutable."""
    record = {f.name: getattr(event, f.name) for f in fields(event)}
    record["quantities"] = dict(event.quantities)
    record["properties"] = dict(event.properties)
    return record


def dump_line(record: dict[str, Any]) -> str:
    """A record as one JSON line; times as RFC 3339 with a `Z` suffix."""
    return json.dumps(record, default=_encode_default, separators=(",", ":"))


def _encode_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
