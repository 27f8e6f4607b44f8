"""One shard's decisions, without Bytewax or services: every event gets exactly one outcome."""

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from metering.dedupe import DedupeWindow
from metering.outcomes import Outcomes
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.records import Consumed, ConsumedGrant, Origin, ShardRecord
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from sinks.rows import shard_batch
from sinks.tables import (
    CREDIT_GRANTS,
    DEAD_LETTERS,
    DUPLICATES,
    LATE_ADJUSTMENTS,
    RATED_USAGE,
)

HOUR_US = 3_600_000_000
NOW = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)


def event(
    event_id: str, at: datetime, customer: str = "cust-0001", model: str = "gpt-4o"
) -> UsageEvent:
    return UsageEvent(
        event_id=event_id,
        timestamp=at,
        customer_id=customer,
        meter="llm.tokens",
        model=model,
        provider="openai",
        mode="realtime",
        quantities={"input_tokens": 1_000_000, "output_tokens": 100_000},
    )


Rows = dict[str, list[dict[str, Any]]]


def at(topic: str, offset: int) -> Origin:
    return Origin(topic, 0, offset, 0)


def consumed(events: list[UsageEvent]) -> list[Consumed]:
    return [Consumed(e, at("usage", offset)) for offset, e in enumerate(events)]


def run(
    shard_meter: ShardMeter, state: ShardState, records: Sequence[ShardRecord]
) -> tuple[Rows, Outcomes]:
    """The shard's decisions, and the rows the sink gets of them, by table and column."""
    outcomes = shard_meter.meter("shard-000", state, records)
    batch = shard_batch("shard-000", state.positions, outcomes)
    rows = {table: rows.to_pylist(maps_as_pydicts="strict") for table, rows in batch.tables.items()}
    return rows, outcomes


def meter(events: list[UsageEvent]) -> tuple[Rows, Outcomes]:
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    return run(shard_meter, ShardState(DedupeWindow(24 * HOUR_US)), consumed(events))


def column(table: str, name: str, rows: Rows) -> list[object]:
    return [row[name] for row in rows.get(table, [])]


def test_each_event_has_one_outcome_and_positions_count_up() -> None:
    events = [
        event("a", NOW - timedelta(minutes=5)),
        event("a", NOW - timedelta(minutes=5)),
        event("b", NOW - timedelta(minutes=1)),
        event("c", NOW - timedelta(minutes=2), customer="cust-9999"),
        event("d", NOW - timedelta(minutes=3), model="mystery-model-7b"),
    ]
    out, outcomes = meter(events)
    assert column(RATED_USAGE, "event_id", out) == ["a", "b"]
    assert column(RATED_USAGE, "position", out) == [0, 1]
    assert column(DUPLICATES, "offset", out) == [1]
    reasons = column(DEAD_LETTERS, "reason", out)
    assert sorted(reasons) == ["unknown_customer", "unknown_model"]
    assert sum(outcomes.counts().values()) == len(events)


def test_late_event_in_a_closed_period_becomes_an_adjustment() -> None:
    on_time = event("now", NOW)
    last_month = event("nov", NOW - timedelta(hours=2))
    out, outcomes = meter([on_time, last_month])
    late = column(RATED_USAGE, "late", out)
    adjustment = column(RATED_USAGE, "adjustment", out)
    assert late == [False, True] and adjustment == [False, True]
    assert column(LATE_ADJUSTMENTS, "event_id", out) == ["nov"]
    assert outcomes.counts() == {"rated": 1, "adjustment": 1}
    assert [r.lateness_ms for r in outcomes.rated if r.late] == [7_200_000]


def test_events_beyond_the_dedupe_horizon_are_dead_lettered_not_guessed() -> None:
    out, outcomes = meter([event("new", NOW), event("old", NOW - timedelta(hours=25))])
    assert column(DEAD_LETTERS, "reason", out) == ["beyond_dedupe_horizon"]
    assert outcomes.counts() == {"rated": 1, "dead_letter": 1}


