"""Exactly-once counting: which event ids a shard has already seen, over an event-time horizon.

An id is remembered as a 128-bit BLAKE2b fingerprint of (customer, event id), so two
customers' producers may reuse an id, with a crc32 of its first arrival's content (to
tell a conflicting re-send) and the hour of its event time (to forget it): 24 bytes.
Two ids share a fingerprint with probability about n^2 / 2^129, 1.5e-21 for a billion
ids in one shard.

Ids seen since the last seal are a dict; `seal` (at a snapshot, once there are a few
thousand) freezes them into an immutable sorted run written once to files of its own
and mapped from them, so a snapshot holds the names of files and at most those few
thousand ids, and memory holds the pages lookups touch. Runs are merged
two by two as they grow (each id is rewritten about log2(window / epoch) times),
dropping the ids past the horizon, and a run wholly past it is dropped. A lookup is a
binary search in each run, for a whole batch at once.

An event older than the horizon can no longer be told apart from a re-send, so it is
not guessed at: the caller dead-letters it with its own reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BUCKET_US = 3_600_000_000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if os.name == "posix" else None
_KEY = np.dtype("S16")
_MERGE_RATIO = 2
"""Merge the two newest runs while the older is at most this many times the newer."""
_KEEP_SEALS = 30
"""Seals a retired run's file outlives it (a minute at the default epoch): recovery
resumes from one of the last epochs, whose snapshots may still name it."""


class Verdict(Enum):
    FRESH = "fresh"
    DUPLICATE = "duplicate"
    BEYOND_HORIZON = "beyond_horizon"


@dataclass(slots=True)
class Seen:
    """What a check found: the verdict and, for a duplicate, its first arrival."""

    verdict: Verdict
    first_us: int = 0
    """The first arrival's event time: exact within the epoch, its hour after a seal."""
    first_fingerprint: int = 0


