"""`meterflow bench`: throughput, latency and memory on the real broker and chDB.

Prints one figure a line, `name value`, the last being the end-to-end rate (from
the first ClickHouse flush to the last, so start-up is excluded as it is from the
bare rate) and its ratio to the bare consume-and-decode rate: the ceiling of any
Python consumer on this machine, measured in the same run on the same topic.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from prometheus_client import REGISTRY

from bench.cluster import flow_env, run_processes
from bench.faults import FaultSpec, run_faults
from bench.loadgen import LoadSpec, live_start, run_loadgen
from flows import metrics, runner
from flows.producing import open_producer
from flows.settings import Settings
from infra import stack
from schemas.serde import Decoder
from sinks.tables import RAW_EVENTS

STAGES = (
    "consume",
    "decode",
    "validate",
    "order",
    "dedupe",
    "rate",
    "rows",
    "insert",
    "snapshot",
)
LATENCY_RATE = 5_000
LATENCY_SECONDS = 10


def bench(settings: Settings, count: int, processes: int = 1) -> None:
    stack.up(settings.stack())
    settings = runner.fresh_run(settings, "bench_throughput")
    registry = SchemaRegistryClient({"url": settings.registry_url})

    started = time.monotonic()
    manifest = run_loadgen(
        LoadSpec(count=count, start=live_start(), seed=1), open_producer(settings), registry
    )
    _figure("producer.events_per_second", manifest.sent_total / (time.monotonic() - started))

    bare = _bare_rate(settings, registry, manifest.sent_total)
    _figure("bare.consume_decode_events_per_second", bare)

    flushes: list[tuple[float, int]] = []

    def on_flush(tables: dict[str, pa.Table], seconds: float) -> None:
        metrics.record_flush(tables, seconds)
        flushes.append((time.monotonic(), _rows(tables, RAW_EVENTS)))

    stages = _stage_seconds()
    started = time.monotonic()
    runner.run(settings, on_flush=on_flush)
    _figure(
        "end_to_end.with_startup_events_per_second",
        manifest.sent_total / (time.monotonic() - started),
    )
    spent = _stage_seconds()
    for stage in STAGES:
        per_event = (spent[stage] - stages[stage]) * 1e6 / manifest.sent_total
        _figure(f"stage.{stage}_us_per_event", per_event)
    end_to_end = _flush_rate(flushes)

    latencies = _latencies(runner.fresh_run(settings, "bench_latency"), registry)
    if len(latencies) >= 2:
        _figure("latency.produce_to_queryable_p50_ms", 1000 * statistics.median(latencies))
        p99 = statistics.quantiles(latencies, n=100)[98]
        _figure("latency.produce_to_queryable_p99_ms", 1000 * p99)
    else:
        print("latency.produce_to_queryable none (no rated row was queryable in the phase)")
    _figure("memory.peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if processes > 1:
        _scale_out(settings, manifest.sent_total, processes)
    if end_to_end is None:
        print("end_to_end.events_per_second none (fewer than two flushes in the run)")
    else:
        print(f"end_to_end.events_per_second {end_to_end:.0f} ({end_to_end / bare:.2f} of bare)")


def _scale_out(settings: Settings, events: int, processes: int) -> None:
    """The throughput run's topic again, by one process and by a cluster of `processes`,
    each from start to exit (start-up included, as both pay it), and whether the two
    agree on every total."""
    usage = {}
    for count in (1, processes):
        folder = settings.home / f"bench-processes-{count}"
        shutil.rmtree(folder, ignore_errors=True)
        env = flow_env(
            {
                **os.environ,
                "METERFLOW_USAGE_TOPIC": settings.usage_topic,
                "METERFLOW_CREDIT_GRANTS_TOPIC": settings.credit_grants_topic,
                "METERFLOW_CATALOGUE_TOPIC": settings.catalogue_topic,
                "METERFLOW_REDRIVE_TOPIC": settings.redrive_topic,
                "METERFLOW_UNKNOWN_CUSTOMERS": settings.unknown_customers,
            },
            folder,
        )
        started = time.monotonic()
        codes = run_processes(env, count, "--until-end")
        seconds = time.monotonic() - started
        if any(codes):
            print(f"processes.{count}.events_per_second none (exit codes {codes})")
            return
        _figure(f"processes.{count}.events_per_second", events / seconds)
        usage[count] = subprocess.run(
            [sys.executable, "-m", "commands.cli", "usage"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    print(f"processes.{processes}.same_totals_as_one {int(usage[1] == usage[processes])}")


def bench_faults(settings: Settings, events: int, kills: int) -> int:
    """The fault test at length, on 6 and 12 partitions; exit 1 if anything was off."""
    stack.up(settings.stack())
    clean = True
    for partitions in (6, 12):
        spec = FaultSpec(
            events=events, customers=2_000, partitions=partitions, kills=kills, rate=1_500
        )
        workdir = settings.home / f"bench-faults-{partitions}"
        shutil.rmtree(workdir, ignore_errors=True)
        report = run_faults(settings, spec, workdir)
        for name, value in report.figures().items():
            print(f"faults.partitions_{partitions}.{name} {value}", flush=True)
        clean = clean and report.clean
    return 0 if clean else 1


def _flush_rate(flushes: list[tuple[float, int]]) -> float | None:
    """Rows of raw events a second from the first flush to the last: start-up excluded."""
    if len(flushes) < 2 or flushes[-1][0] <= flushes[0][0]:
        return None
    return sum(rows for _, rows in flushes[1:]) / (flushes[-1][0] - flushes[0][0])


def _stage_seconds() -> dict[str, float]:
    """The worker's seconds per stage so far (`meterflow_stage_seconds_total`)."""
    return {
        stage: REGISTRY.get_sample_value("meterflow_stage_seconds_total", {"stage": stage}) or 0.0
        for stage in STAGES
    }


