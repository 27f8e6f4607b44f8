"""`meterflow bench --soak`: the flow with a full dedupe window, measured.

A metering flow runs for months with its window full, so the costs that matter are
those of a full window: memory per held id, the rate with every lookup searching it,
what a snapshot writes and what a recovery reads. Windows are built through the same
code the flow runs (`DedupeWindow.check_batch` and `seal`), faster than producing
the events would. Two parts:

- the flow itself, on the real broker and chDB: a run fills its recovery store with a
  snapshot of every shard, the window of each is filled to its share of N ids and
  written back in place, and the flow resumes from that store as from any other; it
  meters a backlog, then live traffic, is killed with SIGKILL, and recovers. The same
  runs with empty windows give the ratio.
- the shard state alone, in this process (`ShardMeter`, seals and pickles): snapshot
  seconds and bytes at N/10 and N, and a resume.
"""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.loadgen import LoadSpec, live_start, run_loadgen
from bench.usage_mix import customer_ids
from flows import runner
from flows.producing import open_producer
from flows.settings import Settings
from infra import stack
from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.engine import RatingEngine
from metering.records import Consumed, Origin
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from schemas.serde import open_registry
from sinks.rows import shard_batch

BUILD_BATCH = 100_000
EPOCH_EVENTS = 2_000
"""Events a shard meters between two snapshots in the measured traffic."""
TRAFFIC = 200_000
SNAPSHOTS = 5
SEED = 5_000
BACKLOG = 100_000
LIVE_RATE = 2_000
_METER_STEP = "meterflow.meter"
_METERFLOW = [sys.executable, "-m", "commands.cli"]


def bench_soak(settings: Settings, held_ids: int) -> None:
    stack.up(settings.stack())
    empty = _flow_figures(settings, "soak_empty", 0)
    full = _flow_figures(settings, "soak_full", held_ids)
    for name, value in full.items():
        _figure(f"soak.flow.{name}", value)
    for name, value in empty.items():
        _figure(f"soak.flow_empty.{name}", value)
    _figure(
        "soak.flow.resident_bytes_per_held_id",
        (full["peak_rss_bytes"] - empty["peak_rss_bytes"]) / held_ids,
    )
    ratio = full["backlog_events_per_second"] / empty["backlog_events_per_second"]
    print(f"soak.flow.full_to_empty_rate {ratio:.2f}", flush=True)
    _state_figures(settings, held_ids)


