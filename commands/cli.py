"""The `meterflow` command: one entry point for the stack, producers, the flow and reports."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from flows.settings import Settings

if TYPE_CHECKING:
    from reports.event_logs import Source
from infra import stack


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


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from flows.producing import produce_jsonl

    return produce_jsonl(settings, args.file)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from flows import metrics, runner

    if args.until_end:
        settings = settings.model_copy(update={"tail": False})
    metrics.serve(settings.metrics_host, settings.metrics_port + (args.process_id or 0))
    runner.run(settings, args.workers, args.process_id, args.addresses)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from commands.demo import demo

    return demo(settings, args.count, args.seed, args.serve)


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


def cmd_loadgen(args: argparse.Namespace, settings: Settings) -> int:
    from bench.loadgen import ALL_MODELS, LoadSpec, live_start, run_loadgen
    from flows.producing import open_producer
    from schemas.serde import open_registry

    spec = LoadSpec(
        count=args.count,
        start=live_start(timedelta(seconds=args.span)),
        customers=args.customers,
        seed=args.seed,
        span=timedelta(seconds=args.span),
        duplicate_rate=args.duplicate_rate,
        late_rate=args.late_rate,
        out_of_order_rate=args.out_of_order_rate,
        malformed_rate=args.malformed_rate,
        models=tuple(args.models.split(",")) if args.models else ALL_MODELS,
    )
    if args.catalogue is not None:
        from bench.catalogue import write_customers

        if spec.customers <= 24:
            raise ValueError("--catalogue is for more than the example catalogue's 24 customers")
        write_customers(spec.customers, args.catalogue)
        print(f"customers for 'meterflow catalogue apply': {args.catalogue}", file=sys.stderr)
    registry = open_registry(settings.registry_url)
    manifest = run_loadgen(spec, open_producer(settings), registry, args.rate, args.manifest)
    print(
        f"sent {manifest.sent_total} records to {settings.usage_topic}: "
        f"{manifest.unique_events} unique, {manifest.duplicates} duplicates, "
        f"{manifest.late} late, {manifest.out_of_order} out of order, "
        f"{sum(manifest.malformed.values())} malformed; manifest: {args.manifest}",
        file=sys.stderr,
    )
    return 0


def cmd_grant(args: argparse.Namespace, settings: Settings) -> int:
    from flows.grants import describe, send_grants
    from metering.rating.credits import CreditGrant

    grant = CreditGrant(
        grant_id=args.id or f"grant-{uuid.uuid4()}",
        customer_id=args.customer,
        credits=Decimal(args.credits),
        effective_at=args.effective or datetime.now(UTC),
        expires_at=args.expires,
    )
    send_grants(settings, [grant])
    print(f"granted {describe(grant)} on {settings.credit_grants_topic}", file=sys.stderr)
    return 0


def utc_time(text: str) -> datetime:
    """RFC 3339; without an offset, UTC."""
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def cmd_catalogue(args: argparse.Namespace, settings: Settings) -> int:
    from commands.catalogue import apply_files, show

    if args.action == "apply":
        if not args.files:
            raise ValueError("catalogue apply needs at least one FILE")
        return apply_files(settings, args.files, args.dry_run)
    return show(settings, args.at)


def cmd_redrive(args: argparse.Namespace, settings: Settings) -> int:
    from commands.redrive import Filter, redrive

    wanted = Filter(args.reason, args.since, args.until, args.customer)
    print("\n".join(redrive(settings, wanted).lines(settings.redrive_topic)))
    return 0


def cmd_rate(args: argparse.Namespace, settings: Settings) -> int:
    from commands.rate import rate_file

    return rate_file(
        args.events,
        args.prices or settings.prices_file,
        args.contracts or settings.contracts_file,
        args.costs or settings.costs_file,
        allowed_lateness=settings.allowed_lateness,
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


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from commands.eventlogs import import_log

    delivered = import_log(settings, args.file)
    print(f"sent {delivered} events from {args.file} to {settings.usage_topic}", file=sys.stderr)
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


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.app import serve

    serve(settings, args.host, args.port)
    return 0


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

    p = sub.add_parser("loadgen", help="realistic seeded traffic with a ground-truth manifest")
    p.add_argument("--count", type=int, default=10_000, help="unique valid events")
    p.add_argument("--rate", type=float, help="records per second (default: as fast as possible)")
    p.add_argument(
        "--customers", type=int, default=24, help="beyond 24, cust-000001... of --catalogue"
    )
    p.add_argument("--catalogue", type=Path, help="write the generated customers here")
    p.add_argument("--models", help="comma-separated subset of the catalogue's models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--span", type=float, default=3600, help="seconds of event time covered")
    p.add_argument("--duplicate-rate", type=float, default=0.02)
    p.add_argument("--late-rate", type=float, default=0.02)
    p.add_argument("--out-of-order-rate", type=float, default=0.05)
    p.add_argument("--malformed-rate", type=float, default=0.01)
    p.add_argument("--manifest", type=Path, default=Path("manifest.json"))
    p.set_defaults(func=cmd_loadgen)

    p = sub.add_parser("grant", help="send a prepaid credit grant to the flow")
    p.add_argument("--customer", required=True)
    p.add_argument("--credits", required=True, help="credits granted (a decimal)")
    p.add_argument("--effective", type=datetime.fromisoformat, help="RFC 3339 (default: now)")
    p.add_argument("--expires", type=datetime.fromisoformat, help="RFC 3339 (default: never)")
    p.add_argument("--id", help="grant id (default: a new UUID); re-sending an id changes nothing")
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser(
        "catalogue", help="the live catalogue: apply YAML files, show what is in force"
    )
    p.add_argument("action", choices=["apply", "show"])
    p.add_argument("files", nargs="*", type=Path, help="apply: catalogue YAML files")
    p.add_argument("--dry-run", action="store_true", help="apply: print the changes only")
    p.add_argument("--at", type=utc_time, help="show: RFC 3339 time (default: now)")
    p.set_defaults(func=cmd_catalogue)

    p = sub.add_parser("redrive", help="re-submit dead-lettered usage to the flow, once each")
    p.add_argument("--reason", help="only dead letters of this reason (unknown_model, ...)")
    p.add_argument("--since", type=utc_time, help="only those appended at or after (RFC 3339)")
    p.add_argument("--until", type=utc_time, help="only those appended before (RFC 3339)")
    p.add_argument("--customer", help="only this customer's")
    p.set_defaults(func=cmd_redrive)

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

    p = sub.add_parser("import", help="send an Avro event-log file to the usage topic")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("statement", help="a customer's usage statement for a billing period")
    p.add_argument("--customer", required=True)
    p.add_argument("--period", required=True, help="YYYY-MM, or a date inside an anchored period")
    p.add_argument("--csv", type=Path, help="also write CSV here")
    p.add_argument("--json", type=Path, help="also write JSON here")
    add_book_options(p)
    p.set_defaults(func=cmd_statement)

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

    p = sub.add_parser("run", help="run the metering dataflow (recovery on)")
    p.add_argument("-w", "--workers", type=int, default=1, help="workers in this process")
    p.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", help="host:port of every process, separated by ';'")
    p.add_argument("--until-end", action="store_true", help="stop at the end of the topic")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="stack up, seeded load, flow to the end, checks, money")
    p.add_argument("--count", type=int, default=20_000, help="unique events to send")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--serve", action="store_true", help="then serve the API and usage page on the results"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reconcile", help="prove every consumed offset has exactly one outcome")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("usage", help="rated totals and exact money per customer, as JSON")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("serve", help="the HTTP API and the customer usage page")
    p.add_argument("--host", help="address to listen on (default: METERFLOW_API_HOST)")
    p.add_argument("--port", type=int, help="port (default: METERFLOW_API_PORT)")
    p.set_defaults(func=cmd_serve)
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
