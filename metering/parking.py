"""Usage and credit grants of customers not (yet) in the catalogue, held until they
appear, within a bound.

A shard parks such an event or grant at its place in the shard's order and releases all
of a customer's parked records, in the order they were parked, when the customer's
record is applied. The bound is in count and in age, age measured on the order key (the broker's
append time), so which events pass it is a function of the log alone: the oldest go
first, to be dead-lettered by the caller.

Pure: no Bytewax, no services; part of the shard's snapshot.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar


class Positioned(Protocol):
    @property
    def order_ms(self) -> int: ...


class Parkable(Protocol):
    """A record that knows where it was read (`metering.records.Origin`)."""

    @property
    def origin(self) -> Positioned: ...


T = TypeVar("T", bound=Parkable)


class Parking(Generic[T]):
    def __init__(self) -> None:
        self._by_customer: dict[str, deque[T]] = {}
        self._queue: deque[str] = deque()
        """The customer of every parked event, oldest first."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def park(self, customer_id: str, item: T) -> None:
        self._by_customer.setdefault(customer_id, deque()).append(item)
        self._queue.append(customer_id)
        self._count += 1

    def release(self, customer_id: str) -> list[T]:
        """Every parked event of the customer, oldest first; none are parked after."""
        items = self._by_customer.pop(customer_id, deque())
        self._count -= len(items)
        return list(items)

    def due(self, now_ms: int, max_age_ms: int, max_count: int) -> bool:
        """Whether `over_bound` would remove anything."""
        if self._count > max_count:
            return True
        oldest = self._oldest()
        return oldest is not None and oldest.origin.order_ms < now_ms - max_age_ms

    def _oldest(self) -> T | None:
        while self._queue:
            items = self._by_customer.get(self._queue[0])
            if items:
                return items[0]
            self._queue.popleft()
        return None

    def over_bound(self, now_ms: int, max_age_ms: int, max_count: int) -> list[T]:
        """The oldest events while more than `max_count` are parked or any was parked
        before `now_ms - max_age_ms`, removed."""
        out: list[T] = []
        while (oldest := self._oldest()) is not None:
            if self._count <= max_count and oldest.origin.order_ms >= now_ms - max_age_ms:
                break
            customer_id = self._queue.popleft()
            items = self._by_customer[customer_id]
            out.append(items.popleft())
            self._count -= 1
            if not items:
                del self._by_customer[customer_id]
        return out