def _state_figures(settings: Settings, held_ids: int) -> None:
    folder = settings.home / "bench-soak"
    shutil.rmtree(folder, ignore_errors=True)
    horizon_us = settings.dedupe_horizon // timedelta(microseconds=1)
    lateness_us = settings.allowed_lateness // timedelta(microseconds=1)
    soak = _Soak(ShardMeter(RatingEngine(load_books()), lateness_us), settings.dedupe_horizon)

    def window(name: str) -> DedupeWindow:
        return DedupeWindow(horizon_us, folder / name)

    _figure("soak.empty_window_events_per_second", soak.rate([ShardState(window("empty"))]))
    baseline = _rss_bytes()
    shards = [ShardState(window("full")) for _ in range(settings.shards)]
    for target in (held_ids // 10, held_ids):
        soak.fill(shards, target)
        seconds = [soak.snapshot(shards) for _ in range(SNAPSHOTS)]
        _figure(f"soak.snapshot_seconds_mean_at_{target}", sum(s for s, _ in seconds) / SNAPSHOTS)
        _figure(f"soak.snapshot_seconds_max_at_{target}", max(s for s, _ in seconds))
        _figure(f"soak.snapshot_bytes_at_{target}", max(b for _, b in seconds))
    gc.collect()
    held = sum(len(s.dedupe) for s in shards)
    _figure("soak.held_ids", held)
    _figure("soak.resident_bytes_per_held_id", (_rss_bytes() - baseline) / held)
    _figure("soak.disk_bytes_per_held_id", _disk_bytes(folder / "full") / held)
    full_rate = soak.rate(shards)
    _figure("soak.full_window_events_per_second", full_rate)

    snapshots = [pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in shards]
    del shards
    gc.collect()
    started = time.monotonic()
    resumed = [pickle.loads(s) for s in snapshots]
    _figure("soak.resume_seconds", time.monotonic() - started)
    _figure("soak.resumed_held_ids", sum(len(s.dedupe) for s in resumed))
    empty_rate = soak.rate([ShardState(window("empty-again"))])
    _figure("soak.empty_window_again_events_per_second", empty_rate)
    print(f"soak.full_to_empty_rate {full_rate / empty_rate:.2f}", flush=True)


class _Soak:
    """Fresh traffic for the flow's own `ShardMeter`, and windows filled through the
    flow's own dedupe code, every id and event unique."""

    def __init__(self, meter: ShardMeter, horizon: timedelta):
        self.meter = meter
        self.start = datetime.now(UTC) - horizon / 2
        self.sent = 0
        self.held = 0

    def fill(self, shards: list[ShardState], target: int) -> None:
        self.held = fill(shards, self.held, target, self.start)

    def rate(self, shards: list[ShardState]) -> float:
        """Events a second through `ShardMeter.meter`, a snapshot every EPOCH_EVENTS a shard."""
        items = self.traffic(TRAFFIC)
        started = time.monotonic()
        for i in range(0, len(items), EPOCH_EVENTS):
            state = shards[(i // EPOCH_EVENTS) % len(shards)]
            for j in range(i, i + EPOCH_EVENTS, 500):
                shard_batch("soak", state.positions, self.meter.meter(state, items[j : j + 500]))
            state.dedupe.seal()
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        return len(items) / (time.monotonic() - started)

    def snapshot(self, shards: list[ShardState]) -> tuple[float, int]:
        """An epoch of EPOCH_EVENTS a shard, then every shard's snapshot: seconds, bytes."""
        for state in shards:
            shard_batch(
                "soak", state.positions, self.meter.meter(state, self.traffic(EPOCH_EVENTS))
            )
        started = time.monotonic()
        size = 0
        for state in shards:
            state.dedupe.seal()
            size += len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        return time.monotonic() - started, size

    def traffic(self, count: int) -> list[Consumed]:
        customers = customer_ids()[:6]
        first, self.sent = self.sent, self.sent + count
        return [
            Consumed(
                UsageEvent(
                    f"soak-{i}",
                    self.start + timedelta(microseconds=i),
                    customers[i % len(customers)],
                    "llm.tokens",
                    "gpt-4o",
                    "openai",
                    "realtime",
                    {"input_tokens": 1000 + i % 97, "output_tokens": 200 + i % 89},
                ),
                Origin("usage", 0, i, 0),
            )
            for i in range(first, first + count)
        ]


def fill(shards: list[ShardState], held: int, target: int, before: datetime) -> int:
    """Held ids up to `target`, dated before `before`, a batch and a seal at a time,
    spread over the shards."""
    start_us = int(before.timestamp() * 1_000_000)
    while held < target:
        n = min(BUILD_BATCH, target - held)
        window = shards[(held // BUILD_BATCH) % len(shards)].dedupe
        window.check_batch(
            [(f"held-{i % 5000}", f"id-{i}", start_us - i, i) for i in range(held, held + n)]
        )
        window.seal()
        held += n
    return held


def _flow_figures(settings: Settings, name: str, held_ids: int) -> dict[str, float]:
    """Seed a recovery store, fill its windows, meter a backlog, then live traffic with
    a SIGKILL: rate, peak memory, recovery seconds and snapshot bytes of the flow."""
    run = runner.fresh_run(settings, name)
    registry = open_registry(run.registry_url)
    env = _env(run)
    run_loadgen(LoadSpec(count=SEED, start=live_start(), seed=3), open_producer(run), registry)
    _wait(subprocess.Popen([*_METERFLOW, "run", "--until-end"], env=env))
    assert run.recovery_dir is not None
    _fill_snapshots(run.recovery_dir, held_ids)

    run_loadgen(LoadSpec(count=BACKLOG, start=live_start(), seed=4), open_producer(run), registry)
    backlog = _Watched(env, "run", "--until-end")
    rate = backlog.rate()
    figures = {"backlog_events_per_second": rate, "peak_rss_bytes": backlog.peak_rss}
    figures["snapshot_bytes"] = _snapshot_bytes(run.recovery_dir)

    live = threading.Thread(
        target=run_loadgen,
        args=(LoadSpec(count=LIVE_RATE * 20, start=live_start(), seed=5), open_producer(run)),
        kwargs={"registry": registry, "rate": LIVE_RATE},
    )
    live.start()
    killed = _Watched(env, "run")
    killed.until_events(1)
    time.sleep(5)
    killed.kill()
    restarted = _Watched(env, "run")
    figures["recovery_seconds"] = restarted.until_events(1)
    live.join()
    restarted.kill()
    return figures


class _Watched:
    """A flow process whose metrics endpoint and memory are polled."""

    def __init__(self, env: dict[str, str], *args: str):
        self.port = int(env["METERFLOW_METRICS_PORT"])
        self.started = time.monotonic()
        self.process = subprocess.Popen([*_METERFLOW, *args], env=env)
        self.peak_rss = 0

    def events(self) -> float:
        self.peak_rss = max(self.peak_rss, _rss_bytes(self.process.pid))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("meterflow_events_total{")
        )

    def until_events(self, at_least: float) -> float:
        """Seconds from start until the flow has metered `at_least` events."""
        while self.events() < at_least:
            if self.process.poll() is not None:
                raise RuntimeError(f"the flow exited with {self.process.returncode}")
            time.sleep(0.1)
        return time.monotonic() - self.started

    def rate(self) -> float:
        """Events a second between a tenth and nine tenths of the backlog."""
        samples: list[tuple[float, float]] = []
        while self.process.poll() is None:
            samples.append((time.monotonic(), self.events()))
            time.sleep(0.25)
        if self.process.returncode != 0:
            raise RuntimeError(f"the flow exited with {self.process.returncode}")
        steady = [(t, n) for t, n in samples if BACKLOG * 0.1 <= n <= BACKLOG * 0.9]
        (t0, n0), (t1, n1) = steady[0], steady[-1]
        return (n1 - n0) / (t1 - t0)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)


def _fill_snapshots(recovery: Path, held_ids: int) -> None:
    """Give every shard's latest snapshot its share of `held_ids`, in place."""
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows = db.execute(
                "SELECT state_key, max(snap_epoch) FROM snaps WHERE step_id = ? GROUP BY state_key",
                (_METER_STEP,),
            ).fetchall()
            states = {}
            for key, epoch in rows:
                (blob,) = db.execute(
                    "SELECT ser_change FROM snaps WHERE step_id = ? AND state_key = ? "
                    "AND snap_epoch = ?",
                    (_METER_STEP, key, epoch),
                ).fetchone()
                states[key, epoch] = pickle.loads(pickle.loads(blob))
            share = held_ids * len(states) // _shards(recovery) if states else 0
            fill(list(states.values()), 0, share, datetime.now(UTC) - timedelta(hours=1))
            for (key, epoch), state in states.items():
                blob = pickle.dumps(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
                db.execute(
                    "UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ? "
                    "AND snap_epoch = ?",
                    (blob, _METER_STEP, key, epoch),
                )


def _shards(recovery: Path) -> int:
    total = 0
    for part in recovery.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as db:
            query = "SELECT count(DISTINCT state_key) FROM snaps WHERE step_id = ?"
            total += db.execute(query, (_METER_STEP,)).fetchone()[0]
    return total


def _snapshot_bytes(recovery: Path) -> float:
    """Bytes of the shards' snapshots at their latest epoch."""
    total = 0
    for part in recovery.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as db:
            total += (
                db.execute(
                    "SELECT sum(length(ser_change)) FROM snaps s WHERE step_id = ? "
                    "AND snap_epoch = (SELECT max(snap_epoch) FROM snaps "
                    "WHERE step_id = s.step_id AND state_key = s.state_key)",
                    (_METER_STEP,),
                ).fetchone()[0]
                or 0
            )
    return float(total)


def _env(run: Settings) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        **os.environ,
        "METERFLOW_HOME": str(run.home),
        "METERFLOW_USAGE_TOPIC": run.usage_topic,
        "METERFLOW_CREDIT_GRANTS_TOPIC": run.credit_grants_topic,
        "METERFLOW_CLICKHOUSE_DATABASE": run.clickhouse_database,
        "METERFLOW_RECOVERY_DIR": str(run.recovery_dir),
        "METERFLOW_METRICS_PORT": str(port),
    }


def _wait(process: subprocess.Popen[bytes]) -> None:
    if process.wait(timeout=1800) != 0:
        raise RuntimeError(f"the flow exited with {process.returncode}")


def _rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process, 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.npy"))


def _figure(name: str, value: float) -> None:
    print(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}", flush=True)
