"""The worker's Prometheus endpoint serves the pipeline's metrics, correctly named."""

import socket
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from flows import metrics
from flows.metering import ShardReport
from sinks.tables import RATED_USAGE, TABLES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_metrics_endpoint_reports_outcomes_dead_letters_and_latency() -> None:
    port = free_port()
    metrics.serve("127.0.0.1", port)
    report = ShardReport(
        outcomes=Counter({"rated": 5, "duplicate": 2, "late": 1}),
        dead_letters=Counter({"unknown_model": 1}),
        lateness_seconds=[900.0],
    )
    metrics.record_shard("shard-001", report, dedupe_ids=8, max_event_us=1_700_000_000_000_000)
    metrics.record_rejections({"corrupt_bytes": 3})
    metrics.record_lag("usage-events", 2, 42)
    row = [None] * len(TABLES[RATED_USAGE])
    row[TABLES[RATED_USAGE].index("kafka_timestamp")] = int(time.time() * 1000)
    metrics.record_flush({RATED_USAGE: [tuple(row)]}, 0.01)

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
