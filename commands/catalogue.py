"""`meterflow catalogue apply FILE...` and `meterflow catalogue show [--at TIME]`.

The live catalogue is the seed files of the settings overlaid with the catalogue topic
read to its end, in the order the flow applies it. `apply` checks the files, prints
what they change against it and publishes only those records; `show` prints what is in
force at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from commands.topic_reader import read_to_end
from flows.catalogue import catalogue_parser, seed_catalogue
from flows.settings import Settings
from metering.catalogue.authoring import changes, read_files
from metering.catalogue.catalogue import Catalogue
from metering.catalogue.records import CatalogueRecord, InvalidRecord
from metering.catalogue.view import in_force
from schemas.event import Rejection
from schemas.serde import CATALOGUE, Decoder, Encoder, open_registry


def live_catalogue(settings: Settings) -> tuple[Catalogue, list[str]]:
    """The seed and every record on the topic, in the shard order (append time, then
    partition and offset); records the flow refuses too are skipped, with the reason."""
    catalogue = seed_catalogue(settings)
    registry = open_registry(settings.registry_url)
    parse = catalogue_parser(Decoder(registry, settings.registry_url, 1, CATALOGUE))
    skipped: list[str] = []
    for read in read_to_end(settings.kafka_bootstrap, settings.catalogue_topic):
        record = parse(read.value, datetime.fromtimestamp(read.timestamp_ms / 1000, UTC))
        where = f"{settings.catalogue_topic}[{read.partition}]@{read.offset}"
        if isinstance(record, Rejection):
            skipped.append(f"{where}: {record.detail}")
            continue
        try:
            catalogue.apply(record)
        except InvalidRecord as exc:
            skipped.append(f"{where}: {record.key}: {exc}")
    return catalogue, skipped


def publish(settings: Settings, records: Sequence[CatalogueRecord]) -> None:
    """Send the records keyed `kind/id` and wait for every acknowledgement."""
    registry = open_registry(settings.registry_url)
    encoder = Encoder(registry, 1, f"{settings.catalogue_topic}-value", CATALOGUE)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    failures: list[str] = []
    now = datetime.now(UTC)
    for record in records:
        value = {"kind": str(record.kind), "id": record.id, "definition": record.text}
        producer.produce(
            settings.catalogue_topic,
            key=record.key.encode(),
            value=encoder.encode(value | {"published_at": now}),
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
        producer.poll(0)
    producer.flush(60)
    if failures:
        raise RuntimeError(f"{len(failures)} catalogue records not delivered: {failures[0]}")


def apply_files(settings: Settings, paths: Sequence[Path], dry_run: bool = False) -> int:
    authored = read_files(paths)
    live, skipped = live_catalogue(settings)
    for line in skipped:
        print(f"skipped on the topic: {line}", file=sys.stderr)
    _, diff = changes(live, authored)
    for change in diff:
        print(change.line())
    if not diff:
        print("no changes")
        return 0
    if dry_run:
        print(f"{len(diff)} changes not published (--dry-run)")
        return 0
    publish(settings, [change.record for change in diff])
    print(f"published {len(diff)} records to {settings.catalogue_topic}")
    return 0


def show(settings: Settings, at: datetime | None) -> int:
    live, skipped = live_catalogue(settings)
    for line in skipped:
        print(f"skipped on the topic: {line}", file=sys.stderr)
    print("\n".join(in_force(live, at or datetime.now(UTC))))
    return 0
