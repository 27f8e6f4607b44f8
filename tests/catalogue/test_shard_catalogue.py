"""One shard with the live catalogue, without Bytewax or services: catalogue records at
their place in the order, unknown customers parked within a bound, or at list price; the
same lines whichever way the records are cut into batches."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from metering.catalogue.authoring import changes, read_files
from metering.catalogue.live import LiveCatalogue, UnknownCustomers
from metering.catalogue.records import Kind, make_record
from metering.dedupe import DedupeWindow
from metering.rating.contracts import CustomerSpec
from metering.rating.credits import CreditGrant
from metering.records import Consumed, ConsumedCatalogue, ConsumedGrant, Origin, ShardRecord
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from sinks.rows import shard_batch
from sinks.tables import (
    CREDIT_EXPIRIES,
    CREDIT_GRANTS,
    DEAD_LETTERS,
    DUPLICATES,
    PARKED_USAGE,
    RATED_USAGE,
)
from tests.catalogue.test_catalogue import METERS, VECTOR_PRICES, event, seed, write

HOUR_MS = 3_600_000
T0 = datetime(2026, 11, 20, tzinfo=UTC)
SHARD = "usage/shard-000-of-1"


def usage(offset: int, customer: str, minutes: int) -> Consumed:
    """An event appended at T0 + minutes (its order key), dated a minute before."""
    at_ms = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
    ev = event(customer, T0 + timedelta(minutes=minutes - 1), event_id=f"e{offset}")
    return Consumed(ev, Origin("usage", 0, offset, at_ms, at_ms))


def customer_record(offset: int, customer: str, minutes: int) -> ConsumedCatalogue:
    at_ms = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
    record = make_record(Kind.CUSTOMER, customer, CustomerSpec(id=customer))
    return ConsumedCatalogue(record, Origin("catalogue", 0, offset, at_ms, at_ms))


def grant(
    offset: int, customer: str, minutes: int, credits: int = 100, expires: int | None = None
) -> ConsumedGrant:
    """A grant appended at T0 + minutes, in effect from T0 - 1 h (until T0 + expires min)."""
    at_ms = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
    until = None if expires is None else T0 + timedelta(minutes=expires)
    credit = CreditGrant(f"g{offset}", customer, Decimal(credits), T0 - timedelta(hours=1), until)
    return ConsumedGrant(credit, Origin("grants", 0, offset, at_ms, at_ms))


def shard_meter(
    mode: Literal["park", "list_price", "dead_letter"], max_events: int = 10
) -> ShardMeter:
    live = LiveCatalogue(seed(), SHARD, UnknownCustomers(mode, max_events, 24 * HOUR_MS))
    return ShardMeter(live.seed_engine, 10 * 60_000_000, live)


Rows = dict[str, list[dict[str, Any]]]


def rows(batches: list[Rows], table: str, *names: str) -> list[tuple[object, ...]]:
    return [tuple(r[name] for name in names) for b in batches for r in b.get(table, [])]


def run(meter: ShardMeter, items: list[ShardRecord], cut: int) -> list[Rows]:
    """Meter the items in batches of `cut`, through a snapshot between batches; the
    rows the sink gets, by table and column."""
    state = ShardState(DedupeWindow(24 * 3600 * 10**6))
    out = []
    for start in range(0, len(items), cut):
        outcomes = meter.meter(SHARD, state, items[start : start + cut])
        batch = shard_batch(SHARD, state.positions, outcomes)
        out.append(
            {table: b.to_pylist(maps_as_pydicts="strict") for table, b in batch.tables.items()}
        )
        state = pickle.loads(pickle.dumps(state))
    return out


def test_parked_usage_is_rated_when_its_customer_appears() -> None:
    items: list[ShardRecord] = [usage(0, "cust-new", 1), usage(1, "cust-0001", 2)]
    items += [usage(2, "cust-new", 3), customer_record(0, "cust-new", 4), usage(3, "cust-new", 5)]
    out = run(shard_meter("park"), items, cut=len(items))
    assert rows(out, RATED_USAGE, "event_id", "position") == [
        ("e1", 0),
        ("e0", 1),
        ("e2", 2),
        ("e3", 3),
    ]
    assert rows(out, PARKED_USAGE, "offset", "action") == [
        (0, "parked"),
        (2, "parked"),
        (0, "released"),
        (2, "released"),
    ]
    assert not rows(out, DEAD_LETTERS, "offset")


def test_the_same_rows_however_the_records_are_batched() -> None:
    items: list[ShardRecord] = [usage(i, f"cust-x{i % 3}", i) for i in range(12)]
    items.insert(7, customer_record(0, "cust-x1", 7))
    whole = run(shard_meter("park", max_events=3), items, cut=len(items))
    for cut in (1, 2, 5):
        batched = run(shard_meter("park", max_events=3), items, cut)
        for table in (RATED_USAGE, PARKED_USAGE, DEAD_LETTERS):
            columns = ("position", "offset")
            assert rows(batched, table, *columns) == rows(whole, table, *columns), (cut, table)


def test_past_the_bound_the_oldest_parked_usage_is_dead_lettered() -> None:
    items: list[ShardRecord] = [usage(i, "cust-gone", i) for i in range(4)]
    items.append(usage(4, "cust-gone", 25 * 60))
    out = run(shard_meter("park", max_events=2), items, cut=len(items))
    dead = rows(out, DEAD_LETTERS, "offset", "reason")
    assert dead == [(0, "unknown_customer"), (1, "unknown_customer"), (2, "unknown_customer"),
                    (3, "unknown_customer")]  # fmt: skip
    actions = rows(out, PARKED_USAGE, "offset", "action")
    assert [offset for offset, action in actions if action == "expired"] == [0, 1, 2, 3]
    assert [offset for offset, action in actions if action == "parked"] == [0, 1, 2, 3, 4]


def test_at_list_price_an_unknown_customer_is_rated_on_the_default_tier() -> None:
    out = run(shard_meter("list_price"), [usage(0, "cust-new", 1)], cut=1)
    assert rows(out, RATED_USAGE, "event_id", "price_version", "contract_version") == [
        ("e0", "list-2025-01", None)
    ]


def test_dead_letter_keeps_unknown_customers_out() -> None:
    out = run(shard_meter("dead_letter"), [usage(0, "cust-new", 1)], cut=1)
    assert rows(out, DEAD_LETTERS, "reason") == [("unknown_customer",)]


def test_usage_of_a_catalogue_meter_is_rated_by_its_definition(tmp_path: Path) -> None:
    files = [write(tmp_path, "meters.yaml", METERS), write(tmp_path, "p.yaml", VECTOR_PRICES)]
    live, _ = changes(seed(), read_files(files))
    at_ms = int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    records = [
        ConsumedCatalogue(r, Origin("catalogue", i, 0, at_ms, at_ms)) for i, r in enumerate(live)
    ]
    quantities = [{"vector_mb_hours": 500, "queries": 40}, {"queries": 3, "writes": 1}]
    items: list[ShardRecord] = [*records]
    for offset, q in enumerate(quantities):
        ev = UsageEvent(f"v{offset}", T0, "cust-0001", "vector.storage", "pgvector", "db",
                        "realtime", q)  # fmt: skip
        items.append(Consumed(ev, Origin("usage", 0, offset, at_ms + 1, at_ms + 1)))
    out = run(shard_meter("park"), items, cut=len(items))
    assert rows(out, RATED_USAGE, "event_id", "quantities", "amount") == [
        ("v0", {"vector_mb_hours": 500, "queries": 1}, Decimal("1.010000000000000000"))
    ]
    assert rows(out, DEAD_LETTERS, "reason", "detail") == [
        (
            "unknown_dimension",
            "dimensions ['writes'] are not defined: meter 'vector.storage' measures "
            "queries (query, count), vector_mb_hours (megabyte-hour)",
        )
    ]


def test_a_redriven_dead_letter_is_rated_once_however_often_it_comes() -> None:
    first = usage(0, "cust-0001", 1)
    unpriced = replace(first.event, model="sdxl-lightning")
    at_ms = first.origin.order_ms + 60_000
    again = [
        Consumed(first.event, Origin("redrive", 0, n, at_ms + n, at_ms + n), 7, "usage/0/0")
        for n in range(2)
    ]
    items = [replace(first, event=unpriced), *again]
    for cut in (1, len(items)):
        out = run(shard_meter("park"), items, cut)
        assert rows(out, DEAD_LETTERS, "topic", "reason") == [("usage", "unknown_model")]
        assert rows(out, RATED_USAGE, "topic", "offset", "redrive_of") == [
            ("redrive", 0, "usage/0/0")
        ]
        assert rows(out, DUPLICATES, "topic", "offset") == [("redrive", 1)]


def test_a_parked_grant_applies_at_its_place_when_its_customer_appears() -> None:
    """e0 arrived before the grant and pays; e2 and e3 arrived after it and draw from it
    (10 images at 0.04 = 0.40 each, 100 credits at list price are 100.00); e4 follows
    the customer and draws too. Cut into batches through snapshots, the same rows."""
    items: list[ShardRecord] = [usage(0, "cust-new", 1), grant(0, "cust-new", 2)]
    items += [usage(1, "cust-0001", 3), usage(2, "cust-new", 4), usage(3, "cust-new", 5)]
    items += [customer_record(0, "cust-new", 6), usage(4, "cust-new", 7)]
    whole = run(shard_meter("park"), items, cut=len(items))
    credits = rows(whole, RATED_USAGE, "event_id", "amount", "credits_applied")
    assert [(event_id, credit > 0) for event_id, _, credit in credits] == [
        ("e1", False),
        ("e0", False),
        ("e2", True),
        ("e3", True),
        ("e4", True),
    ]
    assert all(credit == amount for _, amount, credit in credits[2:])
    assert rows(whole, CREDIT_GRANTS, "grant_id", "customer_id", "amount") == [
        ("g0", "cust-new", Decimal("100.000000000000000000"))
    ]
    assert rows(whole, PARKED_USAGE, "topic", "offset", "action", "event_id", "timestamp") == [
        ("usage", 0, "parked", "e0", T0),
        ("grants", 0, "parked", "g0", T0 - timedelta(hours=1)),
        ("usage", 2, "parked", "e2", T0 + timedelta(minutes=3)),
        ("usage", 3, "parked", "e3", T0 + timedelta(minutes=4)),
        ("usage", 0, "released", "e0", T0),
        ("grants", 0, "released", "g0", T0 - timedelta(hours=1)),
        ("usage", 2, "released", "e2", T0 + timedelta(minutes=3)),
        ("usage", 3, "released", "e3", T0 + timedelta(minutes=4)),
    ]
    assert not rows(whole, DEAD_LETTERS, "offset")
    for cut in (1, 2, 3):
        batched = run(shard_meter("park"), items, cut)
        for table, columns in (
            (RATED_USAGE, ("position", "offset", "credits_applied")),
            (PARKED_USAGE, ("position", "topic", "offset", "action")),
            (CREDIT_GRANTS, ("position", "grant_id", "amount")),
        ):
            assert rows(batched, table, *columns) == rows(whole, table, *columns), (cut, table)


def test_a_released_grant_past_its_expiry_lapses_before_the_usage_after_it() -> None:
    """The grant expires at T0 + 30 min; its customer appears once the watermark (newest
    event time less 10 min of lateness) is past that: it lapses before e1 is rated."""
    items: list[ShardRecord] = [grant(0, "cust-new", 1, expires=30), usage(0, "cust-new", 2)]
    items += [usage(1, "cust-0001", 60), customer_record(0, "cust-new", 61)]
    out = run(shard_meter("park"), items, cut=len(items))
    assert rows(out, CREDIT_GRANTS, "grant_id") == [("g0",)]
    assert rows(out, CREDIT_EXPIRIES, "grant_id", "amount") == [
        ("g0", Decimal("100.000000000000000000"))
    ]
    assert rows(out, RATED_USAGE, "event_id", "credits_applied") == [
        ("e1", Decimal(0)),
        ("e0", Decimal(0)),
    ]


def test_past_the_bound_a_parked_grant_is_dead_lettered_with_its_reason() -> None:
    items: list[ShardRecord] = [grant(0, "cust-gone", 1), usage(0, "cust-gone", 2)]
    items += [usage(1, "cust-gone", 3)]
    out = run(shard_meter("park", max_events=2), items, cut=len(items))
    assert rows(out, DEAD_LETTERS, "topic", "offset", "reason", "event_id", "detail") == [
        (
            "grants",
            0,
            "unknown_customer",
            "g0",
            "customer 'cust-gone' is not in the catalogue, and its credit grant 'g0' was "
            "parked past the bound (2 records a shard, 24 h); send the grant again once the "
            "customer exists",
        )
    ]
    assert rows(out, PARKED_USAGE, "topic", "offset", "action") == [
        ("grants", 0, "parked"),
        ("usage", 0, "parked"),
        ("usage", 1, "parked"),
        ("grants", 0, "expired"),
    ]
    letter = rows(out, DEAD_LETTERS, "payload")[0][0]
    assert isinstance(letter, bytes) and b'"grant_id": "g0"' in letter


def test_a_grant_of_an_unknown_customer_follows_the_setting() -> None:
    at_list_price = run(shard_meter("list_price"), [grant(0, "cust-new", 1)], cut=1)
    assert rows(at_list_price, CREDIT_GRANTS, "grant_id", "customer_id") == [("g0", "cust-new")]
    dead = run(shard_meter("dead_letter"), [grant(0, "cust-new", 1)], cut=1)
    assert rows(dead, DEAD_LETTERS, "topic", "reason") == [("grants", "unknown_customer")]
    assert not rows(dead, PARKED_USAGE, "offset")