def _bare_rate(settings: Settings, registry: SchemaRegistryClient, expected: int) -> float:
    """Consume every partition and decode each record: no validation, state or sink."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.min.messages": 200_000,
        }
    )
    partitions = range(settings.usage_partitions)
    consumer.assign([TopicPartition(settings.usage_topic, p, OFFSET_BEGINNING) for p in partitions])
    decoder = Decoder(registry)
    started = time.monotonic()
    decoded, ended = 0, 0
    while ended < len(partitions):
        for msg in consumer.consume(5000, 1.0):
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                ended += 1
            elif error is None:
                decoder.decode(msg.value())
                decoded += 1
    elapsed = time.monotonic() - started
    consumer.close()
    assert decoded == expected, f"consumed {decoded} of {expected}"
    return decoded / elapsed


def _latencies(settings: Settings, registry: SchemaRegistryClient) -> list[float]:
    """Send at a steady rate while the flow runs; time each rated row becoming queryable."""
    latencies: list[float] = []

    def on_flush(tables: dict[str, pa.Table], seconds: float) -> None:
        metrics.record_flush(tables, seconds)
        latencies.extend(metrics.queryable_latencies(tables))

    spec = LoadSpec(count=LATENCY_RATE * LATENCY_SECONDS, start=live_start(), seed=2)
    producer = threading.Thread(
        target=run_loadgen, args=(spec, open_producer(settings), registry, LATENCY_RATE)
    )
    until = time.time() + LATENCY_SECONDS * 1.5
    producer.start()
    runner.run(settings, until=until, on_flush=on_flush)
    producer.join()
    return latencies


def _rows(tables: dict[str, pa.Table], table: str) -> int:
    rows = tables.get(table)
    return 0 if rows is None else int(rows.num_rows)


def _figure(name: str, value: float) -> None:
    print(f"{name} {value:.1f}", flush=True)
