"""Run the metering flow in this process, with Bytewax recovery always on."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from confluent_kafka import Consumer, TopicPartition

from flows import collector, metrics
from flows.dataflow import build_flow
from flows.kafka_source import partitions_of
from flows.settings import Settings
from infra import stack
from schemas.serde import open_registry
from sinks.clickhouse import connect
from sinks.reconcile import Reconciliation, reconcile
from sinks.writer import OnFlush

log = logging.getLogger(__name__)

RECOVERY_PARTITIONS = 4


def run(
    settings: Settings,
    workers: int = 1,
    process_id: int | None = None,
    addresses: str | None = None,
    until: float | None = None,
    on_flush: OnFlush = metrics.record_flush,
) -> None:
    """Blocks until the flow ends (at the topic's end when `settings.tail` is false, or at
    the first end after the Unix time `until`)."""
    preflight(settings)
    recovery = settings.recovery_dir
    assert recovery is not None
    if not recovery.exists():
        _init_recovery(recovery)
        log.info("initialised recovery store %s", recovery)
    log.info(
        "metering %s -> %s (%d worker(s), snapshot every %ss, recovery in %s)",
        settings.usage_topic,
        settings.clickhouse_dsn,
        workers,
        settings.snapshot_seconds,
        recovery,
    )
    cluster = addresses.split(";") if addresses else None
    collector.tune()
    cli_main(
        build_flow(settings, until, on_flush, workers * len(cluster or [""])),
        workers_per_process=workers,
        process_id=process_id,
        addresses=cluster,
        epoch_interval=timedelta(seconds=settings.snapshot_seconds),
        recovery_config=RecoveryConfig(str(recovery)),
    )


def _init_recovery(recovery: Path) -> None:
    """All partitions or none: made aside and renamed, so a process killed while making
    them leaves no store that cannot resume."""
    staging = recovery.with_name(f"{recovery.name}.init")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    init_db_dir(staging, RECOVERY_PARTITIONS)
    staging.rename(recovery)


def preflight(settings: Settings) -> None:
    """Fail before starting on what would otherwise stop the flow later: a registry URL
    that is not a registry, a topic that does not order by broker append time."""
    open_registry(settings.registry_url)
    topics = (settings.credit_grants_topic, settings.catalogue_topic, settings.redrive_topic)
    for topic in (settings.usage_topic, *topics):
        partitions_of(settings.kafka_bootstrap, topic)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "meterflow-reconcile"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def reconcile_topic(settings: Settings, topic: str | None = None) -> Reconciliation:
    """The usage topic's reconciliation, or another topic of usage (the redrive topic)."""
    topic = topic or settings.usage_topic
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    return reconcile(client, topic, end_offsets(settings.kafka_bootstrap, topic))


def fresh_run(settings: Settings, name: str) -> Settings:
    """Settings for a bounded run on new topics, an empty database and a new recovery
    store, all named after `name`: how the demo and the benchmarks start clean. Their
    load counts usage of an unknown customer as a producer's mistake, so it is
    dead-lettered at once, not parked."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    fresh = settings.model_copy(
        update={
            "usage_topic": f"usage-events-{name}-{stamp}",
            "credit_grants_topic": f"credit-grants-{name}-{stamp}",
            "catalogue_topic": f"catalogue-{name}-{stamp}",
            "redrive_topic": f"usage-redrive-{name}-{stamp}",
            "clickhouse_database": f"meterflow_{name}",
            "recovery_dir": settings.home / f"recovery-{name}",
            "tail": False,
            "unknown_customers": "dead_letter",
        }
    )
    config = fresh.stack()
    stack.create_topics(fresh.kafka_bootstrap, config.topics, config.compacted)
    client = clickhouse_connect.get_client(dsn=fresh.clickhouse_dsn)
    client.command(f"DROP DATABASE IF EXISTS {fresh.clickhouse_database}")
    client.close()
    shutil.rmtree(fresh.home / f"recovery-{name}", ignore_errors=True)
    return fresh
