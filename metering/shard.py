"""What one shard of customers does with its records: dedupe, lateness, credits, rating.

Pure: no Bytewax, no services, no table rows. The dataflow keeps a `ShardState` per
shard key and calls `meter` with the records the shard's order released; everything
it decides is a function of the state and those records, so a replay from a snapshot
decides it again exactly, outcome for outcome.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from metering.dedupe import BUCKET_US, DedupeWindow, Verdict
from metering.ordering import Sequencer
from metering.outcomes import DeadLetter, Duplicate, GrantApplied, Outcomes, Rated
from metering.rating.engine import RatingEngine
from metering.rating.state import RatingState
from metering.records import Consumed, ConsumedGrant, ShardRecord
from metering.stopwatch import Stopwatch
from schemas.event import Rejection, RejectReason, from_micros, to_micros
from schemas.jsonform import dump_line, to_record


@dataclass
class ShardState:
    """Everything a shard must resume with; pickled whole into Bytewax snapshots."""

    dedupe: DedupeWindow
    rating: RatingState = field(default_factory=RatingState)
    sequencer: Sequencer[ShardRecord] = field(default_factory=lambda: Sequencer(()))
    """Records read but not yet metered: they wait for every partition to pass them."""
    positions: Counter[str] = field(default_factory=Counter)
    """The next position of the shard's rows in each table (`sinks.rows`)."""
    forgotten_hour: int = -1
    """The hour of event time at which closed periods were last forgotten."""


@dataclass(frozen=True, slots=True)
class _Fresh:
    """An event seen for the first time, bound for rating."""

    consumed: Consumed
    late: bool
    lateness_ms: int
    watermark_us: int


@dataclass
class _Batch:
    """One call's state, what it has decided so far, and where its time goes."""

    state: ShardState
    watch: Stopwatch
    outcomes: Outcomes = field(default_factory=Outcomes)


