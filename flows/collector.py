"""The cyclic garbage collector, tuned for a long-running flow.

What the hot path makes per event is freed by reference counting (it makes no
cycles); what the collector walks is the state that lives on (rating, dedupe, records
waiting in a shard's order), and with CPython's default thresholds it walks all of it
again and again: 21 us an event in a 30,000-event run, more as the state grows.
Objects alive at start-up are frozen out of its reach; a young collection waits for
200,000 new objects rather than 700, and each older generation for 50 and 1,000
collections of the one below rather than 10.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 200_000
OLDER = 50
OLDEST = 1_000


def tune() -> None:
    gc.freeze()
    gc.set_threshold(YOUNG, OLDER, OLDEST)


@contextmanager
def tuned() -> Iterator[None]:
    """The flow's policy for a while (benchmarks measuring what the flow does), then the
    process's own again."""
    before = gc.get_threshold()
    tune()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
