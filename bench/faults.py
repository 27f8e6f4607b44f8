"""Crash the metering flow with SIGKILL while traffic is live, and prove that nothing
was lost, nothing counted twice, no view left short, and every line is the line an
uninterrupted run makes.

Production conditions, not convenient ones: many customers (so every shard is fed by
every partition), a Java-compatible murmur2 partitioner, several partitions, a
producer sending while the flow runs in tail mode, kills at random moments (inserts
included: flushes are shorter than snapshots), re-sends, credit customers whose
grants run out (order-dependent lines) and graduated prices crossing their bands.
The test suite runs a short version; `meterflow bench --faults` a long one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.cluster import flow_env
from flows.producing import open_producer
from flows.settings import Settings
from infra import stack

MODELS = (
    ("gpt-4o", "openai", 4_000),
    ("claude-sonnet-4", "anthropic", 4_000),
    ("llama-3.1-70b", "self-hosted", 4_000_000),
)
"""(model, provider, median tokens): Llama's bands are crossed within a run."""
CREDIT_EVERY = 10
"""Every tenth customer is on the credits plan with a small grant, drawn down live."""


@dataclass(frozen=True)
class FaultSpec:
    events: int = 20_000
    customers: int = 1_000
    partitions: int = 6
    kills: int = 10
    rate: float = 600.0
    """Sends a second while the flow is being killed."""
    resend_every: int = 40
    seed: int = 1


@dataclass
class FaultReport:
    spec: FaultSpec
    kills: int
    expected: int
    lost: int
    doubled: int
    raw_doubled: int
    """Records the raw log holds more than once (a block inserted again under new ids)."""
    views_short: int
    lines_differing: int
    reconciled: bool
    seconds: float

    @property
    def clean(self) -> bool:
        faults = (
            self.lost,
            self.doubled,
            self.raw_doubled,
            self.views_short,
            self.lines_differing,
        )
        return self.reconciled and not any(faults)

    def figures(self) -> dict[str, float]:
        return {
            "kills": self.kills,
            "events": self.expected,
            "lost": self.lost,
            "doubled": self.doubled,
            "raw_doubled": self.raw_doubled,
            "views_short": self.views_short,
            "lines_differing": self.lines_differing,
            "reconciled": int(self.reconciled),
            "seconds": round(self.seconds, 1),
        }


def run_faults(settings: Settings, spec: FaultSpec, workdir: Path) -> FaultReport:
    """Produce live while killing the flow, finish it, run an uninterrupted flow over the
    same records, and compare the two event by event."""
    started = time.monotonic()
    name = f"faults-{uuid.uuid4().hex[:8]}"
    usage_topic, grants_topic = f"{name}-usage", f"{name}-grants"
    stack.create_topics(
        settings.kafka_bootstrap, {usage_topic: spec.partitions, grants_topic: spec.partitions}
    )
    customers = [f"fault-{i:05d}" for i in range(spec.customers)]
    contracts = _contracts_file(settings, customers, workdir / "contracts.yaml")
    base = {
        **os.environ,
        "METERFLOW_USAGE_TOPIC": usage_topic,
        "METERFLOW_CREDIT_GRANTS_TOPIC": grants_topic,
        "METERFLOW_CONTRACTS_FILE": str(contracts),
        "METERFLOW_SNAPSHOT_SECONDS": "1",
        "METERFLOW_SINK_FLUSH_SECONDS": "0.3",
    }
    crashed, steady = flow_env(base, workdir / "crashed"), flow_env(base, workdir / "steady")
    producer = _Traffic(settings, spec, usage_topic, grants_topic, customers)
    producer.start()
    kills = _kill_repeatedly(crashed, spec.kills, producer)
    producer.join()
    _meterflow(crashed, "run", "--until-end")
    _meterflow(steady, "run", "--until-end")
    after, before = _inspect(crashed), _inspect(steady)
    expected = producer.event_ids
    counts: dict[str, int] = after["counts"]
    lines_differing = sum(
        1 for event_id, line in before["lines"].items() if after["lines"].get(event_id) != line
    )
    return FaultReport(
        spec=spec,
        kills=kills,
        expected=len(expected),
        lost=sum(1 for event_id in expected if event_id not in counts),
        doubled=sum(n - 1 for n in counts.values() if n > 1),
        raw_doubled=after["raw_doubled"],
        views_short=sum(abs(n) for n in after["views_short"].values()),
        lines_differing=lines_differing + abs(len(before["lines"]) - len(after["lines"])),
        reconciled=_meterflow(crashed, "reconcile", check=False) == 0,
        seconds=time.monotonic() - started,
    )


