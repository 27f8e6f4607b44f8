"""Micro-benchmark of the consumer's hot path: Confluent-framed Avro bytes to validated events.

The payloads are exactly what `Encoder.encode` writes (v1 and v2 writers mixed as the
load generator mixes them), framed with schema id = contract version. The Decoder
gets its writer schemas from the shipped `.avsc` files instead of the registry: it
fetches each id once and caches it, so after a warm-up pass the timed loops run the
flow's steady state, with no lookup and no network in them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from bench.loadgen import DEFAULT_SPAN, LoadSpec, generate
from bench.wire import Wire
from schemas.event import Rejection, UsageEvent
from schemas.serde import Decoder, frame, parsed_schema, schema_text
from schemas.validation import TimeBounds, validate

BENCH_START = datetime(2025, 1, 1, tzinfo=UTC)
_VERSIONS = {Wire.V1: 1, Wire.V2: 2}


class _ShippedSchemas:
    """The one registry call a Decoder makes per schema id, answered from the package."""

    def get_schema(self, schema_id: int) -> Schema:
        return Schema(schema_text(schema_id), "AVRO")


def bench_decode(n: int = 100_000, repeat: int = 5) -> None:
    """Print microseconds per event for `Decoder.decode_batch`, alone and followed by
    `validate`; the best of `repeat` passes, since noise only ever adds time."""
    payloads = _payloads(n)
    decoder = Decoder(cast(SchemaRegistryClient, _ShippedSchemas()))
    now, bounds = BENCH_START + DEFAULT_SPAN, TimeBounds()

    def decode_validate() -> list[UsageEvent | Rejection]:
        return [
            r if isinstance(r, Rejection) else validate(r, now, bounds, typed=True)
            for r in decoder.decode_batch(payloads)
        ]

    rejected = [r for r in decode_validate() if isinstance(r, Rejection)]
    if rejected:
        raise RuntimeError(f"{len(rejected)} benchmark events were rejected: {rejected[0]}")
    decode = _best_seconds(lambda: decoder.decode_batch(payloads), repeat)
    full = _best_seconds(decode_validate, repeat)
    print(f"decode.us_per_event {decode / n * 1e6:.2f}")
    print(f"decode_validate.us_per_event {full / n * 1e6:.2f}")


def _payloads(n: int) -> list[bytes]:
    spec = LoadSpec(
        count=n,
        start=BENCH_START,
        duplicate_rate=0,
        late_rate=0,
        out_of_order_rate=0,
        malformed_rate=0,
    )
    sends, _ = generate(spec)
    schemas = {version: parsed_schema(version) for version in _VERSIONS.values()}
    return [
        frame(_VERSIONS[send.wire], schemas[_VERSIONS[send.wire]], send.record) for send in sends
    ]


def _best_seconds(run: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    bench_decode()
