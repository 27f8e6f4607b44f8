"""How many events a second one core rates through the batch API, timed in the process's
CPU time (rating is one thread), so that other work on a shared machine does not count.

`rating.batch_events_per_second` is the headline: list-price token events, the bulk of
real traffic. `rating.mixed_batch_events_per_second` spreads events over every customer
and model of the example catalogue (contracts, tiers, allowances, credits, budgets).
`bench_customers` compares a generated catalogue of 100,000 customers with one of 24
on the same events. Both run under the flow's garbage-collector policy
(`flows.collector`), as rating does in the flow.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench.catalogue import customer_id, customer_records, plan_of
from bench.usage_mix import rank_weights
from flows import collector
from flows.catalogue import seed_catalogue
from flows.settings import Settings
from metering.catalogue.records import record_from
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.rating.state import RatingState
from schemas.event import UsageEvent

BATCH = 1_000
_FEW = 24
_SPREAD = timedelta(days=3)
"""Beyond the 200,000 seconds the events span, within the same month."""
_START = datetime(2026, 11, 1, tzinfo=UTC)
_LLM = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")
_OTHER = {
    "llama-3.1-70b": ("llm.tokens", ("input_tokens", "output_tokens")),
    "h100": ("gpu.time", ("gpu_ms",)),
    "a100": ("gpu.time", ("gpu_ms",)),
    "sdxl": ("image.generation", ("images",)),
    "dall-e-3": ("image.generation", ("images",)),
    "agent-runtime": ("agent.step", ("steps", "tool_calls")),
    "search-api": ("api.call", ("calls",)),
}


def bench_rating(events: int = 200_000) -> None:
    with collector.tuned():
        _bench_rating(events)


def _bench_rating(events: int) -> None:
    engine = RatingEngine(load_books())
    rng = random.Random(7)
    plain = [_token_event(rng, i, f"cust-{rng.randint(1, 6):04d}") for i in range(events)]
    print(f"rating.batch_events_per_second {_rate(engine, RatingState(), plain)}")
    state = RatingState()
    for n in range(1, 25):
        grant = CreditGrant(f"g-{n}", f"cust-{n:04d}", Decimal(rng.choice((500, 5_000))), _START)
        engine.apply_grant(state, grant)
    mixed = [_mixed_event(rng, i) for i in range(events)]
    print(f"rating.mixed_batch_events_per_second {_rate(engine, state, mixed)}")


def bench_customers(customers: int = 100_000, events: int = 200_000, rounds: int = 3) -> float:
    """Rating from a generated catalogue of 24 customers and from one of `customers`.

    Both rate the same events on the same mix of terms: each event's customer is drawn
    among the catalogue's customers on the terms (list price or a plan) of a customer
    drawn from the larger catalogue. Uniformly, the worst case for memory: with 24
    customers each has thousands of events; with 100,000 each has about two, so most
    events are their customer's first (its rating state and its price resolutions start
    cold), as when a flow meets many customers. `skewed`: drawn by rank as the load
    generator draws them (rank^-1.2 among the catalogue's customers, so the terms' mix
    is the catalogue's own; a few customers send most events). Returns the
    uniform rate with many customers as a share of the rate with 24.
    `seen_events_per_second` rates the same events again, a few days later in the same
    period, on the state they left: customers a flow has met already.

    Each figure is the best of `rounds` (a fresh engine and state each), the two
    catalogues taking turns: this machine's speed drifts by half between runs, so one
    run of each says more about the moment than about the catalogue.

    `floor_ns`: the memory cost of the catalogue's size alone (`_floor_ns`).

    `catalogue_seconds` is what a flow spends on the customers' records as the catalogue
    topic carries them: each read (JSON to a checked definition) and applied to the seed
    catalogue, and the books built."""
    with collector.tuned():
        return _bench_customers(customers, events, rounds)


def _bench_customers(customers: int, events: int, rounds: int) -> float:
    counts = (_FEW, customers)
    books, built, draws = {}, {}, {}
    for count in counts:
        published = [(str(r.kind), r.id, r.text) for r in customer_records(count)]
        started = time.process_time()
        catalogue = seed_catalogue(Settings())
        for kind, record_id, text in published:
            catalogue.apply(record_from(kind, record_id, text))
        books[count] = catalogue.books()
        RatingEngine(books[count])
        built[count] = time.process_time() - started
        for mix, draw in _MIXES.items():
            rng, picks = random.Random(11), random.Random(13)
            pick = draw(picks, _on_terms(count), customers)
            spread = [_token_event(rng, i, customer_id(pick())) for i in range(events)]
            draws[count, mix] = spread, _later(spread)
    best: dict[tuple[int, str], int] = {}
    floor: dict[int, float] = {}
    for _ in range(rounds):
        for (count, mix), (spread, later) in draws.items():
            engine, state = RatingEngine(books[count]), RatingState()
            for name, batch in ((mix, spread), (f"{mix}seen_", later)):
                rate = _rate(engine, state, batch)
                best[count, name] = max(best.get((count, name), 0), rate)
        for count in counts:
            ns = _floor_ns(count, draws[count, ""][1])
            floor[count] = min(floor.get(count, ns), ns)
    for count in counts:
        rated = len({e.customer_id for e in draws[count, ""][0]})
        print(f"rating.customers_{count}.catalogue_seconds {built[count]:.3f}")
        print(f"rating.customers_{count}.customers_rated {rated}")
        for name in ("", "seen_", "skewed_", "skewed_seen_"):
            print(f"rating.customers_{count}.{name}events_per_second {best[count, name]}")
        print(f"rating.customers_{count}.floor_ns {floor[count]:.0f}")
    for name in ("", "seen_", "skewed_", "skewed_seen_"):
        share = best[customers, name] / best[_FEW, name]
        suffix = f".{name.rstrip('_')}" if name else ""
        print(f"rating.customers_{customers}_to_{_FEW}{suffix} {share:.3f}")
    return best[customers, ""] / best[_FEW, ""]


def _floor_ns(count: int, events: list[UsageEvent]) -> float:
    """What rating must do an event whatever its design, in plain Python freshly made:
    find the customer among `count` and add to a quantity it keeps. The difference
    between 24 customers and 100,000 is the memory's alone, a floor under rating's own."""
    customers = {customer_id(n): [0] for n in range(1, count + 1)}
    started = time.process_time()
    for event in events:
        customers[event.customer_id][0] += 1
    return (time.process_time() - started) / len(events) * 1e9


def _later(events: list[UsageEvent]) -> list[UsageEvent]:
    return [
        replace(e, event_id=f"{e.event_id}-seen", timestamp=e.timestamp + _SPREAD) for e in events
    ]


def _on_terms(count: int) -> dict[str | None, list[int]]:
    """The generated customers 1..count by plan (None: list price)."""
    out: dict[str | None, list[int]] = {}
    for n in range(1, count + 1):
        out.setdefault(plan_of(n), []).append(n)
    return out


def _like(rng: random.Random, on_terms: dict[str | None, list[int]], population: int) -> int:
    """A customer on the terms of one drawn from `population` generated customers."""
    same = on_terms[plan_of(rng.randint(1, population))]
    return same[rng.randrange(len(same))]


Draw = Callable[[random.Random, dict[str | None, list[int]], int], Callable[[], int]]


def _uniform(
    rng: random.Random, on_terms: dict[str | None, list[int]], population: int
) -> Callable[[], int]:
    return lambda: _like(rng, on_terms, population)


def _skewed(
    rng: random.Random, on_terms: dict[str | None, list[int]], population: int
) -> Callable[[], int]:
    """Customers drawn by rank as the load generator draws them, from the catalogue's
    own: the same few send most events with 24 customers or 100,000, the larger
    catalogue adding a long tail."""
    ranks = range(1, sum(len(same) for same in on_terms.values()) + 1)
    weights = rank_weights(ranks)
    return lambda: rng.choices(ranks, cum_weights=weights)[0]


_MIXES: dict[str, Draw] = {"": _uniform, "skewed_": _skewed}


def _rate(engine: RatingEngine, state: RatingState, events: list[UsageEvent]) -> int:
    started = time.process_time()
    for i in range(0, len(events), BATCH):
        engine.rate_batch(state, events[i : i + BATCH])
    return round(len(events) / (time.process_time() - started))


def _token_event(rng: random.Random, i: int, customer: str) -> UsageEvent:
    quantities = {"input_tokens": rng.randint(50, 4_000), "output_tokens": rng.randint(5, 1_500)}
    if rng.random() < 0.4:
        quantities["cached_input_tokens"] = rng.randint(1, 2_000)
    return UsageEvent(
        f"ev-{i}",
        _START + timedelta(seconds=i),
        customer,
        "llm.tokens",
        rng.choice(_LLM),
        "openai",
        "realtime",
        quantities,
    )


def _mixed_event(rng: random.Random, i: int) -> UsageEvent:
    customer = f"cust-{rng.randint(1, 24):04d}"
    if rng.random() < 0.6:
        return _token_event(rng, i, customer)
    model = rng.choice(tuple(_OTHER))
    meter, dimensions = _OTHER[model]
    quantities = {d: rng.randint(1, 60_000 if d == "gpu_ms" else 20) for d in dimensions}
    mode = rng.choice(("realtime", "batch")) if meter == "llm.tokens" else "realtime"
    at = _START + timedelta(seconds=i)
    return UsageEvent(f"ev-{i}", at, customer, meter, model, "meterflow", mode, quantities)


if __name__ == "__main__":
    bench_rating()
    bench_customers()
