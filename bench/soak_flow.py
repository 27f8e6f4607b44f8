"""The soak bench's flow itself, on the real broker and chDB: a run fills its recovery
store with a snapshot of every shard, each window is filled to its share of N ids and
written back in place, and the flow resumes from that store; it meters a backlog, then
live traffic, is killed with SIGKILL, and recovers."""

from __future__ import annotations

import os
import pickle
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
from bench.soak_state import fill, rss_bytes
from flows import runner
from flows.producing import open_producer
from flows.settings import Settings
from schemas.serde import open_registry

SEED = 5_000
BACKLOG = 100_000
LIVE_RATE = 2_000
_METER_STEP = "meterflow.meter"
_METERFLOW = [sys.executable, "-m", "commands.cli"]


def flow_figures(settings: Settings, name: str, held_ids: int) -> dict[str, float]:
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
        self.peak_rss = max(self.peak_rss, rss_bytes(self.process.pid))
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