class ShardMeter:
    def __init__(self, engine: RatingEngine, allowed_lateness_us: int):
        self.engine = engine
        self.allowed_lateness_us = allowed_lateness_us

    def meter(
        self, state: ShardState, records: Sequence[ShardRecord], watch: Stopwatch | None = None
    ) -> Outcomes:
        """Usage and grants in the shard's order: a grant applies to the usage after it.

        A grant lapses when the watermark (the newest event time less the allowed
        lateness) passes its expiry, at that event's place in the order, so usage dated
        before the expiry that arrives within the lateness still draws from it and where
        batches happen to end changes nothing."""
        batch = _Batch(state, watch or Stopwatch())
        usage: list[Consumed] = []
        for record in records:
            if isinstance(record, ConsumedGrant):
                self._usage(batch, usage)
                usage = []
                self._grant(batch, record)
                continue
            watermark_us = to_micros(record.event.timestamp) - self.allowed_lateness_us
            if self.engine.lapse_due(state.rating, watermark_us):
                self._usage(batch, usage)
                usage = []
                self._expire(batch, watermark_us)
            usage.append(record)
        self._usage(batch, usage)
        self._forget_closed_periods(state)
        return batch.outcomes

    def _expire(self, batch: _Batch, watermark_us: int) -> None:
        expiries, alerts = self.engine.expire(batch.state.rating, from_micros(watermark_us))
        batch.outcomes.expiries.extend(expiries)
        batch.outcomes.alerts.extend(alerts)

    def _forget_closed_periods(self, state: ShardState) -> None:
        """Drop rating accumulators of periods that ended beyond the dedupe horizon: any
        event of theirs would be dead-lettered, so they can change no more. Once an hour
        of event time, since it walks the whole rating state; never for a horizon reaching
        back before 1970 (replays keep every id)."""
        window = state.dedupe
        hour = window.max_event_us // BUCKET_US
        edge_us = window.max_event_us - window.horizon_us
        if edge_us <= 0 or hour == state.forgotten_hour:
            return
        state.forgotten_hour = hour
        for customer_id, customer in state.rating.customers.items():
            start_us, _ = self.engine.period_bounds(customer_id, edge_us)
            customer.forget_before(start_us)

    def _usage(self, batch: _Batch, records: Sequence[Consumed]) -> None:
        if not records:
            return
        with batch.watch.stage("dedupe"):
            fresh = self._dedupe(batch, records)
        with batch.watch.stage("rate"):
            result = self.engine.rate_batch(batch.state.rating, [f.consumed.event for f in fresh])
        rated = {(line.customer_id, line.event_id): line for line in result.lines}
        rejected = {(r.customer_id, r.event_id): r for r in result.rejections}
        outcomes = batch.outcomes
        for f in fresh:
            key = (f.consumed.event.customer_id, f.consumed.event.event_id)
            line = rated.get(key)
            if line is None:
                outcomes.dead_letters.append(_usage_dead_letter(f.consumed, rejected[key]))
                continue
            adjustment = f.late and self._period_closed(line.customer_id, line.timestamp, f)
            outcomes.rated.append(
                Rated(f.consumed, line, f.late, f.lateness_ms, adjustment, f.watermark_us)
            )
        outcomes.alerts.extend(result.alerts)

    def _grant(self, batch: _Batch, record: ConsumedGrant) -> None:
        grant = record.grant
        rejection = self.engine.apply_grant(batch.state.rating, grant)
        if rejection is None:
            amount = self.engine.grant_amount(grant)
            batch.outcomes.grants.append(GrantApplied(record, amount))
            return
        payload = json.dumps(asdict(grant), default=str).encode()
        batch.outcomes.dead_letters.append(DeadLetter(record.origin, rejection, payload))

    def _dedupe(self, batch: _Batch, records: Sequence[Consumed]) -> list[_Fresh]:
        """First arrivals go on to rating; re-sends are duplicates; ids beyond the horizon
        cannot be counted exactly once and are dead-lettered."""
        fresh = []
        window = batch.state.dedupe
        stamps = [to_micros(record.event.timestamp) for record in records]
        newest_us = window.max_event_us
        seen = window.check_batch(
            [
                (r.event.customer_id, r.event.event_id, event_us, r.fingerprint)
                for r, event_us in zip(records, stamps, strict=True)
            ]
        )
        outcomes = batch.outcomes
        for record, event_us, found in zip(records, stamps, seen, strict=True):
            watermark_us = newest_us - self.allowed_lateness_us
            if found.verdict is Verdict.DUPLICATE:
                outcomes.duplicates.append(
                    Duplicate(record, found.first_us, found.first_fingerprint)
                )
            elif found.verdict is Verdict.BEYOND_HORIZON:
                rejection = Rejection(
                    RejectReason.BEYOND_DEDUPE_HORIZON,
                    f"event time {record.event.timestamp.isoformat()} is more than the dedupe "
                    f"horizon behind this shard's newest event, {from_micros(newest_us)}: it "
                    "cannot be counted exactly once; backfill it through a replay",
                    record.event.event_id,
                    record.event.customer_id,
                )
                outcomes.dead_letters.append(_usage_dead_letter(record, rejection))
            else:
                lateness_us = max(0, newest_us - event_us)
                late = event_us < watermark_us
                fresh.append(_Fresh(record, late, lateness_us // 1000, watermark_us))
            if found.verdict is Verdict.FRESH:
                newest_us = max(newest_us, event_us)
        return fresh

    def _period_closed(self, customer_id: str, timestamp: datetime, fresh: _Fresh) -> bool:
        """Whether the event's billing period ended behind the watermark (asked of late lines)."""
        _, end_us = self.engine.period_bounds(customer_id, to_micros(timestamp))
        return end_us <= fresh.watermark_us


def _usage_dead_letter(record: Consumed, rejection: Rejection) -> DeadLetter:
    return DeadLetter(record.origin, rejection, dump_line(to_record(record.event)).encode())
