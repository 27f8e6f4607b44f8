"""Effective-dated versions shared by the price and cost books.

A version lists only what changes: it inherits every entry of the version before it and
replaces entries with the same key. Looking an entry up over time gives spans (from, to,
entry) where the entry is constant; a span ends only where that entry really changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

BEGINNING = -(2**62)
"""Microseconds standing for 'always' at the open ends of a span."""
END = 2**62


@dataclass(frozen=True, slots=True)
class Span(Generic[V]):
    start_us: int
    end_us: int
    value: V


class Versions(Generic[K, V]):
    """Cumulative snapshots of an entry table, one per version, oldest first."""

    def __init__(self, versions: Iterable[tuple[int, Mapping[K, V]]]):
        self._snapshots: list[tuple[int, dict[K, V]]] = []
        current: dict[K, V] = {}
        for start_us, entries in versions:
            current = {**current, **entries}
            self._snapshots.append((start_us, current))

    def spans(self, pick: Callable[[Mapping[K, V]], V | None]) -> list[Span[V]]:
        """Where `pick` finds an entry, merged across versions that left it unchanged."""
        out: list[Span[V]] = []
        ends = [start for start, _ in self._snapshots[1:]] + [END]
        for (start, snapshot), end in zip(self._snapshots, ends, strict=True):
            value = pick(snapshot)
            if value is None:
                continue
            if out and out[-1].value is value and out[-1].end_us == start:
                out[-1] = Span(out[-1].start_us, end, value)
            else:
                out.append(Span(start, end, value))
        return out


def find(spans: list[Span[V]], ts_us: int) -> V | None:
    """The value of the span covering `ts_us`; spans are few, so a scan is fastest (twice
    an event: the bounds are compared inline, not through a method call per span)."""
    for span in spans:
        if span.start_us <= ts_us < span.end_us:
            return span.value
    return None
