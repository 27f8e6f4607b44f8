"""The `meterflow` command: one entry point for the stack, producers, the flow and reports."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from flows.settings import Settings
from infra import stack

log = logging.getLogger("meterflow")


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    config = settings.stack()
    if args.action == "up":
        stack.up(config)
        return 0
    if args.action == "down":
        stack.down(config)
        return 0
    return 0 if stack.status(config) else 3


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from flows.producing import produce_jsonl

    return produce_jsonl(settings, args.file)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from flows import runner

    if args.until_end:
        settings = settings.model_copy(update={"tail": False})
    runner.run(settings, args.workers, args.process_id, args.addresses)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from flows.demo import demo

    return demo(settings, args.count, args.seed)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from flows.runner import reconcile_topic

    result = reconcile_topic(settings)
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.clickhouse import connect
    from sinks.summary import summarize

    summary = summarize(connect(settings.clickhouse_dsn, settings.clickhouse_database))
    print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="the local Kafka broker and schema registry")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("produce", help="send JSON-lines usage events through the registry")
    p.add_argument("file", nargs="?", type=Path, help="JSON-lines file (default: stdin)")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("run", help="run the metering dataflow (recovery on)")
    p.add_argument("-w", "--workers", type=int, default=1, help="workers in this process")
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", help="host:port of every process, separated by ';'")
    p.add_argument("--until-end", action="store_true", help="stop at the end of the topic")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="stack up, seeded load, flow to the end, checks, money")
    p.add_argument("--count", type=int, default=20_000, help="unique events to send")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reconcile", help="prove every consumed offset has exactly one outcome")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("usage", help="rated totals and exact money per customer, as JSON")
    p.set_defaults(func=cmd_usage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for chatty in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    return func(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
