"""What goes into the flow: usage, load, grants, event logs, the catalogue, redriven dead
letters."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from commands.options import Subcommands, utc_time
from flows.settings import Settings


def register(sub: Subcommands) -> None:
    """Add this module's commands to the `meterflow` parser."""
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

    p = sub.add_parser("import", help="send an Avro event-log file to the usage topic")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_import)

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


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from flows.producing import produce_jsonl

    return produce_jsonl(settings, args.file)


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


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from commands.eventlogs import import_log

    delivered = import_log(settings, args.file)
    print(f"sent {delivered} events from {args.file} to {settings.usage_topic}", file=sys.stderr)
    return 0


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
