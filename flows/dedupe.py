"""Exactly-once counting: which event ids a shard has already seen, over an event-time horizon.

Ids are remembered per customer (two customers' producers may reuse an id) in
hourly buckets of event time, so forgetting old ids is dropping whole buckets.
An event older than the horizon can no longer be told apart from a re-send, so
it is not guessed at: the caller dead-letters it with its own reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

BUCKET_US = 3_600_000_000


class Verdict(Enum):
    FRESH = "fresh"
    DUPLICATE = "duplicate"
    BEYOND_HORIZON = "beyond_horizon"


@dataclass
class DedupeWindow:
    """Picklable dedupe state for one shard of customers."""

    horizon_us: int
    max_event_us: int = 0
    seen: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    """customer -> event id -> (event time, content fingerprint) of the first arrival."""
    buckets: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    def check(
        self, customer_id: str, event_id: str, event_us: int, fingerprint: int = 0
    ) -> Verdict:
        """Record the id if new; advancing event time forgets buckets past the horizon."""
        if event_us < self.max_event_us - self.horizon_us:
            return Verdict.BEYOND_HORIZON
        ids = self.seen.setdefault(customer_id, {})
        if event_id in ids:
            return Verdict.DUPLICATE
        ids[event_id] = (event_us, fingerprint)
        self.buckets.setdefault(event_us // BUCKET_US, []).append((customer_id, event_id))
        if event_us > self.max_event_us:
            self._advance(event_us)
        return Verdict.FRESH

    def first_seen(self, customer_id: str, event_id: str) -> tuple[int, int] | None:
        """The first arrival's event time and content fingerprint."""
        return self.seen.get(customer_id, {}).get(event_id)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.seen.values())

    def _advance(self, event_us: int) -> None:
        previous_floor = (self.max_event_us - self.horizon_us) // BUCKET_US
        self.max_event_us = event_us
        floor = (event_us - self.horizon_us) // BUCKET_US
        if floor <= previous_floor:
            return
        for bucket in [b for b in self.buckets if b < floor]:
            for customer_id, event_id in self.buckets.pop(bucket):
                ids = self.seen[customer_id]
                del ids[event_id]
                if not ids:
                    del self.seen[customer_id]
