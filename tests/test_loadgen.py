"""The load generator: reproducible sends, a manifest that matches them, and malformed
sends that fail in the pipeline's own decode and validate path exactly as tagged."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bench.loadgen import DeliveryError, LoadSpec, generate, live_start, run_loadgen, verdict
from bench.manifest import Manifest, Total, load_manifest, write_manifest
from bench.spoiling import MALFORMED_REASONS
from bench.usage_mix import customer_ids
from bench.wire import Send, WireEncoders
from schemas.producer import UsageProducer
from schemas.serde import Decoder, Encoder
from schemas.validation import TimeBounds

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SPEC = LoadSpec(
    count=3000,
    start=START,
    seed=7,
    duplicate_rate=0.04,
    late_rate=0.05,
    out_of_order_rate=0.05,
    malformed_rate=0.04,
)


class InMemoryRegistry:
    """FOR UNIT TESTS ONLY: the two registry calls Encoder and Decoder make, kept in a dict.

    tests/test_loadgen_stack.py runs the same checks against the real registry.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, Schema] = {}

    def register_schema(self, subject: str, schema: Schema) -> int:
        schema_id = self._ids.setdefault(schema.schema_str or "", len(self._ids) + 1)
        self._schemas[schema_id] = schema
        return schema_id

    def get_schema(self, schema_id: int) -> Schema:
        if schema_id not in self._schemas:
            raise SchemaRegistryError(404, 40403, f"schema {schema_id} not found")
        return self._schemas[schema_id]


def in_memory_registry() -> SchemaRegistryClient:
    return cast(SchemaRegistryClient, InMemoryRegistry())


@pytest.fixture(scope="module")
def generated() -> tuple[list[Send], Manifest]:
    return generate(SPEC)


def test_same_seed_and_spec_give_identical_sends_bytes_and_manifest(
    generated: tuple[list[Send], Manifest],
) -> None:
    sends, manifest = generated
    again, again_manifest = generate(SPEC)
    assert again == sends
    assert again_manifest.to_json() == manifest.to_json()
    first, second = WireEncoders(in_memory_registry()), WireEncoders(in_memory_registry())
    assert [first.encode(s) for s in sends] == [second.encode(s) for s in again]


def test_a_different_seed_gives_different_traffic(generated: tuple[list[Send], Manifest]) -> None:
    sends, manifest = generated
    other, other_manifest = generate(replace(SPEC, seed=SPEC.seed + 1))
    assert [s.body for s in other] != [s.body for s in sends]
    assert other_manifest.totals != manifest.totals


def test_manifest_matches_a_recount_with_duplicates_collapsed(
    generated: tuple[list[Send], Manifest],
) -> None:
    sends, manifest = generated
    first_seen: dict[str, dict[str, Any]] = {}
    valid_sends = 0
    for send in sends:
        if send.expect is None:
            valid_sends += 1
            record = send.record
            assert first_seen.setdefault(record["event_id"], record) == record
    totals: Counter[tuple[str, str, str, str]] = Counter()
    for record in first_seen.values():
        for dimension, quantity in record["quantities"].items():
            totals[record["customer_id"], record["meter"], record["model"], dimension] += quantity
    per_customer = Counter(record["customer_id"] for record in first_seen.values())
    malformed = Counter(send.expect.value for send in sends if send.expect is not None)

    assert list(manifest.totals) == [Total(*key, q) for key, q in sorted(totals.items())]
    assert manifest.unique_events == len(first_seen) == SPEC.count
    assert manifest.duplicates == valid_sends - len(first_seen)
    assert manifest.events_per_customer == {c: per_customer[c] for c in customer_ids(24)}
    assert manifest.malformed == {r.value: malformed[r.value] for r in MALFORMED_REASONS}
    assert manifest.sent_total == len(sends) == valid_sends + sum(malformed.values())


def test_rates_set_the_shape_of_the_run(generated: tuple[list[Send], Manifest]) -> None:
    _, manifest = generated
    malformed = sum(manifest.malformed.values())
    assert abs(malformed / manifest.sent_total - SPEC.malformed_rate) < 1 / manifest.sent_total
    duplicates = manifest.duplicates
    assert abs(duplicates / manifest.sent_total - SPEC.duplicate_rate) < 1 / manifest.sent_total
    assert manifest.late == round(SPEC.count * SPEC.late_rate)
    assert manifest.out_of_order == round(SPEC.count * SPEC.out_of_order_rate)
    assert all(manifest.malformed.values()), "every reason is covered"
    heaviest = sorted(manifest.events_per_customer.values(), reverse=True)
    assert sum(heaviest[:3]) > SPEC.count / 2, "a few heavy customers dominate"


