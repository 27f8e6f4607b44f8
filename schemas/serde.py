"""Confluent wire format (magic byte, 4-byte schema id, Avro body) in both directions.

Schemas are registered and looked up through confluent-kafka's registry client;
bodies are written and read with fastavro, which is several times faster than the
client's per-message serializer and lets the flow decode a whole consumed batch
with one cached writer schema per id.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Iterable, Mapping
from copy import copy
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.event import Rejection, RejectReason

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
SUBJECT = "usage-events-value"
LATEST_VERSION = 3
USAGE = "usage_event"
CATALOGUE = "catalogue_record"
"""The contracts in `schemas/avro`: usage events, and the catalogue's records (v1)."""
SCHEMA_NOT_FOUND = (40403, 40400)
"""The error codes of a registry saying it holds no such id (40403 from Confluent and
Apicurio, 40400 from confluent-kafka's mock client); any other answer is an outage."""


class RegistryUnavailable(RuntimeError):
    """The registry did not answer as a registry: down, slow, or a wrong URL. Never a
    property of an event, so never a dead letter: the flow stops and resumes later."""


def open_registry(url: str, timeout: float = 10.0) -> SchemaRegistryClient:
    """A registry client whose every call times out, after checking that `url` is the
    root of a Confluent-compatible API."""
    client = SchemaRegistryClient({"url": url, "timeout": timeout})
    try:
        client.get_subjects()
    except SchemaRegistryError as exc:
        raise RegistryUnavailable(
            f"schema registry {url} answered HTTP {exc.http_status_code} to GET /subjects: "
            "is it the API root (for Apicurio, ending in /apis/ccompat/v7)?"
        ) from exc
    except Exception as exc:  # httpx raises one type per transport failure; all are outages
        raise RegistryUnavailable(f"schema registry {url} is unreachable: {exc}") from exc
    return client


@cache
def schema_text(version: int = LATEST_VERSION, contract: str = USAGE) -> str:
    """The Avro schema of a contract version, as shipped in `schemas/avro`."""
    return (resources.files("schemas") / "avro" / f"{contract}_v{version}.avsc").read_text()


def parsed_schema(version: int = LATEST_VERSION, contract: str = USAGE) -> Any:
    return parse_schema(json.loads(schema_text(version, contract)))


class Encoder:
    """Writes records with one registered writer schema."""

    def __init__(
        self,
        client: SchemaRegistryClient,
        version: int = LATEST_VERSION,
        subject: str = SUBJECT,
        contract: str = USAGE,
    ):
        text = schema_text(version, contract)
        self.schema_id: int = client.register_schema(subject, Schema(text, "AVRO"))
        self._schema = parsed_schema(version, contract)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return frame(self.schema_id, self._schema, record)


def frame(schema_id: int, schema: Any, record: Mapping[str, Any]) -> bytes:
    """A record in Confluent wire format under any schema id (tests frame bad ids with it)."""
    out = io.BytesIO()
    out.write(HEADER.pack(MAGIC_BYTE, schema_id))
    schemaless_writer(out, schema, record)
    return out.getvalue()


