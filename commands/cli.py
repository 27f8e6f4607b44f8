"""The `meterflow` command: one entry point for the stack, producers, the flow and reports.

Each group of commands registers its own (`commands.operating`, `commands.sending`,
`commands.reading`, `commands.benchmarks`); this module parses and dispatches."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from commands import benchmarks, operating, reading, sending
from flows.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (operating, sending, reading, benchmarks):
        group.register(sub)
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
    from schemas.serde import RegistryUnavailable

    try:
        return func(args, Settings())
    except ValueError as exc:
        print(f"meterflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except RegistryUnavailable as exc:
        print(f"meterflow {args.command}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
