"""The worker's Prometheus endpoint serves the pipeline's metrics, correctly named."""

import socket
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from flows import metrics
from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.engine import RatingEngine
from metering.records import Consumed, Origin
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from sinks.tables import MILLIS, RATED_USAGE

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def shard_records() -> list[Consumed]:
    """Five events rated, two of them sent again, one late by 15 minutes, one of a model
    the price book does not have."""

    def usage(event_id: str, minutes: int, model: str = "gpt-4o") -> UsageEvent:
        return UsageEvent(
            event_id,
            NOW + timedelta(minutes=minutes),
            "cust-0001",
            "llm.tokens",
            model,
            "openai",
            "realtime",
            {"input_tokens": 1000, "output_tokens": 100},
        )

    events = [usage(f"e{i}", 20 + i) for i in range(5)]
    events += [events[0], events[1], usage("late", 9), usage("odd", 24, "mystery-model-7b")]
    return [Consumed(e, Origin("usage", 0, offset, 0)) for offset, e in enumerate(events)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_metrics_endpoint_reports_outcomes_dead_letters_and_latency() -> None:
    port = free_port()
    metrics.serve("127.0.0.1", port)
    outcomes = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=600_000_000).meter(
        "shard-001", ShardState(DedupeWindow(24 * 3600 * 10**6)), shard_records()
    )
    assert outcomes.counts() == {"rated": 5, "duplicate": 2, "late": 1, "dead_letter": 1}
    metrics.record_shard("shard-001", outcomes, dedupe_ids=8, max_event_us=1_700_000_000_000_000)
    metrics.record_rejections(Counter({"corrupt_bytes": 3}))
    metrics.record_lag("usage-events", 2, 42)
    stamps = pa.array([int(time.time() * 1000)], MILLIS)
    metrics.record_flush({RATED_USAGE: pa.table({"kafka_timestamp": stamps})}, 0.01)

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("meterflow_events_total", (("outcome", "rated"),))] >= 5
    assert samples[("meterflow_duplicates_total", ())] >= 2
    assert samples[("meterflow_dead_letters_total", (("reason", "corrupt_bytes"),))] >= 3
    assert samples[("meterflow_rating_errors_total", (("reason", "unknown_model"),))] >= 1
    assert samples[("meterflow_dedupe_state_ids", (("shard", "shard-001"),))] == 8
    lag = ("meterflow_consumer_lag_records", (("partition", "2"), ("topic", "usage-events")))
    assert samples[lag] == 42
    assert samples[("meterflow_produce_to_queryable_seconds_count", ())] >= 1
    assert samples[("meterflow_event_lateness_seconds_count", ())] >= 1


def test_a_histogram_observed_a_flush_at_a_time_counts_as_one_observed_value_by_value() -> None:
    """The latency histogram takes a flush's values at once; its samples are those of
    prometheus-client's own Histogram fed the same values one by one (bounds included)."""
    registry = CollectorRegistry()
    buckets = (0.5, 1.0, 2.0)
    one_by_one = Histogram("one_by_one_seconds", "reference", buckets=buckets, registry=registry)
    batched = metrics.BatchHistogram("batched_seconds", "under test", buckets)
    values = [0.1, 0.5, 0.5000001, 1.0, 1.5, 2.0, 7.0, 0.0]
    for value in values:
        one_by_one.observe(value)
    batched.observe_many(np.array(values[:3]))
    batched.observe_many(np.array(values[3:]))
    for suffix in ("count", "sum"):
        assert REGISTRY.get_sample_value(f"batched_seconds_{suffix}") == pytest.approx(
            registry.get_sample_value(f"one_by_one_seconds_{suffix}")
        )
    for le in ("0.5", "1.0", "2.0", "+Inf"):
        assert REGISTRY.get_sample_value("batched_seconds_bucket", {"le": le}) == (
            registry.get_sample_value("one_by_one_seconds_bucket", {"le": le})
        )
