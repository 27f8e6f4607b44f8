"""The exactly-once ClickHouse sink: a crash neither loses a row nor inserts one twice,
in a table or in any materialized view on it.

Every row carries its (stream, position), and the shards meter in one order every run
agrees on (`metering.ordering`), so a recovery replay makes every row after the snapshot
again, the same row at the same position. A flush is one insert per table. Before it,
the sink records what the insert holds, the range of positions of each stream, in
`sink_blocks`, and it inserts with a deduplication token made from that record. After
a crash the resumed sink reads the blocks recorded past its snapshot and, as the
replay brings their rows again, inserts each block once more with the same token:
ClickHouse skips a block it already has, in the table and, with
`deduplicate_blocks_in_dependent_materialized_views`, in each view on its own, so a
view that missed a block under a kill gets it then; a snapshot taken while a block
is being refilled holds the rows it has taken. Rows past the recorded blocks are new.
A snapshot does not wait for the inserts it started: it holds the rows of every flush
still in flight (as Arrow IPC), and a resume inserts them again first, under the same
tokens, so a crash before they landed loses nothing and one after changes nothing.
Tables remember the tokens of their last 10,000 blocks
(`non_replicated_deduplication_window`), far more than a snapshot interval makes; a flow
whose recovery store is lost while its database is kept would re-insert blocks older
than that, so a recovery store lives as long as its database.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import numpy as np
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.client import Client

from sinks.batch import SinkBatch

Floors = dict[str, dict[str, int]]
"""table -> stream -> highest position handed to the insert thread: in ClickHouse, views
included, or held by the snapshot until it is."""

OnFlush = Callable[[dict[str, pa.Table], float], None]
"""Told the rows of each table once they are queryable, and how long the insert took."""

Ranges = dict[str, tuple[int, int]]
"""stream -> first and last position of a block's rows of that stream."""

BLOCKS = "sink_blocks"
_INSERT = {
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "optimize_on_insert": 0,
}
"""`optimize_on_insert` off: the views' summing tables are read with `sum()` and
`-Merge` anyway, so folding each block's rows on insert only costs time (a rated row
with its views: 32-43 us with it, 25-26 without)."""


def token(table: str, ranges: Ranges) -> str:
    """The same block always gets the same token, whichever run inserts it."""
    text = "|".join(f"{s}:{lo}-{hi}" for s, (lo, hi) in sorted(ranges.items()))
    return f"{table}:{blake2b(text.encode(), digest_size=16).hexdigest()}"


