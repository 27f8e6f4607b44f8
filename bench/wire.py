"""How a generated send becomes bytes on the topic: the writer schema versions, a
registered writer that lacks `customer_id`, truncation, or bytes given as they are."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import parse_schema

from schemas.event import RejectReason
from schemas.serde import HEADER, Encoder, frame, schema_text

BROKEN_SUBJECT = "usage-events-broken-value"
"""Where the writer schema lacking `customer_id` is registered, away from the real subject."""


class Wire(StrEnum):
    """How a send becomes bytes on the topic."""

    V1 = "v1"
    V2 = "v2"
    V3 = "v3"
    """With `corrects`: a correction names the event it corrects."""
    BROKEN = "broken"
    """Framed with a registered writer schema that lacks `customer_id`."""
    TRUNCATED = "truncated"
    """Framed with v2, then cut in the middle of the Avro body."""
    RAW = "raw"
    """The body is already the bytes to send."""


@dataclass(frozen=True, slots=True)
class Send:
    """One message in send order, and what the pipeline must make of it."""

    sent_at: datetime
    """On the generator's simulated clock; validate against this as `now`."""
    key: str
    wire: Wire
    body: dict[str, Any] | bytes
    """A record in contract shape, or the exact bytes when `wire` is RAW."""
    expect: RejectReason | None = None
    """None: valid, must be rated once however often it is sent."""
    duplicate: bool = False
    late: bool = False
    out_of_order: bool = False

    @property
    def record(self) -> dict[str, Any]:
        if isinstance(self.body, bytes):
            raise TypeError("a raw send has bytes, not a record")
        return self.body


class WireEncoders:
    """Registers every writer a load run uses and turns sends into bytes."""

    def __init__(self, client: SchemaRegistryClient):
        self._versions = {
            wire: Encoder(client, int(wire[1])) for wire in (Wire.V1, Wire.V2, Wire.V3)
        }
        text = _broken_schema_text()
        self._broken_id: int = client.register_schema(BROKEN_SUBJECT, Schema(text, "AVRO"))
        self._broken = parse_schema(json.loads(text))

    def encode(self, send: Send) -> bytes:
        if isinstance(send.body, bytes):
            return send.body
        if send.wire is Wire.BROKEN:
            return frame(self._broken_id, self._broken, send.body)
        if send.wire is Wire.TRUNCATED:
            whole = self._versions[Wire.V2].encode(send.body)
            return whole[: (len(whole) + HEADER.size) // 2]
        return self._versions[send.wire].encode(send.body)


@cache
def _broken_schema_text() -> str:
    """The latest contract minus `customer_id`: what a producer on a stale fork would register."""
    schema = json.loads(schema_text())
    schema["fields"] = [field for field in schema["fields"] if field["name"] != "customer_id"]
    return json.dumps(schema)
