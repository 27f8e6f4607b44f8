"""`meterflow bench`: throughput, latency and memory on the real broker and chDB.

Prints one figure a line, `name value`, the last being the end-to-end rate (from
the first ClickHouse flush to the last, so start-up is excluded as it is from the
bare rate) and its ratio to the bare consume-and-decode rate: the ceiling of any
Python consumer on this machine, measured in the same run on the same topic.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bench.faults import FaultSpec, run_faults
from bench.loadgen import LoadSpec, live_start, run_loadgen
from flows import metrics, runner
from flows.producing import open_producer
from flows.settings import Settings
from infra import stack
from schemas.serde import Decoder
from sinks.batch import Row
from sinks.tables import RAW_EVENTS

LATENCY_RATE = 2_000
LATENCY_SECONDS = 10


def bench(settings: Settings, count: int) -> None:
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

    def on_flush(tables: dict[str, list[Row]], seconds: float) -> None:
        metrics.record_flush(tables, seconds)
        flushes.append((time.monotonic(), len(tables.get(RAW_EVENTS, ()))))

    started = time.monotonic()
    runner.run(settings, on_flush=on_flush)
    _figure(
        "end_to_end.with_startup_events_per_second",
        manifest.sent_total / (time.monotonic() - started),
    )
    (first, _), (last, _) = flushes[0], flushes[-1]
    end_to_end = sum(rows for _, rows in flushes[1:]) / (last - first)

    latencies = _latencies(runner.fresh_run(settings, "bench_latency"), registry)
    _figure("latency.produce_to_queryable_p50_ms", 1000 * statistics.median(latencies))
    _figure(
        "latency.produce_to_queryable_p99_ms", 1000 * statistics.quantiles(latencies, n=100)[98]
    )
    _figure("memory.peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"end_to_end.events_per_second {end_to_end:.0f} ({end_to_end / bare:.2f} of bare)")


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

    def on_flush(tables: dict[str, list[Row]], seconds: float) -> None:
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


def _figure(name: str, value: float) -> None:
    print(f"{name} {value:.1f}", flush=True)
