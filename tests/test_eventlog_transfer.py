"""Export a topic to an Avro event log, import it into another topic, and lose nothing."""

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bench.loadgen import LoadSpec, live_start, run_loadgen
from bench.manifest import totals_of
from commands.eventlogs import export_log, import_log
from flows.settings import Settings
from reports.event_logs import KafkaLog
from schemas.eventlog import read_event_log
from schemas.producer import UsageProducer
from schemas.serde import Decoder, Encoder

pytestmark = pytest.mark.stack


def test_export_then_import_carries_every_decodable_event(
    settings: Settings,
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    topic_factory: Callable[[int], str],
    tmp_path: Path,
) -> None:
    source, target = topic_factory(2), topic_factory(2)
    producer = UsageProducer(kafka_bootstrap, source, Encoder(registry_client))
    manifest = run_loadgen(
        LoadSpec(count=400, start=live_start(), seed=5), producer, registry_client
    )
    undecodable = sum(
        manifest.malformed[r]
        for r in ("corrupt_bytes", "bad_magic_byte", "unknown_schema_id", "missing_field")
    )

    exported, skipped = export_log(
        KafkaLog(kafka_bootstrap, source, Decoder(registry_client)), tmp_path / "a.avro"
    )
    assert (exported, skipped) == (manifest.sent_total - undecodable, undecodable)

    assert (
        import_log(settings.model_copy(update={"usage_topic": target}), tmp_path / "a.avro")
        == exported
    )
    again, none = export_log(
        KafkaLog(kafka_bootstrap, target, Decoder(registry_client)), tmp_path / "b.avro"
    )
    assert (again, none) == (exported, 0)

    first, second = (
        list(read_event_log(tmp_path / "a.avro")),
        list(read_event_log(tmp_path / "b.avro")),
    )
    assert sorted(r["event_id"] for r in first) == sorted(r["event_id"] for r in second)
    assert totals_of(first) == totals_of(second)
