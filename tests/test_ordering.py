"""A shard meters in one order, whatever order its partitions' batches arrive in."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from metering.dedupe import DedupeWindow
from metering.ordering import Sequencer, Source
from metering.rating.credits import CreditGrant
from metering.records import Consumed, ConsumedGrant, Origin
from metering.shard import ShardState
from schemas.event import UsageEvent


@dataclass(frozen=True)
class Item:
    topic: str
    partition: int
    offset: int
    order_ms: int

    @property
    def origin(self) -> Item:
        return self


def partition_log(source: Source, stamps: list[int]) -> list[Item]:
    """Records of one partition: order keys are the running maximum of append times."""
    top, items = 0, []
    for offset, stamp in enumerate(stamps):
        top = max(top, stamp)
        items.append(Item(*source, offset, top))
    return items


logs = st.lists(st.lists(st.integers(0, 50), max_size=30), min_size=1, max_size=5)


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[dict[Source, list[Item]], list[tuple[Source, int]]]:
    """Partitions' logs, and one interleaving of their batches (source, batch size)."""
    stamps = draw(logs)
    parts = {("usage", p): partition_log(("usage", p), s) for p, s in enumerate(stamps)}
    left = {source: len(items) for source, items in parts.items()}
    order: list[tuple[Source, int]] = []
    while any(left.values()):
        source = draw(st.sampled_from(sorted(s for s, n in left.items() if n)))
        size = draw(st.integers(1, left[source]))
        order.append((source, size))
        left[source] -= size
    return parts, order


def run(
    parts: dict[Source, list[Item]], order: list[tuple[Source, int]], snapshot_at: int = -1
) -> list[Item]:
    """Feed batches in `order`, each with its partition's bound; at the end every
    partition reports it is finished. Optionally pickle and restore midway."""
    sequencer: Sequencer[Item] = Sequencer(parts)
    read = dict.fromkeys(parts, 0)
    released: list[Item] = []
    for step, (source, size) in enumerate(order):
        batch = parts[source][read[source] : read[source] + size]
        read[source] += size
        sequencer.offer(source, batch, batch[-1].order_ms)
        released += sequencer.release()
        if step == snapshot_at:
            sequencer = pickle.loads(pickle.dumps(sequencer))
            sequencer.feed_from(parts)
            for known, n in read.items():  # partitions report afresh after a resume
                if n:
                    sequencer.offer(known, [], parts[known][n - 1].order_ms)
    for source in parts:
        sequencer.offer(source, [], 2**62)
    return released + sequencer.release()


def expected(parts: dict[Source, list[Item]]) -> list[Item]:
    every = [item for items in parts.values() for item in items]
    return sorted(every, key=lambda i: (i.order_ms, i.partition, i.offset))


@given(arrivals())
def test_release_order_is_the_same_for_every_interleaving(
    case: tuple[dict[Source, list[Item]], list[tuple[Source, int]]],
) -> None:
    parts, order = case
    assert run(parts, order) == expected(parts)


@given(arrivals(), st.integers(0, 40))
def test_a_snapshot_and_resume_midway_changes_nothing(
    case: tuple[dict[Source, list[Item]], list[tuple[Source, int]]], at: int
) -> None:
    parts, order = case
    assert run(parts, order, snapshot_at=at) == expected(parts)


def test_nothing_is_released_before_every_partition_has_reported() -> None:
    a, b = ("usage", 0), ("grants", 0)
    sequencer: Sequencer[Item] = Sequencer([a, b])
    sequencer.offer(a, [Item(*a, 0, 10), Item(*a, 1, 20)], 20)
    assert sequencer.release() == []
    sequencer.offer(b, [], 15)
    assert [i.offset for i in sequencer.release()] == [0]
    assert len(sequencer) == 1


def test_a_record_below_the_frontier_is_counted_and_still_metered() -> None:
    a, b = ("usage", 0), ("usage", 1)
    sequencer: Sequencer[Item] = Sequencer([a, b])
    sequencer.offer(a, [], 100)
    assert sequencer.offer(b, [Item(*b, 0, 50)], 200) == 0
    assert [i.offset for i in sequencer.release()] == [0]
    assert sequencer.offer(a, [Item(*a, 0, 90), Item(*a, 1, 120)], 120) == 1
    assert [(i.partition, i.offset) for i in sequencer.release()] == [(0, 0)]


def test_a_snapshot_holds_waiting_usage_as_columns_and_gives_back_the_same_records() -> None:
    """Usage waiting for a partition's bound is pickled as columns; what a resume gets
    back equals what waited, every field, and a grant waiting on its topic too."""
    usage, grants = ("usage", 0), ("grants", 0)
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    events = [
        UsageEvent(
            event_id=f"e{i}",
            timestamp=at + timedelta(microseconds=7 * i),
            customer_id="c1",
            meter="llm.tokens",
            model="m1",
            provider="p1",
            mode="batch" if i % 2 else "realtime",
            quantities={"input_tokens": i, "output_tokens": 2 * i},
            project_id=None if i % 3 else f"p{i}",
            feature="chat",
            properties={"region": "eu"} if i % 2 else {},
            region="eu" if i % 2 else None,
            corrects="e0" if i == 3 else None,
        )
        for i in range(5)
    ]
    waiting = [
        Consumed(
            e, Origin("usage", 0, 10 + i, 1000 + i, 1000 + i), i * 11, f"usage/1/{i}" * (i % 2)
        )
        for i, e in enumerate(events)
    ]
    grant = ConsumedGrant(
        CreditGrant("g1", "c1", Decimal("10"), at, None), Origin("grants", 0, 4, 900, 900)
    )
    state = ShardState(DedupeWindow(10**9))
    state.sequencer.feed_from([usage, grants])
    state.sequencer.offer(usage, waiting, 1000)
    state.sequencer.offer(grants, [grant], 900)

    resumed = pickle.loads(pickle.dumps(state))
    resumed.sequencer.feed_from([usage, grants])
    resumed.sequencer.offer(usage, [], 2000)
    resumed.sequencer.offer(grants, [], 2000)
    assert resumed.sequencer.release() == [grant, *waiting]