class _Traffic(threading.Thread):
    """Grants first, then usage at a steady rate with re-sends, keyed by customer and
    partitioned by murmur2 as Java, Go and kafka-python clients do."""

    def __init__(
        self,
        settings: Settings,
        spec: FaultSpec,
        usage_topic: str,
        grants_topic: str,
        customers: list[str],
    ):
        super().__init__(daemon=True)
        self.settings, self.spec = settings, spec
        self.usage_topic, self.grants_topic = usage_topic, grants_topic
        self.customers = customers
        self.event_ids: list[str] = []

    def run(self) -> None:
        rng = random.Random(self.spec.seed)
        grants = open_producer(self.settings, self.grants_topic, partitioner="murmur2_random")
        now = datetime.now(UTC)
        for customer in self.customers[::CREDIT_EVERY]:
            grant = {
                "grant_id": f"grant-{customer}",
                "customer_id": customer,
                "credits": "2500",
                "effective_at": (now - timedelta(hours=1)).isoformat(),
            }
            grants.send_raw(json.dumps(grant).encode(), customer)
        grants.flush()
        usage = open_producer(self.settings, self.usage_topic, partitioner="murmur2_random")
        sent: list[tuple[bytes, str]] = []
        resent = 0
        started = time.monotonic()
        for i in range(self.spec.events):
            ahead = started + i / self.spec.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            record = _event(rng, rng.choice(self.customers))
            value = usage.encoder.encode(record)
            usage.send_raw(value, record["customer_id"])
            self.event_ids.append(record["event_id"])
            sent.append((value, record["customer_id"]))
            if i % self.spec.resend_every == 0:
                usage.send_raw(*rng.choice(sent))
                resent += 1
        report = usage.flush()
        if report.failed or report.delivered != len(sent) + resent:
            raise RuntimeError(f"the fault traffic was not all acknowledged: {report}")


def _event(rng: random.Random, customer: str) -> dict[str, Any]:
    model, provider, median = rng.choice(MODELS)
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": datetime.now(UTC),
        "customer_id": customer,
        "meter": "llm.tokens",
        "model": model,
        "provider": provider,
        "mode": "realtime",
        "quantities": {
            "input_tokens": rng.randint(1, 2 * median),
            "output_tokens": rng.randint(1, median),
        },
        "properties": {},
    }


def _contracts_file(settings: Settings, customers: list[str], path: Path) -> Path:
    """The shipped plans, and these customers: list price, or the credits plan."""
    shipped = yaml.safe_load(settings.contracts_file.read_text())
    listed: list[dict[str, Any]] = []
    for i, customer in enumerate(customers):
        entry: dict[str, Any] = {"id": customer, "name": customer}
        if i % CREDIT_EVERY == 0:
            entry["contract"] = {"id": f"C-{customer}", "terms": {"plan": "credits-pack"}}
        listed.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"plans": shipped["plans"], "customers": listed}))
    return path


def _kill_repeatedly(env: dict[str, str], kills: int, traffic: threading.Thread) -> int:
    """Run the flow in tail mode and SIGKILL it 1.5 to 5 s after each start, at least
    `kills` times and for as long as traffic is being sent."""
    rng = random.Random()
    done = 0
    while done < kills or traffic.is_alive():
        process = subprocess.Popen([sys.executable, "-m", "commands.cli", "run"], env=env)
        time.sleep(rng.uniform(1.5, 5.0))
        if process.poll() is not None:
            raise RuntimeError(f"the flow exited with {process.returncode} before its kill")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        done += 1
    return done


def _meterflow(env: dict[str, str], *args: str, check: bool = True) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "commands.cli", *args], env=env, timeout=1800, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"meterflow {' '.join(args)} exited with {result.returncode}")
    return result.returncode


def _inspect(env: dict[str, str]) -> dict[str, Any]:
    """What a run wrote, read in a process of its own (chDB opens one path per process)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.faults"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _dump() -> None:
    """Rows per event id as inserted (no FINAL: a second copy must show), each event's
    line, and how far each view is short of its table."""
    from sinks.clickhouse import connect
    from sinks.reconcile import views_short

    settings = Settings()
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    counts = client.query("SELECT event_id, count() FROM rated_usage GROUP BY event_id")
    raw = client.query("SELECT count() - uniqExact(topic, partition, offset) FROM raw_events")
    lines = client.query(
        """
        SELECT event_id, stream, position, toString(amount), toString(credits_applied),
            toString(billable_amount), toString(cost), late
        FROM rated_usage FINAL
        """
    )
    print(
        json.dumps(
            {
                "counts": {row[0]: row[1] for row in counts.result_rows},
                "lines": {row[0]: list(row[1:]) for row in lines.result_rows},
                "raw_doubled": raw.result_rows[0][0],
                "views_short": views_short(client),
            }
        )
    )


if __name__ == "__main__":
    _dump()
