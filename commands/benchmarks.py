"""`meterflow bench`: throughput, faults, soak, the API."""

from __future__ import annotations

import argparse

from commands.options import Subcommands
from flows.settings import Settings


def register(sub: Subcommands) -> None:
    """Add this module's commands to the `meterflow` parser."""
    p = sub.add_parser("bench", help="throughput, latency and memory on the local stack")
    p.add_argument(
        "--count",
        type=int,
        help="events: 100,000 in the throughput run, 200,000 with --faults, 20,000 with --api",
    )
    p.add_argument(
        "--faults",
        action="store_true",
        help="SIGKILL the flow under live traffic on 6 and 12 partitions; print what was lost",
    )
    p.add_argument("--kills", type=int, default=20, help="with --faults: kills per run")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also run the flow as a cluster of this many processes and print both rates",
    )
    p.add_argument("--soak", action="store_true", help="the shard state at a full dedupe window")
    p.add_argument(
        "--api",
        action="store_true",
        help="ingest over HTTP against the producer; entitlement latency on many rated rows",
    )
    p.add_argument(
        "--rated-rows", type=int, default=10_000_000, help="with --api: rows for the latency"
    )
    p.add_argument("--checks", type=int, default=2_000, help="with --api: requests per query")
    p.add_argument(
        "--held-ids", type=int, default=20_000_000, help="with --soak: ids in the full window"
    )
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.throughput import bench, bench_faults

    if args.soak:
        from bench.soak import bench_soak

        bench_soak(settings, args.held_ids)
        return 0
    if args.faults:
        return bench_faults(settings, args.count or 200_000, args.kills)
    if args.api:
        from bench.api import bench_api

        bench_api(settings, args.count or 20_000, args.rated_rows, args.checks)
        return 0
    bench(settings, args.count or 100_000, args.processes)
    return 0
