"""The running system: the local stack, the flow, its proof and money, the API, the demo."""

from __future__ import annotations

import argparse
import json

from commands.options import Subcommands
from flows.settings import Settings
from infra import stack


def register(sub: Subcommands) -> None:
    """Add this module's commands to the `meterflow` parser."""
    p = sub.add_parser("stack", help="the local Kafka broker and schema registry")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("run", help="run the metering dataflow (recovery on)")
    p.add_argument("-w", "--workers", type=int, default=1, help="workers in this process")
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", help="host:port of every process, separated by ';'")
    p.add_argument("--until-end", action="store_true", help="stop at the end of the topic")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reconcile", help="prove every consumed offset has exactly one outcome")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("usage", help="rated totals and exact money per customer, as JSON")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("serve", help="the HTTP API and the customer usage page")
    p.add_argument("--host", help="address to listen on (default: METERFLOW_API_HOST)")
    p.add_argument("--port", type=int, help="port (default: METERFLOW_API_PORT)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="stack up, seeded load, flow to the end, checks, money")
    p.add_argument("--count", type=int, default=20_000, help="unique events to send")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--serve", action="store_true", help="then serve the API and usage page on the results"
    )
    p.set_defaults(func=cmd_demo)


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    config = settings.stack()
    if args.action == "up":
        stack.up(config)
        return 0
    if args.action == "down":
        stack.down(config)
        return 0
    from schemas.serde import RegistryUnavailable, open_registry

    up = stack.status(config)
    try:
        open_registry(settings.registry_url)
    except RegistryUnavailable as exc:
        print(f"registry URL: {exc}")
        return 3
    print(f"registry URL: {settings.registry_url} answers as a schema registry")
    return 0 if up else 3


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from flows import metrics, runner

    if args.until_end:
        settings = settings.model_copy(update={"tail": False})
    metrics.serve(settings.metrics_host, settings.metrics_port + (args.process_id or 0))
    runner.run(settings, args.workers, args.process_id, args.addresses)
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from flows.runner import reconcile_topic

    results = [reconcile_topic(settings, t) for t in (settings.usage_topic, settings.redrive_topic)]
    print("\n".join(line for result in results for line in result.lines()))
    return 0 if all(result.ok for result in results) else 1


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    from reports.summary import summarize
    from sinks.clickhouse import connect

    summary = summarize(connect(settings.clickhouse_dsn, settings.clickhouse_database))
    print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.app import serve

    serve(settings, args.host, args.port)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from commands.demo import demo

    return demo(settings, args.count, args.seed, args.serve)