@dataclass
class _Flush:
    """One insert job, run on the insert thread: a block per table, recorded in
    `sink_blocks` first unless it refills a block recorded before a crash."""

    blocks: dict[str, tuple[Ranges, list[pa.RecordBatch]]]
    record: bool

    def __getstate__(self) -> dict[str, object]:
        """Rows as Arrow IPC: a pickled slice of a batch would carry its whole buffers."""
        return {
            "blocks": {t: (r, _ipc(batches)) for t, (r, batches) in self.blocks.items()},
            "record": self.record,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.blocks = {
            table: (ranges, _batches(rows)) for table, (ranges, rows) in state["blocks"].items()
        }
        self.record = state["record"]


@dataclass
class _Block:
    """A recorded insert that a crash may have cut short, filled again by the replay."""

    table: str
    ranges: Ranges
    rows: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    filled: set[str] = field(default_factory=set)

    def take(self, stream: str, rows: pa.RecordBatch) -> pa.RecordBatch:
        """Keep this stream's rows of the block; return the rows after it."""
        _, last = self.ranges[stream]
        positions = _positions(rows)
        count = int(np.searchsorted(positions, last, side="right"))
        self.rows.setdefault(stream, []).append(rows.slice(0, count))
        if count < len(positions) or (count and positions[count - 1] == last):
            self.filled.add(stream)
        return rows.slice(count)

    def complete(self) -> bool:
        return self.filled == self.ranges.keys()

    def __getstate__(self) -> dict[str, object]:
        return {
            "table": self.table,
            "ranges": self.ranges,
            "rows": {stream: _ipc(batches) for stream, batches in self.rows.items()},
            "filled": self.filled,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.table, self.ranges, self.filled = state["table"], state["ranges"], state["filled"]
        self.rows = {stream: _batches(rows) for stream, rows in state["rows"].items()}


@dataclass(frozen=True)
class SinkState:
    """What a partition resumes with: the highest position of each stream it has handed
    to ClickHouse, the flushes not yet known to have landed, and the recorded blocks a
    replay was refilling: the rows they have taken come before the snapshot, so no
    replay from it brings them again."""

    floors: Floors
    in_flight: list[_Flush]
    refilling: list[_Block]


class _ClickHousePartition(StatefulSinkPartition[SinkBatch, SinkState]):
    def __init__(
        self,
        client: Client,
        owns: Callable[[str], bool],
        resume: SinkState,
        flush_rows: int,
        flush_seconds: float,
        on_flush: OnFlush,
    ):
        self._client = client
        self._floors = resume.floors
        self._redo = _recorded_blocks(client, self._floors, owns, resume.refilling)
        self._inserts = _Inserts(self._run)
        for flush in resume.in_flight:
            self._inserts.submit(flush)
        self._buffer: dict[str, list[pa.RecordBatch]] = {}
        self._ranges: dict[str, Ranges] = {}
        self._buffered = 0
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._on_flush = on_flush

    def write_batch(self, values: list[SinkBatch]) -> None:
        self._inserts.check()
        for batch in values:
            for table, rows in batch.tables.items():
                rest = self._refill(table, batch.stream, rows)
                if rest.num_rows:
                    self._hold(table, batch.stream, rest)
        if (
            self._buffered >= self._flush_rows
            or time.monotonic() - self._last_flush >= self._flush_seconds
        ):
            self.flush()

    def _refill(self, table: str, stream: str, rows: pa.RecordBatch) -> pa.RecordBatch:
        """Rows of blocks recorded before a crash go back into those blocks."""
        pending = self._redo.get((table, stream))
        while pending and rows.num_rows:
            block = pending[0]
            rows = block.take(stream, rows)
            if stream in block.filled:
                pending.pop(0)
            if block.complete():
                self._insert(block.table, block.ranges, block.rows)
        return rows

    def _hold(self, table: str, stream: str, rows: pa.RecordBatch) -> None:
        self._buffer.setdefault(table, []).append(rows)
        self._buffered += rows.num_rows
        positions = _positions(rows)
        ranges = self._ranges.setdefault(table, {})
        first = ranges[stream][0] if stream in ranges else int(positions[0])
        ranges[stream] = (first, int(positions[-1]))

    def flush(self) -> None:
        if not self._buffered:
            self._last_flush = time.monotonic()
            return
        blocks = {table: (self._ranges[table], batches) for table, batches in self._buffer.items()}
        self._submit(_Flush(blocks, record=True))
        self._buffer, self._ranges, self._buffered = {}, {}, 0
        self._last_flush = time.monotonic()

    def _insert(
        self, table: str, ranges: Ranges, by_stream: dict[str, list[pa.RecordBatch]]
    ) -> None:
        batches = [batch for stream in sorted(by_stream) for batch in by_stream[stream]]
        self._submit(_Flush({table: (ranges, batches)}, record=False))

    def _submit(self, flush: _Flush) -> None:
        """Hand a flush to the insert thread; its rows count as handed over from now on,
        since every snapshot from now on holds them until they have landed."""
        self._inserts.submit(flush)
        for table, (ranges, _) in flush.blocks.items():
            floors = self._floors.setdefault(table, {})
            for stream, (_, last) in ranges.items():
                floors[stream] = max(floors.get(stream, -1), last)

    def _run(self, flush: _Flush) -> None:
        """Record the blocks, then insert them: a crash between the two leaves a record
        of blocks that a resume inserts again, with the same tokens."""
        started = time.monotonic()
        if flush.record:
            record = [
                [table, token(table, ranges), *_columns(ranges)]
                for table, (ranges, _) in flush.blocks.items()
            ]
            self._client.insert(
                BLOCKS, record, column_names=["target", "token", "streams", "firsts", "lasts"]
            )
        inserted = {
            table: self._write(table, ranges, batches)
            for table, (ranges, batches) in flush.blocks.items()
        }
        self._on_flush(inserted, time.monotonic() - started)

    def _write(self, table: str, ranges: Ranges, batches: list[pa.RecordBatch]) -> pa.Table:
        """One block: the same rows in the same order under the same token, whichever run.
        One Arrow batch: ClickHouse names each batch of an insert by the token and its
        ordinal, so the same rows in batches cut elsewhere (a replay reads Kafka in
        batches of its own size) would be new blocks."""
        rows = pa.Table.from_batches(batches).combine_chunks()
        settings = {**_INSERT, "insert_deduplication_token": token(table, ranges)}
        self._client.insert_arrow(table, rows, settings=settings)
        return rows

    def snapshot(self) -> SinkState:
        """Flush first: a snapshot must never cover rows that exist only in memory. It
        does not wait for the inserts: it holds the flushes still in flight, and the
        blocks still being refilled with the rows they have taken. Such a block holds its
        unfilled streams' floors below it, so a resume finds it again."""
        self.flush()
        floors = {table: dict(streams) for table, streams in self._floors.items()}
        refilling: dict[int, _Block] = {}
        for (table, stream), pending in self._redo.items():
            if pending:
                first, _ = pending[0].ranges[stream]
                known = floors.setdefault(table, {})
                known[stream] = min(known.get(stream, -1), first - 1)
            refilling.update((id(block), block) for block in pending if block.rows)
        return SinkState(floors, self._inserts.in_flight(), list(refilling.values()))

    def close(self) -> None:
        self.flush()
        self._inserts.close()


class _Inserts:
    """Flushes run one at a time, in order, on a thread of their own: ClickHouse works
    outside the GIL while the worker meters the next batches. At most `_PENDING` flushes
    wait; an insert that failed fails the next call, which stops the flow."""

    _PENDING = 2

    def __init__(self, run: Callable[[_Flush], None]) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-insert")
        self._pending: deque[tuple[_Flush, Future[None]]] = deque()

    def submit(self, flush: _Flush) -> None:
        self.check()
        while len(self._pending) >= self._PENDING:
            self._pending.popleft()[1].result()
        self._pending.append((flush, self._pool.submit(self._run, flush)))

    def check(self) -> None:
        while self._pending and self._pending[0][1].done():
            self._pending.popleft()[1].result()

    def in_flight(self) -> list[_Flush]:
        """The flushes not yet landed, in order (one that lands meanwhile is harmless:
        inserting it again is skipped by its token)."""
        self.check()
        return [flush for flush, _ in self._pending]

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft()[1].result()

    def close(self) -> None:
        self.wait()
        self._pool.shutdown()


def _ipc(batches: list[pa.RecordBatch]) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def _batches(ipc: pa.Buffer) -> list[pa.RecordBatch]:
    batches: list[pa.RecordBatch] = pa.ipc.open_stream(ipc).read_all().to_batches()
    return batches


def _positions(rows: pa.RecordBatch) -> np.ndarray[tuple[int], np.dtype[np.uint64]]:
    positions: np.ndarray[tuple[int], np.dtype[np.uint64]] = rows.column("position").to_numpy()
    return positions


def _columns(ranges: Ranges) -> tuple[list[str], list[int], list[int]]:
    streams = sorted(ranges)
    return streams, [ranges[s][0] for s in streams], [ranges[s][1] for s in streams]


def _part_of(stream: str, partitions: int) -> int:
    return zlib.crc32(stream.encode()) % partitions


def _recorded_blocks(
    client: Client, floors: Floors, owns: Callable[[str], bool], refilling: list[_Block]
) -> dict[tuple[str, str], list[_Block]]:
    """This partition's blocks recorded past its snapshot's floors, each listed under its
    streams in position order, a block the snapshot was refilling with the rows it had
    taken; rows are deterministic, so their order is the order of their ranges. A block
    is one partition's, so its first stream tells whose."""
    held = {token(block.table, block.ranges): block for block in refilling}
    result = client.query(
        f"""
        SELECT target, streams, firsts, lasts FROM {BLOCKS} FINAL
        WHERE arrayExists(
            (s, l) -> toInt64(l) > transform(
                concat(target, '/', s), %(keys)s, %(floors)s, toInt64(-1)), streams, lasts)
        """,
        parameters={
            "keys": [f"{t}/{s}" for t, f in floors.items() for s in f] or [""],
            "floors": [p for f in floors.values() for p in f.values()] or [-1],
        },
    )
    redo: dict[tuple[str, str], list[_Block]] = {}
    for table, streams, firsts, lasts in result.result_rows:
        if not owns(streams[0]):
            continue
        ranges = {s: (lo, hi) for s, lo, hi in zip(streams, firsts, lasts, strict=True)}
        block = held.get(token(table, ranges)) or _Block(table, ranges)
        for stream in streams:
            if stream not in block.filled:
                redo.setdefault((table, stream), []).append(block)
    for (_, stream), pending in redo.items():
        pending.sort(key=lambda b, s=stream: b.ranges[s][0])  # type: ignore[misc]
    return redo


class ClickHouseSink(FixedPartitionedSink[SinkBatch, SinkState]):
    """`partitions` sink partitions, each a stream's only writer: Bytewax spreads them
    over the workers, so against a ClickHouse server inserts spread with the workers.
    With chDB only one process may open the data path: one partition. The number is
    part of the recovery store's state, fixed for its life."""

    def __init__(
        self,
        connect: Callable[[], Client],
        flush_rows: int,
        flush_seconds: float,
        on_flush: OnFlush = lambda rows, seconds: None,
        partitions: int = 1,
    ):
        self._connect = connect
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._on_flush = on_flush
        self._partitions = partitions

    def list_parts(self) -> list[str]:
        if self._partitions == 1:
            return ["clickhouse"]
        return [f"clickhouse-{i}-of-{self._partitions}" for i in range(self._partitions)]

    def part_fn(self, item_key: str) -> int:
        return _part_of(item_key, self._partitions)

    def build_part(
        self, step_id: str, for_part: str, resume_state: SinkState | None
    ) -> _ClickHousePartition:
        index = self.list_parts().index(for_part)
        return _ClickHousePartition(
            self._connect(),
            lambda stream: _part_of(stream, self._partitions) == index,
            resume_state or SinkState({}, [], []),
            self._flush_rows,
            self._flush_seconds,
            self._on_flush,
        )
