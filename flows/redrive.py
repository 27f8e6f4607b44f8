"""Dead-lettered usage re-submitted into the live flow (`meterflow redrive`).

A redrive record names the dead letter's original Kafka coordinates and carries the
event as the flow had decoded it. Its shard deduplicates it on those coordinates rather
than on the event id (which the first arrival already holds), so a dead letter is rated
at most once however often it is redriven, within the dedupe horizon, and the rated row
keeps the coordinates in `redrive_of`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from metering.records import Redriven
from schemas.event import Rejection, RejectReason
from schemas.jsonform import parse_line
from schemas.validation import TimeBounds, validate


def redrive_value(original: str, reason: str, event_json: str) -> bytes:
    """A redrive record: the dead letter's coordinates and reason, and the event's JSON."""
    return json.dumps({"original": original, "reason": reason, "event": event_json}).encode()


def redrive_parser(bounds: TimeBounds) -> Callable[[bytes | None, datetime], Redriven | Rejection]:
    """Redrive records: the event checked as when it was first decoded."""

    def parse(value: bytes | None, now: datetime) -> Redriven | Rejection:
        try:
            record = json.loads(value or b"")
            original, line = str(record["original"]), str(record["event"])
        except (ValueError, KeyError, TypeError) as exc:
            return Rejection(RejectReason.MALFORMED_JSON, f"not a redrive record: {exc}")
        parsed = parse_line(line)
        if isinstance(parsed, Rejection):
            return parsed
        event = validate(parsed, now, bounds, catalogue_meters=True)
        return event if isinstance(event, Rejection) else Redriven(event, original)

    return parse
