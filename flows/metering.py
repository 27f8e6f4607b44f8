"""What one shard of customers does with its events: dedupe, lateness, rating, outcome rows.

Pure: no Bytewax, no services. The dataflow keeps a `ShardState` per shard key
and calls `meter` with each batch; everything the call decides is a function of
the state and the batch, so a replay from a snapshot repeats it exactly,
(stream, position) of every row included.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from flows.catalogue import ConsumedCatalogue, LiveCatalogue, metered
from flows.decode import Consumed, ConsumedGrant, dead_letter_row
from metering.catalogue.catalogue import Catalogue
from metering.dedupe import BUCKET_US, DedupeWindow, Verdict
from metering.ordering import Sequencer
from metering.parking import Parking
from metering.rating.alerts import Alert
from metering.rating.credits import CreditExpiry
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatedLine
from metering.rating.state import RatingState
from schemas.event import Rejection, RejectReason, UsageEvent, from_micros, to_micros
from schemas.jsonform import dump_line, to_record
from sinks.batch import Row, SinkBatch
from sinks.tables import (
    ALERTS,
    CREDIT_EXPIRIES,
    CREDIT_GRANTS,
    DEAD_LETTERS,
    DUPLICATES,
    LATE_ADJUSTMENTS,
    PARKED_USAGE,
    RATED_USAGE,
)


@dataclass
class ShardState:
    """Everything a shard must resume with; pickled whole into Bytewax snapshots."""

    dedupe: DedupeWindow
    rating: RatingState = field(default_factory=RatingState)
    sequencer: Sequencer[Consumed | ConsumedGrant | ConsumedCatalogue] = field(
        default_factory=lambda: Sequencer(())
    )
    """Records read but not yet metered: they wait for every partition to pass them."""
    positions: Counter[str] = field(default_factory=Counter)
    forgotten_hour: int = -1
    """The hour of event time at which closed periods were last forgotten."""
    catalogue: Catalogue | None = None
    """The live catalogue as this shard has applied it; None while it is the seed."""
    parked: Parking[Consumed] = field(default_factory=Parking)
    """Usage of customers not in the catalogue yet (`metering.parking`)."""


@dataclass
class ShardReport:
    """What a batch did, for metrics and the run summary."""

    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    lateness_seconds: list[float] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    grants: int = 0
    parked: int = 0
    released: int = 0


@dataclass(frozen=True, slots=True)
class _Pending:
    consumed: Consumed
    late: bool
    lateness_ms: int
    watermark_us: int


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
        items: Sequence[Consumed | ConsumedGrant | ConsumedCatalogue],
        received_at: datetime,
    ) -> tuple[SinkBatch, ShardReport]:
        """Usage and grants in the shard's order: a grant applies to the usage after it.

        A grant lapses when the watermark (the newest event time less the allowed
        lateness) passes its expiry, at that event's place in the order, so usage dated
        before the expiry that arrives within the lateness still draws from it and where
        batches happen to end changes nothing."""
        out = SinkBatch(shard)
        report = ShardReport()
        usage: list[Consumed] = []
        if self.live is not None:
            self.engine = self.live.engine(shard, state.catalogue)
        for item in items:
            if isinstance(item, ConsumedCatalogue):
                self._usage(state, usage, out, report, received_at)
                usage = []
                self._catalogue(shard, state, item, out, report, received_at)
                continue
            if isinstance(item, ConsumedGrant):
                self._usage(state, usage, out, report, received_at)
                usage = []
                self._grant(state, item, out, report, received_at)
                continue
            watermark_us = to_micros(item.event.timestamp) - self.allowed_lateness_us
            if self.engine.lapse_due(state.rating, watermark_us):
                self._usage(state, usage, out, report, received_at)
                usage = []
                self._expire(state, out, report, watermark_us)
            usage.append(item)
        self._usage(state, usage, out, report, received_at)
        self._forget_closed_periods(state)
        return out, report

    def _catalogue(
        self,
        shard: str,
        state: ShardState,
        item: ConsumedCatalogue,
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        """Apply a catalogue record at its place in the order (`flows.catalogue`)."""
        if self.live is None:
            return
        state.catalogue, rejection = self.live.apply(shard, state.catalogue, item)
        self.engine = self.live.engine(shard, state.catalogue)
        if rejection is not None:
            source = (item.topic, item.partition, item.offset)
            payload = item.record.text.encode()
            row = dead_letter_row(
                out.stream,
                self._next(state, DEAD_LETTERS),
                *source,
                rejection,
                payload,
                item.kafka_timestamp_ms,
                received_at,
            )
            out.add(DEAD_LETTERS, row)
            report.dead_letters[str(rejection.reason)] += 1
        customer_id = item.record.customer_id
        if rejection is None and customer_id is not None:
            self._unpark(state, state.parked.release(customer_id), out, report, received_at)

    def _unpark(
        self,
        state: ShardState,
        items: list[Consumed],
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        """Rate parked usage now that its customer is known, judged late against the
        watermark of now, as if it arrived now (it was deduplicated when it did)."""
        if not items:
            return
        newest_us = state.dedupe.max_event_us
        watermark_us = newest_us - self.allowed_lateness_us
        pending = []
        for item in items:
            self._park(state, out, item, "released", received_at)
            event_us = to_micros(item.event.timestamp)
            late = event_us < watermark_us
            lateness_us = max(0, newest_us - event_us)
            if late:
                report.lateness_seconds.append(lateness_us / 1e6)
            pending.append(_Pending(item, late, lateness_us // 1000, watermark_us))
        report.released += len(items)
        self._rate(state, pending, out, report, received_at)

    def _unpark_expired(
        self,
        state: ShardState,
        order_ms: int,
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        assert self.live is not None
        unknown = self.live.unknown
        for item in self.live.over_bound(state.parked, order_ms):
            self._park(state, out, item, "expired", received_at)
            customer_id = item.event.customer_id
            rejection = Rejection(
                RejectReason.UNKNOWN_CUSTOMER,
                f"customer {customer_id!r} is not in the catalogue, and its usage was parked "
                f"past the bound ({unknown.max_events} events a shard, "
                f"{unknown.max_age_ms / 3_600_000:g} h); redrive it once the customer exists",
                item.event.event_id,
                customer_id,
            )
            self._dead_letter(state, out, report, item, rejection, received_at)

    def _park(
        self, state: ShardState, out: SinkBatch, item: Consumed, action: str, at: datetime
    ) -> None:
        event = item.event
        source = (item.topic, item.partition, item.offset)
        row = (event.event_id, event.customer_id, event.timestamp, item.kafka_timestamp_ms, at)
        position = self._next(state, PARKED_USAGE)
        out.add(PARKED_USAGE, (out.stream, position, *source, action, *row))

    def _expire(
        self, state: ShardState, out: SinkBatch, report: ShardReport, watermark_us: int
    ) -> None:
        expiries, alerts = self.engine.expire(state.rating, from_micros(watermark_us))
        for expiry in expiries:
            row = (out.stream, self._next(state, CREDIT_EXPIRIES), *_expiry(expiry))
            out.add(CREDIT_EXPIRIES, row)
        self._alerts(state, out, report, alerts)

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

    def _usage(
        self,
        state: ShardState,
        items: Sequence[Consumed],
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        if not items:
            return
        pending = self._dedupe(state, items, out, report, received_at)
        self._rate(state, pending, out, report, received_at)

    def _rate(
        self,
        state: ShardState,
        pending: Sequence[_Pending],
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        """Rate in runs whose events are told apart by (customer, event id): a redriven
        dead letter may follow its first arrival in one batch."""
        start, seen = 0, set[tuple[str, str]]()
        for i, p in enumerate(pending):
            key = (p.consumed.event.customer_id, p.consumed.event.event_id)
            if key in seen:
                self._rate_run(state, pending[start:i], out, report, received_at)
                start, seen = i, set[tuple[str, str]]()
            seen.add(key)
        self._rate_run(state, pending[start:], out, report, received_at)

    def _rate_run(
        self,
        state: ShardState,
        pending: Sequence[_Pending],
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        if not pending:
            return
        events = [p.consumed.event for p in pending]
        current = None
        if self.live is not None:
            state.catalogue = self.live.admit(state.catalogue, events)
            self.engine = self.live.engine(out.stream, state.catalogue)
            current = self.live.current(state.catalogue)
        checked = metered(current, events)
        events = [e for e in checked if isinstance(e, UsageEvent)]
        unmetered = [r for r in checked if isinstance(r, Rejection)]
        result = self.engine.rate_batch(state.rating, events)
        rated = {(line.customer_id, line.event_id): line for line in result.lines}
        rejected = {(r.customer_id, r.event_id): r for r in [*unmetered, *result.rejections]}
        rated_at = datetime.now(UTC)
        for p in pending:
            key = (p.consumed.event.customer_id, p.consumed.event.event_id)
            line = rated.get(key)
            live = self.live
            if live is not None and live.parking_due(state.parked, p.consumed.order_ms):
                self._unpark_expired(state, p.consumed.order_ms, out, report, received_at)
            if line is None and live is not None and live.parks(rejected[key]):
                self._park(state, out, p.consumed, "parked", received_at)
                state.parked.park(p.consumed.event.customer_id, p.consumed)
                report.parked += 1
                if live.parking_due(state.parked, p.consumed.order_ms):
                    self._unpark_expired(state, p.consumed.order_ms, out, report, received_at)
            elif line is None:
                self._dead_letter(state, out, report, p.consumed, rejected[key], received_at)
            else:
                self._rated(state, out, report, p, line, rated_at)
        self._alerts(state, out, report, result.alerts)

    def _alerts(
        self, state: ShardState, out: SinkBatch, report: ShardReport, alerts: list[Alert]
    ) -> None:
        for alert in alerts:
            out.add(ALERTS, (out.stream, self._next(state, ALERTS), *_alert_columns(alert)))
        report.alerts.extend(alerts)

    def _grant(
        self,
        state: ShardState,
        item: ConsumedGrant,
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> None:
        grant = item.grant
        rejection = self.engine.apply_grant(state.rating, grant)
        source = (item.topic, item.partition, item.offset)
        if rejection is not None:
            payload = json.dumps(asdict(grant), default=str).encode()
            out.add(
                DEAD_LETTERS,
                dead_letter_row(
                    out.stream,
                    self._next(state, DEAD_LETTERS),
                    *source,
                    rejection,
                    payload,
                    item.kafka_timestamp_ms,
                    received_at,
                ),
            )
            report.dead_letters[str(rejection.reason)] += 1
            return
        out.add(
            CREDIT_GRANTS,
            (
                out.stream,
                self._next(state, CREDIT_GRANTS),
                *source,
                grant.grant_id,
                grant.customer_id,
                grant.credits,
                self.engine.grant_amount(grant),
                grant.effective_at,
                grant.expires_at,
            ),
        )
        report.grants += 1

    def _dedupe(
        self,
        state: ShardState,
        items: Sequence[Consumed],
        out: SinkBatch,
        report: ShardReport,
        received_at: datetime,
    ) -> list[_Pending]:
        pending = []
        window = state.dedupe
        stamps = [to_micros(item.event.timestamp) for item in items]
        newest_us = window.max_event_us
        seen = window.check_batch(
            [
                (item.event.customer_id, item.dedupe_id, event_us, item.fingerprint)
                for item, event_us in zip(items, stamps, strict=True)
            ]
        )
        for item, event_us, found in zip(items, stamps, seen, strict=True):
            event = item.event
            watermark_us = newest_us - self.allowed_lateness_us
            if found.verdict is Verdict.DUPLICATE:
                conflicting = found.first_fingerprint != item.fingerprint
                out.add(
                    DUPLICATES,
                    (
                        out.stream,
                        self._next(state, DUPLICATES),
                        item.topic,
                        item.partition,
                        item.offset,
                        event.event_id,
                        event.customer_id,
                        event.timestamp,
                        from_micros(found.first_us),
                        item.fingerprint,
                        found.first_fingerprint,
                        conflicting,
                    ),
                )
                report.outcomes["conflicting_duplicate" if conflicting else "duplicate"] += 1
            elif found.verdict is Verdict.BEYOND_HORIZON:
                rejection = Rejection(
                    RejectReason.BEYOND_DEDUPE_HORIZON,
                    f"event time {event.timestamp.isoformat()} is more than the dedupe horizon "
                    f"behind this shard's newest event, {from_micros(newest_us)}: it "
                    "cannot be counted exactly once; backfill it through a replay",
                    event.event_id,
                    event.customer_id,
                )
                self._dead_letter(state, out, report, item, rejection, received_at)
            else:
                lateness_us = max(0, newest_us - event_us)
                late = event_us < watermark_us
                if late:
                    report.lateness_seconds.append(lateness_us / 1e6)
                pending.append(_Pending(item, late, lateness_us // 1000, watermark_us))
            if found.verdict is Verdict.FRESH:
                newest_us = max(newest_us, event_us)
        return pending

    def _rated(
        self,
        state: ShardState,
        out: SinkBatch,
        report: ShardReport,
        p: _Pending,
        line: RatedLine,
        rated_at: datetime,
    ) -> None:
        c = p.consumed
        adjustment = p.late and self._period_closed(line, p.watermark_us)
        source = (c.topic, c.partition, c.offset)
        event = (line.event_id, line.customer_id, line.timestamp, line.period_start)
        money = (line.amount, line.discount, line.credits_applied, line.billable_amount, line.cost)
        out.add(
            RATED_USAGE,
            (
                out.stream,
                self._next(state, RATED_USAGE),
                *source,
                *event,
                line.meter,
                line.model,
                line.provider,
                line.mode,
                line.project_id,
                line.feature,
                dict(line.quantities),
                line.unit_prices,
                line.amounts,
                list(line.tiers),
                *money,
                line.margin,
                line.currency,
                line.price_version,
                line.contract_version,
                line.cost_version,
                p.late,
                p.lateness_ms,
                adjustment,
                c.kafka_timestamp_ms,
                rated_at,
                c.redrive_of,
            ),
        )
        if adjustment:
            watermark = from_micros(p.watermark_us)
            out.add(
                LATE_ADJUSTMENTS,
                (
                    out.stream,
                    self._next(state, LATE_ADJUSTMENTS),
                    *source,
                    *event,
                    line.meter,
                    line.model,
                    *money,
                    line.currency,
                    p.lateness_ms,
                    watermark,
                ),
            )
        report.outcomes["adjustment" if adjustment else "late" if p.late else "rated"] += 1

    def _period_closed(self, line: RatedLine, watermark_us: int) -> bool:
        """Whether the line's billing period ended behind the watermark (asked of late lines)."""
        _, end_us = self.engine.period_bounds(line.customer_id, to_micros(line.timestamp))
        return end_us <= watermark_us

    def _dead_letter(
        self,
        state: ShardState,
        out: SinkBatch,
        report: ShardReport,
        item: Consumed,
        rejection: Rejection,
        received_at: datetime,
    ) -> None:
        payload = dump_line(to_record(item.event)).encode()
        out.add(
            DEAD_LETTERS,
            dead_letter_row(
                out.stream,
                self._next(state, DEAD_LETTERS),
                item.topic,
                item.partition,
                item.offset,
                rejection,
                payload,
                item.kafka_timestamp_ms,
                received_at,
            ),
        )
        report.outcomes["dead_letter"] += 1
        report.dead_letters[str(rejection.reason)] += 1

    @staticmethod
    def _next(state: ShardState, table: str) -> int:
        position = state.positions[table]
        state.positions[table] = position + 1
        return position


def _expiry(expiry: CreditExpiry) -> Row:
    return (expiry.grant_id, expiry.customer_id, expiry.expires_at, expiry.credits, expiry.amount)


def _alert_columns(alert: Alert) -> Row:
    return (
        alert.alert_id,
        alert.customer_id,
        str(alert.kind),
        alert.threshold,
        alert.value,
        alert.period_start,
        alert.at,
        alert.grant_id,
    )
