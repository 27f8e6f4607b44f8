"""Meters of the catalogue with `max`, `latest` and `unique_count` dimensions, filters and
prices by event property: a period's totals are price x the aggregate computed here
independently, to the last digit, in any order of arrival and through snapshots; what
the catalogue refuses, it refuses with the file, field path and reason."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metering.catalogue.authoring import changes, read_files
from metering.catalogue.catalogue import Catalogue
from metering.catalogue.view import in_force
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatedLine
from metering.rating.loading import CatalogueError
from metering.rating.money import q18
from metering.rating.state import RatingState
from metering.records import Consumed, ConsumedCatalogue, Origin
from schemas.event import UsageEvent
from sinks.tables import DEAD_LETTERS, RATED_USAGE
from tests.catalogue.test_catalogue import seed, write
from tests.catalogue.test_shard_catalogue import rows, run, shard_meter

METERS = """
meters:
  vector.search:
    description: Searches of a vector index
    dimensions:
      queries: {unit: query, aggregation: count}
      peak_mb: {unit: megabyte, aggregation: max}
      index_mb: {unit: megabyte, aggregation: latest}
      users: {unit: user, aggregation: unique_count, property: user_id}
      scanned: {unit: vector}
    filter: {region: [eu-west, eu-central, us-east]}
    price_by: [region]
"""
RATES = {
    "queries": Decimal("0.0013"),
    "peak_mb": Decimal("0.0000037"),
    "index_mb": Decimal("0.00071"),
    "users": Decimal("0.33"),
    "scanned": Decimal("0.0000001"),
}
EU_RATES = {dim: rate * 2 for dim, rate in RATES.items()}
PRICES = f"""
versions:
  - id: list-search
    effective_from: 2026-01-01T00:00:00Z
    prices:
      - meter: vector.search
        model: hnsw
        rates: {{{", ".join(f"{d}: {r}" for d, r in RATES.items())}}}
      - meter: vector.search
        model: hnsw
        where: {{region: eu-west}}
        rates: {{{", ".join(f"{d}: {r}" for d, r in EU_RATES.items())}}}
      - meter: vector.search
        model: banded
        graduated:
          - {{up_to: 1000, rates: {{peak_mb: 0.01, index_mb: 0.02, users: 1}}}}
          - {{rates: {{peak_mb: 0.004, index_mb: 0.005, users: 0.5}}}}
"""
T0 = datetime(2026, 11, 3, tzinfo=UTC)
HELD = ("peak_mb", "index_mb", "users")


def catalogue(tmp_path: Path, *more: tuple[str, str]) -> Catalogue:
    files = [write(tmp_path, "meters.yaml", METERS), write(tmp_path, "prices.yaml", PRICES)]
    files += [write(tmp_path, name, text) for name, text in more]
    live, _ = changes(seed(), read_files(files))
    return live


def records(live: Catalogue, at_ms: int) -> list[Consumed | ConsumedCatalogue]:
    """The meter and its prices as the catalogue topic brings them to a shard."""
    ours = [r for r in live if r.key in ("meter/vector.search", "price_version/list-search")]
    return [
        ConsumedCatalogue(r, Origin("catalogue", 0, i, at_ms, at_ms)) for i, r in enumerate(ours)
    ]


def search(
    n: int,
    at: datetime,
    quantities: dict[str, int],
    user: str,
    region: str = "us-east",
    model: str = "hnsw",
) -> UsageEvent:
    return UsageEvent(
        f"s{n:03d}",
        at,
        "cust-0001",
        "vector.search",
        model,
        "pgvector",
        "realtime",
        {"queries": 1, **quantities, "users": 1},
        properties={"user_id": user},
        region=region,
    )


def stream(seed_: int, count: int = 60) -> list[UsageEvent]:
    """Usage of one customer in one billing period, with equal event times among them."""
    rnd = random.Random(seed_)
    return [
        search(
            n,
            T0 + timedelta(hours=rnd.randrange(20)),
            {
                "peak_mb": rnd.randrange(5_000),
                "index_mb": rnd.randrange(3_000),
                "scanned": rnd.randrange(10**6),
            },
            f"user-{rnd.randrange(25)}",
        )
        for n in range(count)
    ]


def aggregates(events: list[UsageEvent]) -> dict[str, int]:
    """The period's aggregates computed from the events alone."""
    latest = max(events, key=lambda e: (e.timestamp, e.event_id))
    return {
        "queries": len(events),
        "peak_mb": max(e.quantities["peak_mb"] for e in events),
        "index_mb": latest.quantities["index_mb"],
        "users": len({e.properties["user_id"] for e in events}),
        "scanned": sum(e.quantities.get("scanned", 0) for e in events),
    }


