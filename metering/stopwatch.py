"""Seconds spent per stage of the hot path, for the benchmark and the workers' metrics.

Timed a batch at a time, never an event at a time, so the watch costs nothing
measurable; the wiring takes the figures after each batch (`flows.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter


class Stopwatch:
    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = perf_counter()
        try:
            yield
        finally:
            self._spent[name] = self._spent.get(name, 0.0) + perf_counter() - started

    def take(self) -> dict[str, float]:
        """The seconds spent since the last take, by stage."""
        spent, self._spent = self._spent, {}
        return spent
