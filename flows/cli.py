"""The `meterflow` command: one entry point for the stack, producers, the flow and reports."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from flows.settings import Settings
from infra import stack

log = logging.getLogger("meterflow")


def stack_config(settings: Settings) -> stack.StackConfig:
    return stack.StackConfig(
        home=settings.home,
        kafka_port=settings.kafka_port,
        kafka_controller_port=settings.kafka_controller_port,
        registry_port=settings.registry_port,
        topics={
            settings.usage_topic: settings.usage_partitions,
            settings.credit_grants_topic: settings.usage_partitions,
            settings.dead_letter_topic: 1,
            settings.alerts_topic: 1,
        },
    )


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    config = stack_config(settings)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    return func(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
