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

from bench.soak_flow import flow_figures
from bench.soak_state import figure, state_figures
from flows.settings import Settings
from infra import stack


def bench_soak(settings: Settings, held_ids: int) -> None:
    stack.up(settings.stack())
    empty = flow_figures(settings, "soak_empty", 0)
    full = flow_figures(settings, "soak_full", held_ids)
    for name, value in full.items():
        figure(f"soak.flow.{name}", value)
    for name, value in empty.items():
        figure(f"soak.flow_empty.{name}", value)
    figure(
        "soak.flow.resident_bytes_per_held_id",
        (full["peak_rss_bytes"] - empty["peak_rss_bytes"]) / held_ids,
    )
    ratio = full["backlog_events_per_second"] / empty["backlog_events_per_second"]
    print(f"soak.flow.full_to_empty_rate {ratio:.2f}", flush=True)
    state_figures(settings, held_ids)
