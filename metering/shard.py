"""What one shard of customers does with its records: dedupe, lateness, credits, the
live catalogue, parking of unknown customers' usage, rating.

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

from metering.catalogue.catalogue import Catalogue
from metering.catalogue.live import LiveCatalogue, metered
from metering.dedupe import BUCKET_US, DedupeWindow, Verdict
from metering.ordering import Sequencer
from metering.outcomes import (
    DeadLetter,
    Duplicate,
    GrantApplied,
    Outcomes,
    Parked,
    Rated,
    parked_customer,
)
from metering.parking import Parking
from metering.rating.engine import RatingEngine
from metering.rating.state import RatingState
from metering.records import (
    Consumed,
    ConsumedCatalogue,
    ConsumedGrant,
    ShardRecord,
    pack_held,
    unpack_held,
)
from metering.stopwatch import Stopwatch
from schemas.event import Rejection, RejectReason, UsageEvent, from_micros, to_micros
from schemas.jsonform import dump_line, to_record


@dataclass
class ShardState:
    """Everything a shard must resume with; pickled whole into Bytewax snapshots."""

    dedupe: DedupeWindow
    rating: RatingState = field(default_factory=RatingState)
    sequencer: Sequencer[ShardRecord] = field(
        default_factory=lambda: Sequencer((), pack_held, unpack_held)
    )
    """Records read but not yet metered: they wait for every partition to pass them."""
    positions: Counter[str] = field(default_factory=Counter)
    """The next position of the shard's rows in each table (`sinks.rows`)."""
    forgotten_hour: int = -1
    """The hour of event time at which closed periods were last forgotten."""
    catalogue: Catalogue | None = None
    """The live catalogue as this shard has applied it; None while it is the seed."""
    parked: Parking[Consumed | ConsumedGrant] = field(default_factory=Parking)
    """Usage and grants of customers not in the catalogue yet (`metering.parking`)."""


@dataclass(slots=True)
class _Fresh:
    """An event seen for the first time, bound for rating."""

    consumed: Consumed
    late: bool
    lateness_ms: int
    watermark_us: int


@dataclass
class _Batch:
    """One call's shard, state and engine, what it has decided so far, and where its
    time goes."""

    shard: str
    state: ShardState
    seed: RatingEngine
    live: LiveCatalogue | None
    watch: Stopwatch
    outcomes: Outcomes = field(default_factory=Outcomes)
    _engine: RatingEngine | None = None

    @property
    def engine(self) -> RatingEngine:
        """The engine of the shard's catalogue as it is, built when first needed after a
        record changed the catalogue: a shard given thousands of customer records in a
        row (a flow starting on a catalogue of 100,000 customers) builds one, not one a
        record."""
        if self._engine is None:
            live, catalogue = self.live, self.state.catalogue
            self._engine = self.seed if live is None else live.engine(self.shard, catalogue)
        return self._engine

    def catalogue_changed(self) -> None:
        self._engine = None


