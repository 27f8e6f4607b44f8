"""Prometheus metrics of a worker process, named after Prometheus conventions."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from metering.outcomes import Outcomes
from metering.records import ConsumedGrant
from metering.stopwatch import Stopwatch
from schemas.event import to_micros
from sinks.tables import RATED_USAGE

log = logging.getLogger(__name__)

CONSUMED = Counter(
    "meterflow_consumed_records_total", "Kafka records consumed", ["topic", "partition"]
)
CONSUMER_LAG = Gauge(
    "meterflow_consumer_lag_records",
    "Records in the partition not yet consumed: its high watermark minus the next offset",
    ["topic", "partition"],
)
EVENTS = Counter(
    "meterflow_events_total",
    "Consumed records by outcome: rated, late, adjustment, duplicate, conflicting_duplicate, "
    "dead_letter",
    ["outcome"],
)
DUPLICATES = Counter("meterflow_duplicates_total", "Re-sent events recognised and not rated")
LATE = Counter("meterflow_late_events_total", "Events behind the watermark, rated and flagged")
LATENESS = Histogram(
    "meterflow_event_lateness_seconds",
    "How far late events were behind their shard's newest event time",
    buckets=(60, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
DEAD_LETTERS = Counter("meterflow_dead_letters_total", "Records dead-lettered", ["reason"])
RATING_REJECTIONS = Counter(
    "meterflow_rating_errors_total",
    "Valid events the rating engine could not price (unknown customer or model)",
    ["reason"],
)
DEDUPE_IDS = Gauge("meterflow_dedupe_state_ids", "Event ids held in the dedupe window", ["shard"])
WATERMARK = Gauge(
    "meterflow_watermark_timestamp_seconds", "Newest event time seen, per shard", ["shard"]
)
WATERMARK_LAG = Gauge(
    "meterflow_watermark_lag_seconds",
    "Wall clock minus the newest event time, per shard",
    ["shard"],
)
SINK_ROWS = Histogram(
    "meterflow_sink_batch_rows",
    "Rows per ClickHouse flush",
    buckets=(10, 100, 1000, 5000, 10_000, 50_000, 100_000),
)
SINK_SECONDS = Histogram("meterflow_sink_flush_seconds", "Duration of a ClickHouse flush")


class BatchHistogram(Collector):
    """A histogram observed a flush at a time: prometheus-client's Histogram takes one
    value a call, a Python call per rated row on the insert thread."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]):
        self._name, self._documentation = name, documentation
        self._bounds = np.array(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_many(self, values: np.ndarray[tuple[int], np.dtype[np.float64]]) -> None:
        """`le` buckets: a value equal to a bound counts in that bound's bucket."""
        counts = np.bincount(
            np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts)
        )
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        bounds = [*map(floatToGoString, self._bounds.tolist()), "+Inf"]
        yield HistogramMetricFamily(
            self._name,
            self._documentation,
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=total,
        )


LATENCY = BatchHistogram(
    "meterflow_produce_to_queryable_seconds",
    "From an event's Kafka timestamp to its rated row being queryable in ClickHouse",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
HELD = Gauge(
    "meterflow_shard_held_records",
    "Records read but waiting for every partition to pass them (metering.ordering)",
    ["shard"],
)
ORDER_VIOLATIONS = Counter(
    "meterflow_order_violations_total",
    "Records that arrived below their shard's frontier: a partition's bound was wrong",
)
PARKED = Gauge(
    "meterflow_parked_events",
    "Usage events and credit grants of customers not in the catalogue yet, held in the "
    "shard's state",
    ["shard"],
)
PARKED_TOTAL = Counter("meterflow_parked_total", "Usage events parked for an unknown customer")
UNPARKED = Counter(
    "meterflow_unparked_total", "Parked usage events rated once their customer appeared"
)
PARKED_GRANTS = Counter(
    "meterflow_parked_grants_total",
    "Credit grants of a customer not in the catalogue: parked, released (applied once the "
    "customer appeared) or expired (dead-lettered past the bound)",
    ["action"],
)
ALERTS = Counter("meterflow_alerts_total", "Credit and budget alerts raised", ["kind"])
STAGE_SECONDS = Counter(
    "meterflow_stage_seconds_total",
    "Time the worker spent in each stage of the hot path: consume, decode, validate, order, "
    "dedupe, rate, rows, insert, snapshot",
    ["stage"],
)

_RATING_REASONS = frozenset({"unknown_customer", "unknown_model"})


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)


def record_consumed(topic: str, partition: int, count: int) -> None:
    CONSUMED.labels(topic, str(partition)).inc(count)


def record_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic, str(partition)).set(lag)


def record_rejections(reasons: dict[str, int]) -> None:
    for reason, count in reasons.items():
        EVENTS.labels("dead_letter").inc(count)
        DEAD_LETTERS.labels(reason).inc(count)


def record_shard(shard: str, outcomes: Outcomes, dedupe_ids: int, max_event_us: int) -> None:
    counts = outcomes.counts()
    for outcome, count in counts.items():
        EVENTS.labels(outcome).inc(count)
    DUPLICATES.inc(counts["duplicate"] + counts["conflicting_duplicate"])
    LATE.inc(counts["late"] + counts["adjustment"])
    for rated in outcomes.rated:
        if rated.late:
            LATENESS.observe(rated.lateness_ms / 1000)
    for reason, count in outcomes.reasons().items():
        DEAD_LETTERS.labels(reason).inc(count)
        if reason in _RATING_REASONS:
            RATING_REJECTIONS.labels(reason).inc(count)
    for alert in outcomes.alerts:
        ALERTS.labels(str(alert.kind)).inc()
    DEDUPE_IDS.labels(shard).set(dedupe_ids)
    WATERMARK.labels(shard).set(max_event_us / 1e6)
    WATERMARK_LAG.labels(shard).set(time.time() - max_event_us / 1e6)


def record_parking(shard: str, outcomes: Outcomes, parked: int) -> None:
    PARKED.labels(shard).set(parked)
    actions = collections.Counter(
        (isinstance(p.consumed, ConsumedGrant), p.action) for p in outcomes.parked
    )
    PARKED_TOTAL.inc(actions[False, "parked"])
    UNPARKED.inc(actions[False, "released"])
    for (grant, action), count in actions.items():
        if grant:
            PARKED_GRANTS.labels(action).inc(count)


def record_order(shard: str, held: int, violations: int) -> None:
    HELD.labels(shard).set(held)
    ORDER_VIOLATIONS.inc(violations)


def record_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage).inc(seconds)


def record_stages(watch: Stopwatch) -> None:
    for stage, seconds in watch.take().items():
        STAGE_SECONDS.labels(stage).inc(seconds)


def queryable_latencies(
    tables: dict[str, pa.Table],
) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
    """Seconds from each rated event's Kafka timestamp to now, when its row became queryable."""
    rated = tables.get(RATED_USAGE)
    if rated is None:
        return np.zeros(0)
    now_us = to_micros(datetime.now(UTC))
    stamps = rated.column("kafka_timestamp").cast("int64").to_numpy()
    latencies: np.ndarray[tuple[int], np.dtype[np.float64]] = (now_us - stamps * 1000) / 1e6
    return latencies


def record_flush(tables: dict[str, pa.Table], seconds: float) -> None:
    SINK_ROWS.observe(sum(rows.num_rows for rows in tables.values()))
    SINK_SECONDS.observe(seconds)
    STAGE_SECONDS.labels("insert").inc(seconds)
    LATENCY.observe_many(queryable_latencies(tables))