def rate(live: Catalogue, events: list[UsageEvent]) -> list[RatedLine]:
    result = RatingEngine(live.books()).rate_batch(RatingState(), events)
    assert not result.rejections, result.rejections
    return result.lines


def totals(lines: list[RatedLine]) -> tuple[dict[str, int], dict[str, Decimal]]:
    quantity: dict[str, int] = {}
    amount: dict[str, Decimal] = {}
    for line in lines:
        for dim, q in line.quantities.items():
            quantity[dim] = quantity.get(dim, 0) + q
            amount[dim] = amount.get(dim, Decimal(0)) + line.amounts[dim]
    return quantity, amount


@pytest.mark.parametrize("seed_", [1, 2, 3])
def test_period_totals_are_price_times_the_aggregate_in_any_order(
    tmp_path: Path, seed_: int
) -> None:
    live = catalogue(tmp_path)
    events = stream(seed_)
    expected = aggregates(events)
    rnd = random.Random(seed_)
    seen = set()
    for _ in range(12):
        shuffled = rnd.sample(events, len(events))
        quantity, amount = totals(rate(live, shuffled))
        assert quantity == expected
        assert amount == {dim: q18(RATES[dim] * q) for dim, q in expected.items()}
        seen.add(tuple(sorted(amount.items())))
    assert len(seen) == 1


def test_latest_may_fall_and_events_older_than_the_latest_change_nothing(
    tmp_path: Path,
) -> None:
    a = search(1, T0 + timedelta(hours=2), {"index_mb": 900}, "u1")
    b = search(2, T0 + timedelta(hours=1), {"index_mb": 100}, "u1")
    c = search(3, T0 + timedelta(hours=3), {"index_mb": 400}, "u2")
    lines = rate(catalogue(tmp_path), [a, b, c])
    assert [(x.quantities["index_mb"], x.quantities["users"]) for x in lines] == [
        (900, 1),
        (0, 0),
        (-500, 1),
    ]
    rate_ = RATES["index_mb"]
    assert [x.amounts["index_mb"] for x in lines] == [
        q18(900 * rate_),
        Decimal(0),
        q18(400 * rate_) - q18(900 * rate_),
    ]


@pytest.mark.parametrize("seed_", [4, 5])
def test_graduated_prices_charge_the_bands_of_the_final_aggregate(
    tmp_path: Path, seed_: int
) -> None:
    live = catalogue(tmp_path)
    events = [replace(e, model="banded") for e in stream(seed_, count=40)]
    expected = aggregates(events)
    bands = {"peak_mb": ("0.01", "0.004"), "index_mb": ("0.02", "0.005"), "users": ("1", "0.5")}

    def graduated(dim: str) -> Decimal:
        low, high = (Decimal(r) for r in bands[dim])
        q = expected[dim]
        return q18(min(q, 1000) * low + max(0, q - 1000) * high)

    for order in (events, events[::-1], random.Random(seed_).sample(events, len(events))):
        _, amount = totals(rate(live, order))
        assert {d: amount[d] for d in HELD} == {d: graduated(d) for d in HELD}


def test_each_price_version_bills_the_aggregate_of_its_own_span(tmp_path: Path) -> None:
    later = (
        PRICES.replace("list-search", "list-search-2")
        .replace("2026-01-01T00:00:00Z", "2026-11-10T00:00:00Z")
        .replace(f"peak_mb: {RATES['peak_mb']}", "peak_mb: 0.5")
    )
    live = catalogue(tmp_path, ("later.yaml", later))
    before = [
        search(i, T0 + timedelta(days=i), {"peak_mb": p}, "u") for i, p in enumerate([70, 300, 20])
    ]
    after = [
        search(10 + i, T0 + timedelta(days=8 + i), {"peak_mb": p}, "u")
        for i, p in enumerate([40, 90])
    ]
    for order in (before + after, after + before, [*after[::-1], *before[::-1]]):
        _, amount = totals(rate(live, order))
        assert amount["peak_mb"] == q18(300 * RATES["peak_mb"]) + q18(90 * Decimal("0.5"))


