"""Crash the metering flow with SIGKILL mid-run, resume it, and demand exact totals.

Each run is its own process with its own chDB data path and recovery store; the
test reads results back through `meterflow usage` and `meterflow reconcile`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bench.cluster import run_processes
from bench.loadgen import LoadSpec, live_start, run_loadgen
from bench.manifest import Manifest
from infra import stack
from schemas.producer import UsageProducer
from schemas.serde import Encoder

pytestmark = pytest.mark.stack

EVENTS = 100_000


@pytest.fixture(scope="module")
def loaded(kafka_bootstrap: str, registry_client: SchemaRegistryClient) -> tuple[str, Manifest]:
    topic = f"recovery-{int(time.time())}"
    stack.create_topics(kafka_bootstrap, {topic: 4})
    producer = UsageProducer(kafka_bootstrap, topic, Encoder(registry_client))
    spec = LoadSpec(count=EVENTS, start=live_start(), seed=11)
    return topic, run_loadgen(spec, producer, registry_client)


def flow_env(tmp: Path, topic: str, name: str) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        **os.environ,
        "METERFLOW_USAGE_TOPIC": topic,
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{tmp / name / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(tmp / name / "recovery"),
        "METERFLOW_METRICS_PORT": str(port),
        "METERFLOW_SNAPSHOT_SECONDS": "1",
    }


def meterflow(env: dict[str, str], *args: str, kill_after: float | None = None) -> int:
    process = subprocess.Popen([sys.executable, "-m", "commands.cli", *args], env=env)
    if kill_after is None:
        return process.wait(timeout=600)
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=60)


def usage(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "commands.cli", "usage"], env=env, check=True, capture_output=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """Late flags follow how partitions interleave; quantities, money and outcomes may not."""
    counts = {k: v for k, v in summary["counts"].items() if k != "late_adjustments"}
    return {**summary, "counts": counts}


def expected_quantities(manifest: Manifest) -> dict[str, int]:
    return {
        f"{t.customer_id}|{t.meter}|{t.model}|{t.dimension}": t.quantity for t in manifest.totals
    }


def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    loaded: tuple[str, Manifest], tmp_path: Path
) -> None:
    topic, manifest = loaded
    steady = flow_env(tmp_path, topic, "steady")
    assert meterflow(steady, "run", "--until-end") == 0

    crashed = flow_env(tmp_path, topic, "crashed")
    moments = random.Random().sample([1.5 + 0.25 * i for i in range(12)], 3)
    for moment in moments:
        assert meterflow(crashed, "run", "--until-end", kill_after=moment) == -signal.SIGKILL
    assert meterflow(crashed, "run", "--until-end") == 0

    crashed_usage = usage(crashed)
    assert crashed_usage["quantities"] == expected_quantities(manifest)
    assert crashed_usage["counts"]["rated_usage"] == manifest.unique_events
    assert crashed_usage["counts"]["duplicates"] == manifest.duplicates
    assert comparable(crashed_usage) == comparable(usage(steady))
    assert meterflow(crashed, "reconcile") == 0


def test_two_workers_give_the_same_totals_as_one(
    loaded: tuple[str, Manifest], tmp_path: Path
) -> None:
    topic, manifest = loaded
    one, two = flow_env(tmp_path, topic, "one"), flow_env(tmp_path, topic, "two")
    assert meterflow(one, "run", "--until-end") == 0
    assert meterflow(two, "run", "--until-end", "-w", "2") == 0
    assert usage(two)["quantities"] == expected_quantities(manifest)
    assert comparable(usage(two)) == comparable(usage(one))
    assert meterflow(two, "reconcile") == 0


def test_two_processes_give_the_same_totals_as_one(
    loaded: tuple[str, Manifest], tmp_path: Path
) -> None:
    """A two-process cluster on loopback: shards, partitions and the sink spread over
    the processes, rows cross between them, and the totals are those of one process."""
    topic, manifest = loaded
    one, two = flow_env(tmp_path, topic, "one"), flow_env(tmp_path, topic, "two")
    assert run_processes(one, 1, "--until-end") == [0]
    assert run_processes(two, 2, "--until-end") == [0, 0]
    assert usage(two)["quantities"] == expected_quantities(manifest)
    assert comparable(usage(two)) == comparable(usage(one))
    assert meterflow(two, "reconcile") == 0
