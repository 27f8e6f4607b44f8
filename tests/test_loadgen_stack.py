"""A load run through the real broker and registry lands exactly as its manifest says."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient

from bench.loadgen import LoadSpec, live_start, run_loadgen, verdict
from bench.manifest import load_manifest, totals_of
from schemas.producer import UsageProducer
from schemas.serde import Decoder, Encoder
from schemas.validation import TimeBounds, utc_now

pytestmark = pytest.mark.stack


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"loadgen-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    payloads: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(payloads) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                assert message.error() is None, message.error()
                payloads.append(message.value() or b"")
        payloads.extend(m.value() or b"" for m in consumer.consume(num_messages=1000, timeout=2.0))
    finally:
        consumer.close()
    return payloads


def test_a_load_run_lands_exactly_as_its_manifest_says(
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    topic_factory: Callable[[int], str],
    tmp_path: Path,
) -> None:
    spec = LoadSpec(
        count=3000,
        start=live_start(),
        seed=11,
        duplicate_rate=0.05,
        late_rate=0.05,
        out_of_order_rate=0.05,
        malformed_rate=0.05,
    )
    topic = topic_factory(4)
    producer = UsageProducer(kafka_bootstrap, topic, Encoder(registry_client))
    manifest = run_loadgen(spec, producer, registry_client, manifest_path=tmp_path / "m.json")
    assert load_manifest(tmp_path / "m.json") == manifest

    payloads = consume_all(kafka_bootstrap, topic, manifest.sent_total)
    assert len(payloads) == manifest.sent_total

    now, bounds = utc_now(), TimeBounds()
    rejected: Counter[str] = Counter()
    unique: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for decoded in Decoder(registry_client).decode_batch(payloads):
        reason = verdict(decoded, now, spec, bounds)
        if reason is not None:
            rejected[reason.value] += 1
        elif isinstance(decoded, dict):
            duplicates += decoded["event_id"] in unique
            unique.setdefault(decoded["event_id"], decoded)

    assert rejected == {reason: n for reason, n in manifest.malformed.items() if n}
    assert len(unique) == manifest.unique_events
    assert duplicates == manifest.duplicates
    assert totals_of(unique.values()) == manifest.totals