def test_a_snapshot_in_the_middle_of_the_period_gives_the_same_lines(tmp_path: Path) -> None:
    live = catalogue(tmp_path)
    at_ms = int(T0.timestamp() * 1000)
    items = records(live, at_ms)
    events = stream(7, count=30)
    for offset, ev in enumerate(events):
        at = at_ms + 3_600_000 * 24 + offset
        items.append(
            Consumed(
                replace(ev, timestamp=T0 + timedelta(days=1, minutes=offset % 7)),
                Origin("usage", 0, offset, at, at),
            )
        )
    columns = ("event_id", "quantities", "amounts", "amount")
    whole = rows(run(shard_meter("park"), items, cut=len(items)), RATED_USAGE, *columns)
    assert len(whole) == len(events)
    for cut in (1, 4, 7):
        assert rows(run(shard_meter("park"), items, cut), RATED_USAGE, *columns) == whole, cut


def test_an_event_outside_the_filter_is_dead_lettered_naming_the_filter(tmp_path: Path) -> None:
    live = catalogue(tmp_path)
    at_ms = int(T0.timestamp() * 1000)
    items = records(live, at_ms)
    sent = [
        search(1, T0, {"peak_mb": 5}, "u1", region="ap-south"),
        search(2, T0, {"peak_mb": 5}, "u1", region="eu-central"),
        replace(search(3, T0, {"peak_mb": 5}, "u1"), region=None),
    ]
    items += [
        Consumed(ev, Origin("usage", 0, n, at_ms + 1, at_ms + 1)) for n, ev in enumerate(sent)
    ]
    out = run(shard_meter("park"), items, cut=len(items))
    assert rows(out, RATED_USAGE, "event_id") == [("s002",)]
    counts = "meter 'vector.search' counts events whose region is one of "
    counts += "['eu-west', 'eu-central', 'us-east']; this one"
    assert rows(out, DEAD_LETTERS, "offset", "reason", "detail") == [
        (0, "filtered_out", f"{counts} is 'ap-south'"),
        (2, "filtered_out", f"{counts} has none"),
    ]


def test_a_property_price_rates_its_events_and_the_line_says_which(tmp_path: Path) -> None:
    live = catalogue(tmp_path)
    eu = search(1, T0, {"peak_mb": 100, "scanned": 10}, "u1", region="eu-west")
    us = search(2, T0, {"peak_mb": 100, "scanned": 10}, "u1", region="us-east")
    by_property = replace(
        us, event_id="s003", region=None, properties={"user_id": "u1", "region": "eu-west"}
    )
    lines = rate(live, [eu, us, by_property])
    assert [(x.event_id, x.tiers[0]) for x in lines] == [
        ("s001", "where region=eu-west"),
        ("s002", "where region: default"),
        ("s003", "where region=eu-west"),
    ]
    assert [x.unit_prices["scanned"] for x in lines] == [
        EU_RATES["scanned"],
        RATES["scanned"],
        EU_RATES["scanned"],
    ]
    # Each price aggregates apart: the user and the peak count again under the default
    # price, not again under the eu-west price.
    assert [(x.quantities["users"], x.quantities["peak_mb"]) for x in lines] == [
        (1, 100),
        (1, 100),
        (0, 0),
    ]


