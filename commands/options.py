"""Arguments and parsing that several commands share."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from flows.settings import Settings

if TYPE_CHECKING:
    from reports.event_logs import Source


Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What each group of commands registers its parsers on."""


def utc_time(text: str) -> datetime:
    """RFC 3339; without an offset, UTC."""
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def add_book_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prices", type=Path, help="price book (default: settings)")
    parser.add_argument("--contracts", type=Path, help="contracts (default: settings)")
    parser.add_argument("--costs", type=Path, help="cost book (default: settings)")


def add_source_options(parser: argparse.ArgumentParser, with_file: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-topic", help="a Kafka topic, bounded to its end at start")
    if with_file:
        source.add_argument("--from-file", type=Path, help="an Avro event log")
    source.add_argument("--from-raw", action="store_true", help="the raw log in ClickHouse")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-offset", type=int, help="with --from-topic: offset in every partition"
    )
    start.add_argument(
        "--from-time", type=datetime.fromisoformat, help="with --from-topic: RFC 3339 with offset"
    )


def open_log(args: argparse.Namespace, settings: Settings) -> Source:
    """The event log named by the `add_source_options` arguments."""
    from reports.event_logs import open_source

    return open_source(
        settings,
        topic=args.from_topic,
        from_offset=args.from_offset,
        from_time=args.from_time,
        file=getattr(args, "from_file", None),
        raw=args.from_raw,
    )