class ShardMeter:
    def __init__(
        self, engine: RatingEngine, allowed_lateness_us: int, live: LiveCatalogue | None = None
    ):
        self.engine = engine
        self.allowed_lateness_us = allowed_lateness_us
        self.live = live

    def meter(
        self,
        shard: str,
        state: ShardState,
        records: Sequence[ShardRecord],
        watch: Stopwatch | None = None,
    ) -> Outcomes:
        """Usage, grants and catalogue records in the shard's order: a grant or a record
        applies to the usage after it.

        A grant lapses when the watermark (the newest event time less the allowed
        lateness) passes its expiry, at that event's place in the order, so usage dated
        before the expiry that arrives within the lateness still draws from it and where
        batches happen to end changes nothing."""
        batch = _Batch(shard, state, self.engine, self.live, watch or Stopwatch())
        usage: list[Consumed] = []
        for record in records:
            if isinstance(record, ConsumedCatalogue):
                self._usage(batch, usage)
                usage = []
                self._catalogue(batch, record)
                continue
            if isinstance(record, ConsumedGrant):
                self._usage(batch, usage)
                usage = []
                self._grant(batch, record)
                continue
            watermark_us = to_micros(record.event.timestamp) - self.allowed_lateness_us
            if batch.engine.lapse_due(state.rating, watermark_us):
                self._usage(batch, usage)
                usage = []
                self._expire(batch, watermark_us)
            usage.append(record)
        self._usage(batch, usage)
        self._forget_closed_periods(batch)
        return batch.outcomes

    def _catalogue(self, batch: _Batch, record: ConsumedCatalogue) -> None:
        """Apply a catalogue record at its place in the order (`metering.catalogue.live`);
        a customer's record releases the usage and grants parked for it."""
        if self.live is None:
            return
        state = batch.state
        state.catalogue, rejection = self.live.apply(batch.shard, state.catalogue, record)
        batch.catalogue_changed()
        if rejection is not None:
            payload = record.record.text.encode()
            batch.outcomes.dead_letters.append(DeadLetter(record.origin, rejection, payload))
            return
        customer_id = record.record.customer_id
        if customer_id is not None:
            self._unpark(batch, state.parked.release(customer_id))

    def _unpark(self, batch: _Batch, records: list[Consumed | ConsumedGrant]) -> None:
        """Rate parked usage and apply parked grants now that their customer is known, in
        the order they were parked, as if they arrived now: usage is judged late against
        the watermark of now (it was deduplicated when it arrived), and a grant lapses at
        once if that watermark is past its expiry."""
        newest_us = batch.state.dedupe.max_event_us
        watermark_us = newest_us - self.allowed_lateness_us
        fresh: list[_Fresh] = []
        for record in records:
            batch.outcomes.parked.append(Parked(record, "released"))
            if isinstance(record, ConsumedGrant):
                self._rate(batch, fresh)
                fresh = []
                self._grant(batch, record)
                if batch.engine.lapse_due(batch.state.rating, watermark_us):
                    self._expire(batch, watermark_us)
                continue
            event_us = to_micros(record.event.timestamp)
            lateness_ms = max(0, newest_us - event_us) // 1000
            fresh.append(_Fresh(record, event_us < watermark_us, lateness_ms, watermark_us))
        self._rate(batch, fresh)

    def _park(self, batch: _Batch, record: Consumed | ConsumedGrant) -> None:
        batch.outcomes.parked.append(Parked(record, "parked"))
        batch.state.parked.park(parked_customer(record), record)
        self._evict(batch, record.origin.order_ms)

    def _evict(self, batch: _Batch, order_ms: int) -> None:
        if self.live is not None and self.live.parking_due(batch.state.parked, order_ms):
            self._unpark_expired(batch, order_ms)

    def _unpark_expired(self, batch: _Batch, order_ms: int) -> None:
        assert self.live is not None
        unknown = self.live.unknown
        for record in self.live.over_bound(batch.state.parked, order_ms):
            parked = Parked(record, "expired")
            batch.outcomes.parked.append(parked)
            customer_id = parked.customer_id
            bound = f"{unknown.max_events} records a shard, {unknown.max_age_ms / 3_600_000:g} h"
            if isinstance(record, ConsumedGrant):
                what, then = f"its credit grant {parked.event_id!r}", "send the grant again"
            else:
                what, then = "its usage", "redrive it"
            rejection = Rejection(
                RejectReason.UNKNOWN_CUSTOMER,
                f"customer {customer_id!r} is not in the catalogue, and {what} was parked "
                f"past the bound ({bound}); {then} once the customer exists",
                parked.event_id,
                customer_id,
            )
            batch.outcomes.dead_letters.append(_dead_letter(record, rejection))

    def _expire(self, batch: _Batch, watermark_us: int) -> None:
        expiries, alerts = batch.engine.expire(batch.state.rating, from_micros(watermark_us))
        batch.outcomes.expiries.extend(expiries)
        batch.outcomes.alerts.extend(alerts)

    def _forget_closed_periods(self, batch: _Batch) -> None:
        """Drop rating accumulators of periods that ended beyond the dedupe horizon: any
        event of theirs would be dead-lettered, so they can change no more. Once an hour
        of event time, since it walks the whole rating state; never for a horizon reaching
        back before 1970 (replays keep every id)."""
        state = batch.state
        window = state.dedupe
        hour = window.max_event_us // BUCKET_US
        edge_us = window.max_event_us - window.horizon_us
        if edge_us <= 0 or hour == state.forgotten_hour:
            return
        state.forgotten_hour = hour
        for customer_id, customer in state.rating.customers.items():
            start_us, _ = batch.engine.period_bounds(customer_id, edge_us)
            customer.forget_before(start_us)

    def _usage(self, batch: _Batch, records: Sequence[Consumed]) -> None:
        if not records:
            return
        with batch.watch.stage("dedupe"):
            fresh = self._dedupe(batch, records)
        self._rate(batch, fresh)

    def _rate(self, batch: _Batch, fresh: Sequence[_Fresh]) -> None:
        """Rate in runs whose events are told apart by (customer, event id): a redriven
        dead letter may follow its first arrival in one batch."""
        start, seen = 0, set[tuple[str, str]]()
        for i, f in enumerate(fresh):
            key = (f.consumed.event.customer_id, f.consumed.event.event_id)
            if key in seen:
                self._rate_run(batch, fresh[start:i])
                start, seen = i, set[tuple[str, str]]()
            seen.add(key)
        self._rate_run(batch, fresh[start:])

    def _rate_run(self, batch: _Batch, fresh: Sequence[_Fresh]) -> None:
        if not fresh:
            return
        state, live, outcomes = batch.state, self.live, batch.outcomes
        events = [f.consumed.event for f in fresh]
        current = None
        if live is not None:
            state.catalogue = live.admit(state.catalogue, (e.customer_id for e in events))
            batch.catalogue_changed()
            current = live.current(state.catalogue)
        checked = metered(current, events)
        with batch.watch.stage("rate"):
            valid = [e for e in checked if isinstance(e, UsageEvent)]
            result = batch.engine.rate_batch(state.rating, valid)
        unmetered = [r for r in checked if isinstance(r, Rejection)]
        rated = {(line.customer_id, line.event_id): line for line in result.lines}
        rejected = {(r.customer_id, r.event_id): r for r in [*unmetered, *result.rejections]}
        for f in fresh:
            order_ms = f.consumed.origin.order_ms
            key = (f.consumed.event.customer_id, f.consumed.event.event_id)
            line = rated.get(key)
            self._evict(batch, order_ms)
            if line is None and live is not None and live.parks(rejected[key]):
                self._park(batch, f.consumed)
            elif line is None:
                outcomes.dead_letters.append(_usage_dead_letter(f.consumed, rejected[key]))
            else:
                _, end_us = batch.engine.period_bounds(line.customer_id, to_micros(line.timestamp))
                adjustment = f.late and end_us <= f.watermark_us
                outcomes.rated.append(
                    Rated(f.consumed, line, f.late, f.lateness_ms, adjustment, f.watermark_us)
                )
        outcomes.alerts.extend(result.alerts)

    def _grant(self, batch: _Batch, record: ConsumedGrant) -> None:
        """Apply a grant; one of a customer not in the catalogue meets what its usage
        would (parked, admitted at list price, or dead-lettered)."""
        grant, state, live = record.grant, batch.state, self.live
        if live is not None:
            self._evict(batch, record.origin.order_ms)
            state.catalogue = live.admit(state.catalogue, (grant.customer_id,))
            batch.catalogue_changed()
        rejection = batch.engine.apply_grant(state.rating, grant)
        if rejection is None:
            amount = batch.engine.grant_amount(grant)
            batch.outcomes.grants.append(GrantApplied(record, amount))
        elif live is not None and live.parks(rejection):
            self._park(batch, record)
        else:
            batch.outcomes.dead_letters.append(_grant_dead_letter(record, rejection))

    def _dedupe(self, batch: _Batch, records: Sequence[Consumed]) -> list[_Fresh]:
        """First arrivals go on to rating; re-sends are duplicates; ids beyond the horizon
        cannot be counted exactly once and are dead-lettered. A redriven dead letter is
        deduplicated on where it was first read, so it is rated at most once ever."""
        fresh = []
        window = batch.state.dedupe
        stamps = [to_micros(record.event.timestamp) for record in records]
        newest_us = window.max_event_us
        seen = window.check_batch(
            [
                (r.event.customer_id, r.dedupe_id, event_us, r.fingerprint)
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


def _usage_dead_letter(record: Consumed, rejection: Rejection) -> DeadLetter:
    return DeadLetter(record.origin, rejection, dump_line(to_record(record.event)).encode())


def _grant_dead_letter(record: ConsumedGrant, rejection: Rejection) -> DeadLetter:
    payload = json.dumps(asdict(record.grant), default=str).encode()
    return DeadLetter(record.origin, rejection, payload)


def _dead_letter(record: Consumed | ConsumedGrant, rejection: Rejection) -> DeadLetter:
    if isinstance(record, ConsumedGrant):
        return _grant_dead_letter(record, rejection)
    return _usage_dead_letter(record, rejection)