def test_corrections_and_missing_properties_of_aggregated_dimensions_are_refused(
    tmp_path: Path,
) -> None:
    live = catalogue(tmp_path)
    first = search(1, T0, {"peak_mb": 100}, "u1")
    correction = replace(search(2, T0, {"peak_mb": 50}, "u1"), corrects="s001")
    nameless = replace(search(3, T0, {"peak_mb": 50}, "u1"), properties={})
    result = RatingEngine(live.books()).rate_batch(RatingState(), [first, correction, nameless])
    assert [x.event_id for x in result.lines] == ["s001"]
    assert [(r.reason, r.detail) for r in result.rejections] == [
        (
            "invalid_correction",
            "meter 'vector.search' aggregates peak_mb by max, queries by "
            "count, users by unique_count: a correction adjusts summed quantities only; send the "
            "usage again instead",
        ),
        (
            "invalid_field",
            "properties.user_id is missing: dimension 'users' of meter "
            "'vector.search' counts its distinct values",
        ),
    ]


def refused(tmp_path: Path, files: dict[str, str]) -> CatalogueError:
    paths = [write(tmp_path, name, text) for name, text in files.items()]
    with pytest.raises(CatalogueError) as error:
        changes(seed(), read_files(paths))
    return error.value


def test_the_catalogue_refuses_what_it_cannot_rate_exactly(tmp_path: Path) -> None:
    no_property = refused(tmp_path, {"meters.yaml": METERS.replace(", property: user_id", "")})
    assert (no_property.field, no_property.reason) == (
        "meters.vector.search.dimensions.users",
        "'property' names what unique_count counts; give it there only",
    )
    percentage = PRICES.split("      - meter: vector.search\n        model: banded")[0] + (
        "      - {meter: vector.search, model: pct,"
        " percentage: {amount: {property: bill}, rate: 1}}\n"
    )
    form = refused(tmp_path, {"meters.yaml": METERS, "prices.yaml": percentage})
    assert (form.field, form.reason) == (
        "versions[0]",
        "prices[2]: meter 'vector.search' aggregates index_mb by latest, peak_mb by max, users "
        "by unique_count: price it with rates, graduated, volume; a percentage price is not a "
        "function of the period's aggregate",
    )
    elsewhere = refused(
        tmp_path,
        {"meters.yaml": METERS, "prices.yaml": PRICES.replace("{region: eu-west}", "{zone: a}")},
    )
    assert (elsewhere.field, elsewhere.reason) == (
        "versions[0]",
        "prices[1]: where names ['zone'], but meter 'vector.search' has price_by ['region']: a "
        "property price names exactly the meter's price_by properties",
    )
    pooled = """
customers:
  - id: cust-search
    contract:
      id: C-search
      terms:
        subscription:
          included: [{meter: vector.search, quantity: 10, dimensions: [peak_mb, scanned]}]
"""
    pool = refused(tmp_path, {"meters.yaml": METERS, "prices.yaml": PRICES, "c.yaml": pooled})
    assert pool.reason == (
        "contract.terms.subscription.included[0]: it pools peak_mb by max, scanned by sum of "
        "meter 'vector.search': an allowance pools dimensions of one aggregation"
    )


def test_show_describes_the_meter(tmp_path: Path) -> None:
    lines = in_force(catalogue(tmp_path), T0)
    assert (
        "  vector.search: index_mb (megabyte, latest), peak_mb (megabyte, max), queries (query, "
        "count), scanned (vector), users (user, unique_count of user_id); region in eu-west, "
        "eu-central, us-east; priced by region"
    ) in lines


ALLOWANCE = """
customers:
  - id: cust-search
    contract:
      id: C-search
      terms:
        subscription:
          included: [{meter: vector.search, quantity: 1000, dimensions: [peak_mb]}]
"""


@pytest.mark.parametrize("seed_", [8, 9])
def test_an_allowance_of_a_max_dimension_bills_the_peak_beyond_it(
    tmp_path: Path, seed_: int
) -> None:
    live = catalogue(tmp_path, ("customer.yaml", ALLOWANCE))
    events = [replace(e, customer_id="cust-search") for e in stream(seed_, count=30)]
    peak = max(e.quantities["peak_mb"] for e in events)
    gross = q18(peak * RATES["peak_mb"])
    expected = q18((peak - 1000) * gross / peak) if peak > 1000 else Decimal(0)
    for order in (events, events[::-1], random.Random(seed_).sample(events, len(events))):
        quantity, amount = totals(rate(live, order))
        assert (quantity["peak_mb"], amount["peak_mb"]) == (peak, expected)