class Decoder:
    """Reads any registered writer version into the latest reader schema.

    Writer schemas are fetched by id once and cached, ids the registry says it does
    not hold included, so a stream of bad ids costs one registry call. Any other
    failure raises `RegistryUnavailable` and is not cached.
    """

    def __init__(
        self,
        client: SchemaRegistryClient,
        url: str = "",
        reader_version: int = LATEST_VERSION,
        contract: str = USAGE,
    ):
        self._client = client
        self._url = url
        self._reader = parsed_schema(reader_version, contract)
        self._writers: dict[int, _Writer | Rejection] = {}

    def decode(self, payload: bytes | None) -> dict[str, Any] | Rejection:
        if payload is None or len(payload) < HEADER.size:
            return Rejection(
                RejectReason.CORRUPT_BYTES,
                f"{len(payload or b'')} bytes is too short for the Confluent wire format",
            )
        magic, schema_id = HEADER.unpack_from(payload)
        if magic != MAGIC_BYTE:
            return Rejection(
                RejectReason.BAD_MAGIC_BYTE,
                f"first byte is {magic:#04x}, expected 0x00 (Confluent wire format)",
            )
        writer = self._writer(schema_id)
        if isinstance(writer, Rejection):
            return writer
        body = io.BytesIO(payload)
        body.seek(HEADER.size)
        try:
            record = schemaless_reader(body, writer.schema, writer.reader)
        except Exception as exc:  # fastavro raises many types on garbage; all mean the same here
            return Rejection(
                RejectReason.CORRUPT_BYTES,
                f"Avro body does not match schema {schema_id}: {type(exc).__name__}: {exc}",
            )
        if body.tell() != len(payload):
            return Rejection(
                RejectReason.CORRUPT_BYTES,
                f"{len(payload) - body.tell()} trailing bytes after the Avro body",
            )
        if not isinstance(record, dict):
            return Rejection(RejectReason.CORRUPT_BYTES, f"schema {schema_id} is not a record")
        record.update(writer.defaults)
        for name, default in writer.fresh:
            record[name] = copy(default)
        return record

    def decode_batch(self, payloads: Iterable[bytes | None]) -> list[dict[str, Any] | Rejection]:
        return [self.decode(p) for p in payloads]

    def _writer(self, schema_id: int) -> _Writer | Rejection:
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch_writer(schema_id)
            self._writers[schema_id] = writer
        return writer

    def _fetch_writer(self, schema_id: int) -> _Writer | Rejection:
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.error_code in SCHEMA_NOT_FOUND:
                return Rejection(
                    RejectReason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the registry"
                )
            raise self._outage(
                schema_id, f"answered HTTP {exc.http_status_code} ({exc.error_message})"
            ) from exc
        except Exception as exc:  # httpx raises one type per transport failure; all are outages
            raise self._outage(schema_id, f"did not answer: {exc}") from exc
        if schema.schema_type not in (None, "AVRO"):
            return Rejection(
                RejectReason.UNKNOWN_SCHEMA_ID,
                f"schema id {schema_id} is {schema.schema_type}, not Avro",
            )
        try:
            writer = parse_schema(json.loads(schema.schema_str or ""))
        except Exception as exc:
            return Rejection(
                RejectReason.UNKNOWN_SCHEMA_ID,
                f"schema id {schema_id} is not a usable Avro schema: {exc}",
            )
        if not isinstance(writer, dict) or writer.get("type") != "record":
            return Rejection(
                RejectReason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not an Avro record"
            )
        missing = _required_fields(self._reader) - {f["name"] for f in writer["fields"]}
        if missing:
            return Rejection(
                RejectReason.MISSING_FIELD,
                f"schema id {schema_id} lacks required field(s) {sorted(missing)}",
            )
        return _Writer.of(writer, self._reader)

    def _outage(self, schema_id: int, what: str) -> RegistryUnavailable:
        message = f"schema registry {self._url} {what} when asked for schema id {schema_id}"
        log.error("%s; stopping, nothing is dead-lettered for it", message)
        return RegistryUnavailable(message)


@dataclass(frozen=True, slots=True)
class _Writer:
    """How to read one writer schema into the reader's shape. Avro's schema resolution
    costs as much again as the read itself; a writer whose fields all have the reader's
    types (every earlier version of the contract: they only lack later fields) is read
    as written and given the reader's defaults for the fields it lacks."""

    schema: Any
    reader: Any
    """The reader schema to resolve into, or None to read as written."""
    defaults: dict[str, Any]
    """Defaults of the fields the writer lacks, null or a scalar: shared by every record."""
    fresh: tuple[tuple[str, Any], ...]
    """Defaults that are maps or arrays: each record gets its own copy."""

    @classmethod
    def of(cls, writer: Any, reader: Any) -> _Writer:
        types = {field["name"]: field["type"] for field in reader["fields"]}
        if any(types.get(field["name"]) != field["type"] for field in writer["fields"]):
            return cls(writer, reader, {}, ())
        written = {field["name"] for field in writer["fields"]}
        lacking = {f["name"]: f["default"] for f in reader["fields"] if f["name"] not in written}
        fresh = {name: d for name, d in lacking.items() if isinstance(d, dict | list)}
        shared = {name: d for name, d in lacking.items() if name not in fresh}
        return cls(writer, None, shared, tuple(fresh.items()))


def _required_fields(schema: dict[str, Any]) -> set[str]:
    return {f["name"] for f in schema["fields"] if "default" not in f}