def _give_back_freed_memory() -> None:
    """A merge frees arrays of hundreds of megabytes that glibc's allocator would keep;
    hand them back, so resident memory follows the ids held (a no-op without glibc)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def fingerprint(customer_id: str, event_id: str) -> bytes:
    return blake2b(f"{customer_id}\x00{event_id}".encode(), digest_size=16).digest()


class _Run:
    """An immutable sorted run of ids: three arrays in files of their own, mapped from
    disk, so the kernel keeps in memory only the pages lookups touch and can drop them."""

    def __init__(self, path: Path, last_hour: int):
        self.path = path
        self.last_hour = last_hour
        self.keys: NDArray[Any] = np.load(path.with_suffix(".keys.npy"), mmap_mode="r")
        self.prints: NDArray[Any] = np.load(path.with_suffix(".prints.npy"), mmap_mode="r")
        self.hours: NDArray[Any] = np.load(path.with_suffix(".hours.npy"), mmap_mode="r")

    @classmethod
    def write(
        cls, folder: Path, keys: NDArray[Any], prints: NDArray[Any], hours: NDArray[Any]
    ) -> _Run:
        order = np.argsort(keys, kind="stable")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / uuid.uuid4().hex
        for name, values in (("keys", keys), ("prints", prints), ("hours", hours)):
            with path.with_suffix(f".{name}.npy").open("wb") as out:
                np.save(out, values[order])
                out.flush()
                os.fsync(out.fileno())
        return cls(path, int(hours.max()) if len(hours) else -1)

    def files(self) -> list[Path]:
        return [self.path.with_suffix(f".{name}.npy") for name in ("keys", "prints", "hours")]

    def find(self, queries: NDArray[Any]) -> NDArray[Any]:
        """Index of each query in the run, or -1."""
        at = np.searchsorted(self.keys, queries)
        inside = np.minimum(at, len(self.keys) - 1)
        return np.where((at < len(self.keys)) & (self.keys[inside] == queries), inside, -1)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class DedupeWindow:
    """Dedupe state for one shard of customers; runs live in files under `folder`."""

    horizon_us: int
    folder: Path | None = None
    """Where sealed runs are written; None keeps everything in the epoch dict (replays)."""
    max_event_us: int = 0
    seal_ids: int = 4096
    """Ids since the last seal that make `seal` write a run."""
    fresh: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """Ids since the last seal -> (event time, content fingerprint)."""
    runs: list[_Run] = field(default_factory=list)
    retired: list[tuple[Path, int]] = field(default_factory=list)
    """Files of merged or expired runs, with the seals left before they are deleted: by
    then no snapshot that recovery may resume from names them."""

    def check(self, customer_id: str, event_id: str, event_us: int, content: int = 0) -> Verdict:
        return self.check_batch([(customer_id, event_id, event_us, content)])[0].verdict

    def check_batch(self, items: Sequence[tuple[str, str, int, int]]) -> list[Seen]:
        """Record each id if new, in order; advancing event time moves the horizon."""
        keys = [fingerprint(customer, event_id) for customer, event_id, _, _ in items]
        held = self._in_runs(keys)
        out = []
        for key, (_, _, event_us, content), old in zip(keys, items, held, strict=True):
            if event_us < self.max_event_us - self.horizon_us:
                out.append(Seen(Verdict.BEYOND_HORIZON))
            elif (first := self.fresh.get(key)) is not None:
                out.append(Seen(Verdict.DUPLICATE, *first))
            elif old is not None:
                out.append(old)
            else:
                self.fresh[key] = (event_us, content)
                self.max_event_us = max(self.max_event_us, event_us)
                out.append(Seen(Verdict.FRESH))
        return out

    def first_seen(self, customer_id: str, event_id: str) -> tuple[int, int] | None:
        """The first arrival's event time and content fingerprint."""
        key = fingerprint(customer_id, event_id)
        if (first := self.fresh.get(key)) is not None:
            return first
        found = self._in_runs([key])[0]
        return None if found is None else (found.first_us, found.first_fingerprint)

    def _in_runs(self, keys: list[bytes]) -> list[Seen | None]:
        found: list[Seen | None] = [None] * len(keys)
        if not self.runs or not keys:
            return found
        queries = np.array(keys, dtype=_KEY)
        for run in self.runs:
            hits = run.find(queries)
            for i in np.flatnonzero(hits >= 0):
                if found[i] is None:
                    at = hits[i]
                    first_us = int(run.hours[at]) * BUCKET_US
                    found[i] = Seen(Verdict.DUPLICATE, first_us, int(run.prints[at]))
        return found

    def seal(self) -> None:
        """Freeze the ids since the last seal into a run once there are `seal_ids` of them,
        merge runs as they grow, forget what is past the horizon. Called before every
        snapshot; without a folder it does nothing. Fewer ids stay in the dict, which the
        snapshot holds: a file, its fsync and a merge cost more than pickling them."""
        if self.folder is None:
            return
        for path, left in self.retired:
            if not left:
                for name in ("keys", "prints", "hours"):
                    path.with_suffix(f".{name}.npy").unlink(missing_ok=True)
        self.retired = [(path, left - 1) for path, left in self.retired if left]
        floor = (self.max_event_us - self.horizon_us) // BUCKET_US
        if self.fresh and len(self.fresh) >= self.seal_ids:
            keys = np.array(list(self.fresh), dtype=_KEY)
            values = np.array(list(self.fresh.values()), dtype=np.int64).reshape(-1, 2)
            hours = (values[:, 0] // BUCKET_US).astype(np.uint32)
            prints = values[:, 1].astype(np.uint32)
            self.runs.append(_Run.write(self.folder, keys, prints, hours))
            self.fresh = {}
        merged = False
        while len(self.runs) >= 2 and len(self.runs[-2]) <= _MERGE_RATIO * len(self.runs[-1]):
            self._merge(floor)
            merged = True
        if merged:
            _give_back_freed_memory()
        expired = [run for run in self.runs if run.last_hour < floor]
        self.retired += [(run.path, _KEEP_SEALS) for run in expired]
        self.runs = [run for run in self.runs if run.last_hour >= floor]

    def _merge(self, floor: int) -> None:
        newer, older = self.runs.pop(), self.runs.pop()
        keep = np.concatenate([older.hours, newer.hours]) >= floor
        merged = _Run.write(
            self.folder or Path("."),
            np.concatenate([older.keys, newer.keys])[keep],
            np.concatenate([older.prints, newer.prints])[keep],
            np.concatenate([older.hours, newer.hours])[keep],
        )
        self.runs.append(merged)
        self.retired += [(older.path, _KEEP_SEALS), (newer.path, _KEEP_SEALS)]

    def __len__(self) -> int:
        return len(self.fresh) + sum(len(run) for run in self.runs)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "horizon_us": self.horizon_us,
            "folder": self.folder,
            "max_event_us": self.max_event_us,
            "seal_ids": self.seal_ids,
            "fresh": self.fresh,
            "runs": [(run.path, run.last_hour) for run in self.runs],
            "retired": self.retired,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.horizon_us = state["horizon_us"]
        self.folder = state["folder"]
        self.max_event_us = state["max_event_us"]
        self.seal_ids = state["seal_ids"]
        self.fresh = state["fresh"]
        self.runs = [_Run(path, last_hour) for path, last_hour in state["runs"]]
        self.retired = state["retired"]
