"""`meterflow demo`: the whole path on the local stack, checked against ground truth.

Starts the stack, sends a seeded load (duplicates, late, out-of-order and
malformed records included) to a fresh topic, runs the metering flow to the end
of it, then proves the result: rated quantities equal the load generator's
manifest, every offset has one outcome, and per-customer money is printed.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench.loadgen import LoadSpec, live_start, run_loadgen
from bench.manifest import Manifest
from flows import runner
from flows.grants import send_grants
from flows.producing import open_producer
from flows.settings import Settings
from infra import stack
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from reports.event_logs import open_source
from reports.replay import replay
from reports.statement import render_text, statement
from reports.summary import UsageSummary, summarize
from schemas.serde import open_registry
from sinks.clickhouse import connect

CENT = Decimal("0.01")
GRANT = Decimal(500)
SHOWN_CUSTOMER = "cust-0015"
"""A credits-pack customer: its page shows every section."""
CREDIT_CUSTOMERS = ("cust-0015", "cust-0016", "cust-0017", "cust-0018")
"""Customers on the example catalogue's credits-pack plan."""


def demo(settings: Settings, count: int, seed: int, serve: bool = False) -> int:
    print(f"1. local stack (Kafka + schema registry) in {settings.home}")
    stack.up(settings.stack())
    settings = runner.fresh_run(settings, "demo")

    spec = LoadSpec(count=count, start=live_start(), seed=seed)
    grants = [
        CreditGrant(
            f"demo-{customer}", customer, GRANT, spec.start, spec.start + timedelta(days=30)
        )
        for customer in CREDIT_CUSTOMERS
    ]
    send_grants(settings, grants)
    print(f"2. granted {GRANT} prepaid credits each to {', '.join(CREDIT_CUSTOMERS)}")
    print(f"   sending {count} unique events (seed {seed}) to {settings.usage_topic}")
    registry = open_registry(settings.registry_url)
    started = time.monotonic()
    manifest = run_loadgen(spec, open_producer(settings), registry)
    print(
        f"   {manifest.sent_total} records in {time.monotonic() - started:.1f}s: "
        f"{manifest.unique_events} unique, {manifest.duplicates} duplicates, {manifest.late} late, "
        f"{manifest.out_of_order} out of order, {sum(manifest.malformed.values())} malformed"
    )

    print(f"3. metering flow over both topics, in one run -> {settings.clickhouse_dsn}")
    started = time.monotonic()
    runner.run(settings)
    elapsed = time.monotonic() - started
    rate = manifest.sent_total / elapsed
    print(f"   {manifest.sent_total} records in {elapsed:.1f}s ({rate:,.0f}/s, start-up included)")

    summary = summarize(connect(settings.clickhouse_dsn, settings.clickhouse_database))
    print("4. checks against the load generator's manifest")
    checks = _checks(summary, manifest)
    for name, ok in checks:
        print(f"   {'ok ' if ok else 'FAIL'} {name}")
    reconciliation = runner.reconcile_topic(settings)
    print("5. reconciliation")
    for line in reconciliation.lines():
        print(f"   {line}")
    print("6. money per customer (rounded to cents for display; stored exact)")
    _print_money(summary)
    replayed = _replay_check(settings)
    ok = all(ok for _, ok in checks) and reconciliation.ok and replayed
    if serve:
        serve_demo(settings, list(summary.money))
    else:
        print("   (meterflow demo --serve also starts the API and the usage page on these results)")
    return 0 if ok else 1


def serve_demo(settings: Settings, customers: list[str]) -> None:
    """The API on the demo's results, with a key per demo customer written to a file."""
    from api.app import serve
    from api.auth import OPERATOR, ApiKey

    keys = [ApiKey(secrets.token_urlsafe(24), scope) for scope in [OPERATOR, *customers]]
    path = settings.home / "demo-api-keys"
    path.write_text("".join(f"{k.secret}={k.scope}\n" for k in keys))
    path.chmod(0o600)
    customer = next((k for k in keys if k.scope == SHOWN_CUSTOMER), keys[-1])
    base = f"http://{settings.api_host}:{settings.api_port}"
    print(f"9. the API on {base} (keys in {path}; Ctrl-C stops it)")
    print(
        f'   curl -H "Authorization: Bearer {customer.secret}" '
        f"{base}/v1/customers/{customer.scope}/balance"
    )
    print(f"   usage page: {base}/portal?key={customer.secret}")
    serve(settings, keys=keys)


def _replay_check(settings: Settings) -> bool:
    """Re-rate the raw log with the live books: it must reproduce the live money exactly."""
    print("7. replay of the raw event log with the live price book (meterflow replay --from-raw)")
    result = replay(settings, "demo-live-books", open_source(settings, raw=True), progress=False)
    before, after = result.total.before, result.total.after
    exact = (before.amount, before.discount, before.cost) == (
        after.amount,
        after.discount,
        after.cost,
    )
    print(
        f"   {'ok ' if exact else 'FAIL'} {result.rated} events re-rated: list amount "
        f"{after.amount} vs live {before.amount}, change {after.amount - before.amount:f}"
    )
    customer = max(result.customers, key=lambda c: c.after.amount).customer_id
    period = datetime.now(UTC).strftime("%Y-%m")
    print(f"8. usage statement, {customer} {period} (meterflow statement --customer {customer})")
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    books = load_books(settings.prices_file, settings.contracts_file, settings.costs_file)
    for line in render_text(statement(client, books, customer, period)).splitlines()[-6:]:
        print(f"   {line}")
    return exact


def _checks(summary: UsageSummary, manifest: Manifest) -> list[tuple[str, bool]]:
    want = {
        f"{t.customer_id}|{t.meter}|{t.model}|{t.dimension}": t.quantity for t in manifest.totals
    }
    counts = summary.counts
    malformed = {reason: n for reason, n in manifest.malformed.items() if n}
    return [
        (
            f"rated quantities per customer, meter, model and dimension = manifest ({len(want)})",
            summary.quantities == want,
        ),
        (
            f"rated events {counts['rated_usage']} = {manifest.unique_events} unique sent",
            counts["rated_usage"] == manifest.unique_events,
        ),
        (
            f"duplicates recognised {counts['duplicates']} = {manifest.duplicates} re-sent",
            counts["duplicates"] == manifest.duplicates,
        ),
        (
            f"dead letters by reason = malformed records sent ({sum(malformed.values())})",
            summary.dead_letters == malformed,
        ),
    ]


def _print_money(summary: UsageSummary) -> None:
    header = ("customer", "list", "revenue", "credits", "billable", "cost", "margin")
    print("   " + "".join(f"{h:>12}" for h in header))
    for customer, money in summary.money.items():
        exact = {column: Decimal(value) for column, value in money.items()}
        cells = [
            exact["amount"],
            exact["amount"] - exact["discount"],
            exact["credits_applied"],
            exact["billable_amount"],
            exact["cost"],
            exact["margin"],
        ]
        print(f"   {customer:>12}" + "".join(f"{c.quantize(CENT):>12}" for c in cells))