def test_send_times_model_late_reordered_and_retried_traffic(
    generated: tuple[list[Send], Manifest],
) -> None:
    sends, _ = generated
    assert [s.sent_at for s in sends] == sorted(s.sent_at for s in sends)
    first_sent: dict[str, datetime] = {}
    latest_event = datetime.min.replace(tzinfo=UTC)
    arrived_behind = 0
    for send in (s for s in sends if s.expect is None):
        record = send.record
        lag = send.sent_at - record["timestamp"]
        if send.duplicate:
            assert send.sent_at >= first_sent[record["event_id"]]
            continue
        first_sent[record["event_id"]] = send.sent_at
        if send.late:
            assert timedelta(minutes=2) <= lag <= timedelta(hours=6)
            assert record["mode"] == "batch"
        elif send.out_of_order:
            assert timedelta(seconds=1) <= lag <= timedelta(seconds=30)
        else:
            assert lag == timedelta(0)
            assert START <= record["timestamp"] < START + SPEC.span
        if send.out_of_order and not send.late:
            arrived_behind += record["timestamp"] < latest_event
        latest_event = max(latest_event, record["timestamp"])
    assert arrived_behind > 0.5 * sum(s.out_of_order for s in sends)


def test_every_send_gets_its_tagged_outcome_from_decode_and_validate(
    generated: tuple[list[Send], Manifest],
) -> None:
    sends, _ = generated
    registry = in_memory_registry()
    encoders, decoder = WireEncoders(registry), Decoder(registry)
    seen: set[str] = set()
    for send in sends:
        decoded = decoder.decode(encoders.encode(send))
        assert verdict(decoded, send.sent_at, SPEC, TimeBounds()) == send.expect, send
        if send.expect is None:
            assert decoded == send.record
        else:
            seen.add(send.expect)
    assert seen == set(MALFORMED_REASONS)


def test_models_filter_limits_valid_traffic() -> None:
    spec = replace(SPEC, count=500, models=("h100", "sdxl"))
    sends, manifest = generate(spec)
    assert {s.record["model"] for s in sends if s.expect is None} == {"h100", "sdxl"}
    assert {t.model for t in manifest.totals} == {"h100", "sdxl"}


@pytest.mark.parametrize(
    "change",
    [
        {"customers": 1_000_001},
        {"customers": 0},
        {"count": -1},
        {"start": datetime(2025, 6, 1)},
        {"span": timedelta(0)},
        {"late_rate": 1.5},
        {"duplicate_rate": 0.6, "malformed_rate": 0.4},
        {"models": ("gpt-5",)},
        {"models": ()},
    ],
)
def test_impossible_specs_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        replace(SPEC, **change)


def test_spec_and_manifest_survive_json(
    generated: tuple[list[Send], Manifest], tmp_path: Path
) -> None:
    _, manifest = generated
    assert LoadSpec.from_json(SPEC.to_json()) == SPEC
    path = tmp_path / "manifest.json"
    write_manifest(manifest, path)
    assert load_manifest(path) == manifest
    assert generate(LoadSpec.from_json(load_manifest(path).spec))[1] == manifest


def test_live_start_ends_event_times_at_the_current_minute() -> None:
    now = datetime(2025, 6, 1, 12, 34, 56, 789, tzinfo=UTC)
    assert live_start(timedelta(hours=1), now) == datetime(2025, 6, 1, 11, 34, tzinfo=UTC)


def test_unacknowledged_sends_raise_and_write_no_manifest(tmp_path: Path) -> None:
    """A real producer pointed at a port nothing listens on: every send times out."""
    registry = in_memory_registry()
    spec = replace(SPEC, count=20, malformed_rate=0.1)
    producer = UsageProducer(
        "127.0.0.1:9", "usage-events", Encoder(registry), **{"message.timeout.ms": 500}
    )
    manifest_path = tmp_path / "manifest.json"
    sent, rate = generate(spec)[1].sent_total, 100.0
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=rf"0 of {sent} sends .* {sent} failed"):
        run_loadgen(spec, producer, registry, rate=rate, manifest_path=manifest_path)
    assert time.monotonic() - started >= (sent - 1) / rate
    assert not manifest_path.exists()
