"""What comes out: offline rating, replays, event-log exports, statements."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commands.options import Subcommands, add_book_options, add_source_options, open_log
from flows.settings import Settings


def register(sub: Subcommands) -> None:
    """Add this module's commands to the `meterflow` parser."""
    p = sub.add_parser("rate", help="rate a JSON-lines file offline with the same engine")
    p.add_argument("events", type=Path)
    add_book_options(p)
    p.set_defaults(func=cmd_rate)

    p = sub.add_parser("replay", help="re-rate an event log into a named result set and diff it")
    p.add_argument("--name", required=True, help="the result set; re-running it replaces it")
    add_source_options(p, with_file=True)
    add_book_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export", help="write usage events to an Avro event-log file")
    p.add_argument("out", type=Path)
    add_source_options(p, with_file=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("statement", help="a customer's usage statement for a billing period")
    p.add_argument("--customer", required=True)
    p.add_argument("--period", required=True, help="YYYY-MM, or a date inside an anchored period")
    p.add_argument("--csv", type=Path, help="also write CSV here")
    p.add_argument("--json", type=Path, help="also write JSON here")
    add_book_options(p)
    p.set_defaults(func=cmd_statement)


def cmd_rate(args: argparse.Namespace, settings: Settings) -> int:
    from commands.rate import rate_file

    return rate_file(
        args.events,
        args.prices or settings.prices_file,
        args.contracts or settings.contracts_file,
        args.costs or settings.costs_file,
        allowed_lateness=settings.allowed_lateness,
    )


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from reports.replay import replay

    result = replay(
        settings,
        args.name,
        open_log(args, settings),
        args.prices,
        args.contracts,
        args.costs,
        not args.no_progress,
    )
    print("\n".join(result.lines()))
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from commands.eventlogs import export_log

    source = open_log(args, settings)
    written, undecodable = export_log(source, args.out)
    print(
        f"wrote {written} events from {source.description} to {args.out}; "
        f"{undecodable} records did not decode and were left out",
        file=sys.stderr,
    )
    return 0


def cmd_statement(args: argparse.Namespace, settings: Settings) -> int:
    from metering.rating.books import load_books
    from reports.statement import render_text, statement, write_csv, write_json
    from sinks.clickhouse import connect

    books = load_books(
        args.prices or settings.prices_file,
        args.contracts or settings.contracts_file,
        args.costs or settings.costs_file,
    )
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    result = statement(client, books, args.customer, args.period)
    print(render_text(result))
    if args.csv:
        with args.csv.open("w", newline="") as out:
            write_csv(result, out)
    if args.json:
        with args.json.open("w") as out:
            write_json(result, out)
    return 0
