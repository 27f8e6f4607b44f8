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
from metering.records import Consumed, ConsumedCatalogue, Origin
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from sinks.rows import shard_batch
from sinks.tables import DEAD_LETTERS, DUPLICATES, PARKED_USAGE, RATED_USAGE
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


def shard_meter(
    mode: Literal["park", "list_price", "dead_letter"], max_events: int = 10
) -> ShardMeter:
    live = LiveCatalogue(seed(), SHARD, UnknownCustomers(mode, max_events, 24 * HOUR_MS))
    return ShardMeter(live.seed_engine, 10 * 60_000_000, live)


Rows = dict[str, list[dict[str, Any]]]


def rows(batches: list[Rows], table: str, *names: str) -> list[tuple[object, ...]]:
    return [tuple(r[name] for name in names) for b in batches for r in b.get(table, [])]


def run(meter: ShardMeter, items: list[Consumed | ConsumedCatalogue], cut: int) -> list[Rows]:
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
    items = [usage(0, "cust-new", 1), usage(1, "cust-0001", 2), usage(2, "cust-new", 3)]
    items += [customer_record(0, "cust-new", 4), usage(3, "cust-new", 5)]
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
    items = [usage(i, f"cust-x{i % 3}", i) for i in range(12)]
    items.insert(7, customer_record(0, "cust-x1", 7))
    whole = run(shard_meter("park", max_events=3), items, cut=len(items))
    for cut in (1, 2, 5):
        batched = run(shard_meter("park", max_events=3), items, cut)
        for table in (RATED_USAGE, PARKED_USAGE, DEAD_LETTERS):
            columns = ("position", "offset")
            assert rows(batched, table, *columns) == rows(whole, table, *columns), (cut, table)


def test_past_the_bound_the_oldest_parked_usage_is_dead_lettered() -> None:
    items = [usage(i, "cust-gone", i) for i in range(4)]
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
    items: list[Consumed | ConsumedCatalogue] = [*records]
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
