"""One shard's decisions, without Bytewax or services: every event gets exactly one outcome."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flows.decode import Consumed, ConsumedGrant
from flows.metering import ShardMeter, ShardReport, ShardState
from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from schemas.event import UsageEvent
from sinks.batch import SinkBatch
from sinks.tables import (
    CREDIT_GRANTS,
    DEAD_LETTERS,
    DUPLICATES,
    LATE_ADJUSTMENTS,
    RATED_USAGE,
    TABLES,
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


def consumed(events: list[UsageEvent]) -> list[Consumed]:
    return [Consumed(e, "usage", 0, offset, 0) for offset, e in enumerate(events)]


def meter(events: list[UsageEvent]) -> tuple[SinkBatch, ShardReport]:
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    state = ShardState(DedupeWindow(24 * HOUR_US))
    return shard_meter.meter("shard-000", state, consumed(events), NOW)


def column(table: str, name: str, rows: list[tuple[object, ...]]) -> list[object]:
    index = TABLES[table].index(name)
    return [row[index] for row in rows]


def test_each_event_has_one_outcome_and_positions_count_up() -> None:
    events = [
        event("a", NOW - timedelta(minutes=5)),
        event("a", NOW - timedelta(minutes=5)),
        event("b", NOW - timedelta(minutes=1)),
        event("c", NOW - timedelta(minutes=2), customer="cust-9999"),
        event("d", NOW - timedelta(minutes=3), model="mystery-model-7b"),
    ]
    out, report = meter(events)
    assert column(RATED_USAGE, "event_id", out.tables[RATED_USAGE]) == ["a", "b"]
    assert column(RATED_USAGE, "position", out.tables[RATED_USAGE]) == [0, 1]
    assert column(DUPLICATES, "offset", out.tables[DUPLICATES]) == [1]
    reasons = column(DEAD_LETTERS, "reason", out.tables[DEAD_LETTERS])
    assert sorted(reasons) == ["unknown_customer", "unknown_model"]
    assert sum(report.outcomes.values()) == len(events)


def test_late_event_in_a_closed_period_becomes_an_adjustment() -> None:
    on_time = event("now", NOW)
    last_month = event("nov", NOW - timedelta(hours=2))
    out, report = meter([on_time, last_month])
    late = column(RATED_USAGE, "late", out.tables[RATED_USAGE])
    adjustment = column(RATED_USAGE, "adjustment", out.tables[RATED_USAGE])
    assert late == [False, True] and adjustment == [False, True]
    assert column(LATE_ADJUSTMENTS, "event_id", out.tables[LATE_ADJUSTMENTS]) == ["nov"]
    assert report.outcomes == {"rated": 1, "adjustment": 1}
    assert report.lateness_seconds == [7200.0]


def test_events_beyond_the_dedupe_horizon_are_dead_lettered_not_guessed() -> None:
    out, report = meter([event("new", NOW), event("old", NOW - timedelta(hours=25))])
    assert column(DEAD_LETTERS, "reason", out.tables[DEAD_LETTERS]) == ["beyond_dedupe_horizon"]
    assert report.outcomes == {"rated": 1, "dead_letter": 1}


def test_a_grant_pays_for_the_usage_after_it_and_a_bad_grant_is_dead_lettered() -> None:
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    state = ShardState(DedupeWindow(24 * HOUR_US))
    start = NOW - timedelta(hours=1)
    grant = CreditGrant("g1", "cust-0015", Decimal(500), start, start + timedelta(days=30))
    stranger = CreditGrant("g2", "cust-9999", Decimal(5), start)
    before, after = event("before", NOW, "cust-0015"), event("after", NOW, "cust-0015")
    items = [
        Consumed(before, "usage", 0, 0, 0),
        ConsumedGrant(grant, "grants", 0, 0, 0),
        ConsumedGrant(stranger, "grants", 0, 1, 0),
        Consumed(after, "usage", 0, 1, 0),
    ]
    out, report = shard_meter.meter("shard-000", state, items, NOW)
    credits = column(RATED_USAGE, "credits_applied", out.tables[RATED_USAGE])
    assert credits[0] == 0 and credits[1] > 0
    assert column(CREDIT_GRANTS, "grant_id", out.tables[CREDIT_GRANTS]) == ["g1"]
    assert column(DEAD_LETTERS, "reason", out.tables[DEAD_LETTERS]) == ["unknown_customer"]
    assert report.grants == 1


def test_accumulators_of_periods_past_the_horizon_are_forgotten_and_later_rating_holds() -> None:
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    state = ShardState(DedupeWindow(24 * HOUR_US))
    november, december = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)
    shard_meter.meter("s", state, consumed([event("nov", november)]), NOW)
    periods = {key[0] for key in state.rating.customers["cust-0001"].usage}
    assert len(periods) == 1

    first, _ = shard_meter.meter("s", state, consumed([event("dec-1", december)]), NOW)
    fresh = ShardState(DedupeWindow(24 * HOUR_US))
    alone, _ = shard_meter.meter("s", fresh, consumed([event("dec-1", december)]), NOW)
    assert {key[0] for key in state.rating.customers["cust-0001"].usage}.isdisjoint(periods)
    amount = TABLES[RATED_USAGE].index("amount")
    assert first.tables[RATED_USAGE][0][amount] == alone.tables[RATED_USAGE][0][amount]


def test_a_conflicting_resend_is_a_duplicate_recorded_with_both_fingerprints() -> None:
    """The first arrival wins; a re-send whose content differs says so."""
    first = event("a", NOW - timedelta(minutes=5))
    bigger = replace(first, quantities={"input_tokens": 1})
    items = [
        Consumed(first, "usage", 0, 0, 0, fingerprint=111),
        Consumed(first, "usage", 0, 1, 0, fingerprint=111),
        Consumed(bigger, "usage", 0, 2, 0, fingerprint=222),
    ]
    state = ShardState(DedupeWindow(24 * HOUR_US))
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    out, report = shard_meter.meter("shard-000", state, items, NOW)
    rows = out.tables[DUPLICATES]
    assert column(DUPLICATES, "conflicting", rows) == [False, True]
    assert column(DUPLICATES, "fingerprint", rows) == [111, 222]
    assert column(DUPLICATES, "first_fingerprint", rows) == [111, 111]
    assert (report.outcomes["duplicate"], report.outcomes["conflicting_duplicate"]) == (1, 1)
    assert column(RATED_USAGE, "quantities", out.tables[RATED_USAGE]) == [first.quantities]


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
    items: list[Consumed | ConsumedGrant] = [ConsumedGrant(grant, "grants", 0, 0, 0)]
    items += [Consumed(e, "usage", 0, i, 0) for i, e in enumerate(sends)]
    shard_meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    whole = shard_meter.meter("shard-000", ShardState(DedupeWindow(24 * HOUR_US)), items, NOW)[0]
    split_state = ShardState(DedupeWindow(24 * HOUR_US))
    halves = [shard_meter.meter("shard-000", split_state, [i], NOW)[0] for i in items]
    for out in [whole], halves:
        rated = [row for batch in out for row in batch.tables.get(RATED_USAGE, [])]
        credits = dict(
            zip(
                column(RATED_USAGE, "event_id", rated),
                column(RATED_USAGE, "credits_applied", rated),
                strict=True,
            )
        )
        assert credits == {
            "after": Decimal(0),
            "late": Decimal("0.05"),
            "past": Decimal(0),
            "too-late": Decimal(0),
        }
        lapsed = [row for batch in out for row in batch.tables.get("credit_expiries", [])]
        assert len(lapsed) == 1
