"""The soak bench's shard state alone, in this process: the flow's own `ShardMeter` and
dedupe code with windows filled to N ids; snapshot seconds and bytes at N/10 and N,
memory and disk per held id, the rate full and empty, and a resume."""

from __future__ import annotations

import gc
import pickle
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.usage_mix import customer_ids
from flows.settings import Settings
from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.engine import RatingEngine
from metering.records import Consumed, Origin
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from sinks.rows import shard_batch

BUILD_BATCH = 100_000
EPOCH_EVENTS = 2_000
"""Events a shard meters between two snapshots in the measured traffic."""
TRAFFIC = 200_000
SNAPSHOTS = 5


def state_figures(settings: Settings, held_ids: int) -> None:
    folder = settings.home / "bench-soak"
    shutil.rmtree(folder, ignore_errors=True)
    horizon_us = settings.dedupe_horizon // timedelta(microseconds=1)
    lateness_us = settings.allowed_lateness // timedelta(microseconds=1)
    soak = _Soak(ShardMeter(RatingEngine(load_books()), lateness_us), settings.dedupe_horizon)

    def window(name: str) -> DedupeWindow:
        return DedupeWindow(horizon_us, folder / name)

    figure("soak.empty_window_events_per_second", soak.rate([ShardState(window("empty"))]))
    baseline = rss_bytes()
    shards = [ShardState(window("full")) for _ in range(settings.shards)]
    for target in (held_ids // 10, held_ids):
        soak.fill(shards, target)
        seconds = [soak.snapshot(shards) for _ in range(SNAPSHOTS)]
        figure(f"soak.snapshot_seconds_mean_at_{target}", sum(s for s, _ in seconds) / SNAPSHOTS)
        figure(f"soak.snapshot_seconds_max_at_{target}", max(s for s, _ in seconds))
        figure(f"soak.snapshot_bytes_at_{target}", max(b for _, b in seconds))
    gc.collect()
    held = sum(len(s.dedupe) for s in shards)
    figure("soak.held_ids", held)
    figure("soak.resident_bytes_per_held_id", (rss_bytes() - baseline) / held)
    figure("soak.disk_bytes_per_held_id", _disk_bytes(folder / "full") / held)
    full_rate = soak.rate(shards)
    figure("soak.full_window_events_per_second", full_rate)

    snapshots = [pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL) for s in shards]
    del shards
    gc.collect()
    started = time.monotonic()
    resumed = [pickle.loads(s) for s in snapshots]
    figure("soak.resume_seconds", time.monotonic() - started)
    figure("soak.resumed_held_ids", sum(len(s.dedupe) for s in resumed))
    empty_rate = soak.rate([ShardState(window("empty-again"))])
    figure("soak.empty_window_again_events_per_second", empty_rate)
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
                shard_batch(
                    "soak", state.positions, self.meter.meter("soak", state, items[j : j + 500])
                )
            state.dedupe.seal()
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        return len(items) / (time.monotonic() - started)

    def snapshot(self, shards: list[ShardState]) -> tuple[float, int]:
        """An epoch of EPOCH_EVENTS a shard, then every shard's snapshot: seconds, bytes."""
        for state in shards:
            shard_batch(
                "soak", state.positions, self.meter.meter("soak", state, self.traffic(EPOCH_EVENTS))
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


def rss_bytes(pid: int | str = "self") -> int:
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


def figure(name: str, value: float) -> None:
    print(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}", flush=True)