def test_a_grant_pays_for_the_usage_after_it_and_a_bad_grant_is_dead_lettered() -> None:
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    state = ShardState(DedupeWindow(24 * HOUR_US))
    start = NOW - timedelta(hours=1)
    grant = CreditGrant("g1", "cust-0015", Decimal(500), start, start + timedelta(days=30))
    stranger = CreditGrant("g2", "cust-9999", Decimal(5), start)
    before, after = event("before", NOW, "cust-0015"), event("after", NOW, "cust-0015")
    items = [
        Consumed(before, at("usage", 0)),
        ConsumedGrant(grant, at("grants", 0)),
        ConsumedGrant(stranger, at("grants", 1)),
        Consumed(after, at("usage", 1)),
    ]
    out, outcomes = run(shard_meter, state, items)
    credits = column(RATED_USAGE, "credits_applied", out)
    assert credits[0] == 0 and credits[1] > 0
    assert column(CREDIT_GRANTS, "grant_id", out) == ["g1"]
    assert column(DEAD_LETTERS, "reason", out) == ["unknown_customer"]
    assert len(outcomes.grants) == 1


def test_accumulators_of_periods_past_the_horizon_are_forgotten_and_later_rating_holds() -> None:
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    state = ShardState(DedupeWindow(24 * HOUR_US))
    november, december = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)
    shard_meter.meter("shard-000", state, consumed([event("nov", november)]))
    rated = state.rating.customers["cust-0001"]
    periods = {key[0] for key in (*rated.usage, *rated.quantities)}
    assert len(periods) == 1

    first, _ = run(shard_meter, state, consumed([event("dec-1", december)]))
    fresh = ShardState(DedupeWindow(24 * HOUR_US))
    alone, _ = run(shard_meter, fresh, consumed([event("dec-1", december)]))
    assert {key[0] for key in (*rated.usage, *rated.quantities)}.isdisjoint(periods)
    assert first[RATED_USAGE][0]["amount"] == alone[RATED_USAGE][0]["amount"]


def test_a_conflicting_resend_is_a_duplicate_recorded_with_both_fingerprints() -> None:
    """The first arrival wins; a re-send whose content differs says so."""
    first = event("a", NOW - timedelta(minutes=5))
    bigger = replace(first, quantities={"input_tokens": 1})
    items = [
        Consumed(first, at("usage", 0), fingerprint=111),
        Consumed(first, at("usage", 1), fingerprint=111),
        Consumed(bigger, at("usage", 2), fingerprint=222),
    ]
    state = ShardState(DedupeWindow(24 * HOUR_US))
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    out, outcomes = run(shard_meter, state, items)
    assert column(DUPLICATES, "conflicting", out) == [False, True]
    assert column(DUPLICATES, "fingerprint", out) == [111, 222]
    assert column(DUPLICATES, "first_fingerprint", out) == [111, 111]
    counts = outcomes.counts()
    assert (counts["duplicate"], counts["conflicting_duplicate"]) == (1, 1)
    assert column(RATED_USAGE, "quantities", out) == [first.quantities]


def test_a_grant_lapses_when_the_watermark_passes_its_expiry_not_before() -> None:
    """Lateness 10 minutes. Usage dated a minute before expiry, arriving after usage dated
    five minutes past it, still draws; the grant lapses at the first event that takes the
    watermark past the expiry, wherever batches end."""
    expiry = NOW
    grant = CreditGrant("g", "cust-0015", Decimal(100_000), NOW - timedelta(hours=2), expiry)
    sdxl = {"meter": "image.generation", "model": "sdxl", "provider": "stability"}

    def images(event_id: str, at: datetime) -> UsageEvent:
        return UsageEvent(
            event_id, at, "cust-0015", mode="realtime", quantities={"images": 1}, **sdxl
        )

    sends = [
        images("after", expiry + timedelta(minutes=5)),
        images("late", expiry - timedelta(minutes=1)),
        images("past", expiry + timedelta(minutes=11)),
        images("too-late", expiry - timedelta(minutes=1, seconds=1)),
    ]
    items: list[ShardRecord] = [ConsumedGrant(grant, at("grants", 0))]
    items += [Consumed(e, at("usage", i)) for i, e in enumerate(sends)]
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    whole = run(shard_meter, ShardState(DedupeWindow(24 * HOUR_US)), items)[0]
    split_state = ShardState(DedupeWindow(24 * HOUR_US))
    halves = [run(shard_meter, split_state, [i])[0] for i in items]
    for out in [whole], halves:
        rated = [row for rows in out for row in rows.get(RATED_USAGE, [])]
        credits = {row["event_id"]: row["credits_applied"] for row in rated}
        assert credits == {
            "after": Decimal(0),
            "late": Decimal("0.05"),
            "past": Decimal(0),
            "too-late": Decimal(0),
        }
        lapsed = [row for rows in out for row in rows.get("credit_expiries", [])]
        assert len(lapsed) == 1
