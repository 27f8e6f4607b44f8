"""What a shard decides for each record: typed outcomes, not table rows.

Each kind is kept in the shard's order; `sinks.rows` turns them into the columns of
their tables and `flows.metrics` counts them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from metering.rating.alerts import Alert
from metering.rating.credits import CreditExpiry
from metering.rating.lines import RatedLine
from metering.records import Consumed, ConsumedGrant, Origin
from schemas.event import Rejection


@dataclass(slots=True)
class Rated:
    consumed: Consumed
    line: RatedLine
    late: bool
    """Behind the watermark (the shard's newest event time less the allowed lateness)."""
    lateness_ms: int
    adjustment: bool
    """Late into a period that had already closed: it also leaves a late adjustment."""
    watermark_us: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    consumed: Consumed
    first_us: int
    """Event time of the first arrival, which was counted."""
    first_fingerprint: int

    @property
    def conflicting(self) -> bool:
        """A re-send whose body differs from the first: a producer bug worth seeing."""
        return self.first_fingerprint != self.consumed.fingerprint


@dataclass(frozen=True, slots=True)
class DeadLetter:
    origin: Origin
    rejection: Rejection
    payload: bytes


@dataclass(frozen=True, slots=True)
class GrantApplied:
    consumed: ConsumedGrant
    amount: Decimal
    """The grant's credits in currency."""


@dataclass(frozen=True, slots=True)
class Parked:
    """Usage or a credit grant of a customer not in the catalogue: held (`parked`),
    rated or applied once the customer appeared (`released`), or dead-lettered past the
    bound (`expired`)."""

    consumed: Consumed | ConsumedGrant
    action: str

    @property
    def event_id(self) -> str:
        """The event's id, or the grant's."""
        held = self.consumed
        return held.event.event_id if isinstance(held, Consumed) else held.grant.grant_id

    @property
    def customer_id(self) -> str:
        return parked_customer(self.consumed)

    @property
    def timestamp(self) -> datetime:
        """The event's time, or when the grant takes effect."""
        held = self.consumed
        return held.event.timestamp if isinstance(held, Consumed) else held.grant.effective_at


def parked_customer(held: Consumed | ConsumedGrant) -> str:
    return held.event.customer_id if isinstance(held, Consumed) else held.grant.customer_id


@dataclass
class Outcomes:
    """A batch's outcomes by kind; together they account for every record metered."""

    rated: list[Rated] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    grants: list[GrantApplied] = field(default_factory=list)
    expiries: list[CreditExpiry] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        """Records by outcome, as `meterflow_events_total` labels them."""
        counts: Counter[str] = Counter()
        for rated in self.rated:
            counts["adjustment" if rated.adjustment else "late" if rated.late else "rated"] += 1
        for duplicate in self.duplicates:
            counts["conflicting_duplicate" if duplicate.conflicting else "duplicate"] += 1
        if self.dead_letters:
            counts["dead_letter"] += len(self.dead_letters)
        return counts

    def reasons(self) -> Counter[str]:
        return Counter(str(letter.rejection.reason) for letter in self.dead_letters)
