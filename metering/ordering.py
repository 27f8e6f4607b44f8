"""The order a shard meters in: its partitions merged by order key, however they arrive.

A shard is fed by every partition of the usage and grants topics. Rating is
order-dependent (dedupe's first arrival, tier crossings, credit draws, budgets,
positions of rows), so the shard must not meter in the order batches happen to
reach it: that order differs between a run and its recovery replay. Each record
carries a key that is a function of its partition's log alone (`order_ms`, see
`flows.kafka_source`) and each partition reports a bound below which none of its
later records can fall. The sequencer holds records until every partition's bound
has passed them, then releases them sorted by (order_ms, partition, offset): the
same total order in every run, crash or not. The cost is latency: a record waits
for the slowest partition's progress (an idle one reports every 0.1 s).

Pure: no Bytewax, no Kafka. Held records are part of the shard's snapshot; the
bounds are not, since every partition reports afresh after a resume.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

Source = tuple[str, int]
"""A topic and partition."""


class Position(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def order_ms(self) -> int: ...


class Ordered(Protocol):
    """A record that knows where it was read (`metering.records.Origin`)."""

    @property
    def origin(self) -> Position: ...


T = TypeVar("T", bound=Ordered)


def _as_is(records: list[Any]) -> Any:
    return records


class Sequencer(Generic[T]):
    def __init__(
        self,
        sources: Iterable[Source],
        pack: Callable[[list[T]], Any] = _as_is,
        unpack: Callable[[Any], list[T]] = _as_is,
    ):
        """`pack` and `unpack`: how a snapshot holds a partition's waiting records (module
        functions: a snapshot names them)."""
        self._pending: dict[Source, deque[T]] = {}
        self._bounds: dict[Source, int] = {}
        self._rank: dict[Source, int] = {}
        self._pack = pack
        self._unpack = unpack
        self.feed_from(sources)

    def feed_from(self, sources: Iterable[Source]) -> None:
        """The partitions that feed the shard; none is passed before it has reported."""
        self._rank = {source: rank for rank, source in enumerate(sorted(sources))}

    def offer(self, source: Source, items: Sequence[T], bound_ms: int) -> int:
        """Records of one partition in offset order, and that partition's new bound.

        Returns how many records came below the frontier: a partition's bound was wrong
        (a broker clock more than the grace behind this process's), so the one order
        no longer holds for them. They are metered next, and counted."""
        behind = 0
        if items:
            frontier = self.frontier()
            if items[0].origin.order_ms < frontier:
                behind = sum(1 for item in items if item.origin.order_ms < frontier)
            self._pending.setdefault(source, deque()).extend(items)
        self._bounds[source] = max(self._bounds.get(source, -1), bound_ms)
        return behind

    def frontier(self) -> int:
        """Every record with a smaller key has been offered."""
        return min((self._bounds.get(s, -1) for s in self._rank), default=-1)

    def release(self) -> list[T]:
        """The records below the frontier, in the one order every run agrees on."""
        frontier = self.frontier()
        runs: list[T] = []
        for queue in self._pending.values():
            while queue and queue[0].origin.order_ms < frontier:
                runs.append(queue.popleft())
        rank = self._rank

        def key(record: T) -> tuple[int, int, int]:
            o = record.origin
            return o.order_ms, rank[(o.topic, o.partition)], o.offset

        runs.sort(key=key)
        return runs

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

    def __getstate__(self) -> dict[str, Any]:
        return {
            "pending": {s: self._pack(list(q)) for s, q in self._pending.items() if q},
            "pack": self._pack,
            "unpack": self._unpack,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pack = state["pack"]
        self._unpack = state["unpack"]
        self._pending = {s: deque(self._unpack(q)) for s, q in state["pending"].items()}
        self._bounds = {}
        self._rank = {}
