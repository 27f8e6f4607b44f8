"""The idempotent ClickHouse sink: recovery replays can never insert a row twice.

Bytewax resumes from the last snapshot and re-emits everything after it. Every
row carries its (stream, position), and positions grow within a stream across
epochs, so the rows a replay can repeat are exactly those written past the
positions recorded in the sink's snapshot: rows at or below those positions
were flushed before the snapshot, and for the rest the sink asks ClickHouse at
start which positions exist (as contiguous ranges) and drops those rows when
they come again. Inserts into the tables, and so the materialized
views that feed on them, see each row once; totals are exact without FINAL.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.client import Client

from sinks.batch import Row, SinkBatch
from sinks.tables import TABLES

Floors = dict[str, dict[str, int]]
"""table -> stream -> highest position flushed as of the snapshot."""

OnFlush = Callable[[dict[str, list[Row]], float], None]
"""Told the rows of each table once they are queryable, and how long the insert took."""


class WrittenRanges:
    """Positions already in ClickHouse past the snapshot, per table and stream."""

    def __init__(self, ranges: dict[tuple[str, str], list[tuple[int, int]]]):
        self._starts = {k: [lo for lo, _ in sorted(v)] for k, v in ranges.items()}
        self._ends = {k: [hi for _, hi in sorted(v)] for k, v in ranges.items()}

    def has(self, table: str, stream: str) -> bool:
        return (table, stream) in self._starts

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        table, stream, position = key
        starts = self._starts.get((table, stream))
        if not starts:
            return False
        i = bisect_right(starts, position) - 1
        return i >= 0 and position <= self._ends[(table, stream)][i]

    @classmethod
    def query(cls, client: Client, floors: Floors) -> WrittenRanges:
        ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for table in TABLES:
            known = floors.get(table, {})
            result = client.query(
                f"""
                SELECT stream, min(position), max(position)
                FROM (
                    SELECT stream, position,
                        position - row_number() OVER (PARTITION BY stream ORDER BY position) AS run
                    FROM {table}
                    WHERE toInt64(position) > transform(stream, %(streams)s, %(floors)s, -1)
                )
                GROUP BY stream, run
                """,
                parameters={"streams": list(known), "floors": list(known.values())},
            )
            for stream, lo, hi in result.result_rows:
                ranges.setdefault((table, stream), []).append((lo, hi))
        return cls(ranges)


class _ClickHousePartition(StatefulSinkPartition[SinkBatch, Floors]):
    def __init__(
        self,
        client: Client,
        floors: Floors,
        flush_rows: int,
        flush_seconds: float,
        on_flush: OnFlush,
    ):
        self._client = client
        self._floors = floors
        self._resumed_at = {table: dict(streams) for table, streams in floors.items()}
        self._written = WrittenRanges.query(client, floors)
        self._buffer: dict[str, list[Row]] = {}
        self._unflushed: Floors = {}
        """Highest buffered position per table and stream, for the floors once flushed."""
        self._buffered = 0
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._on_flush = on_flush

    def write_batch(self, values: list[SinkBatch]) -> None:
        for batch in values:
            for table, rows in batch.tables.items():
                fresh = self._fresh(table, batch.stream, rows)
                if fresh:
                    self._buffer.setdefault(table, []).extend(fresh)
                    self._buffered += len(fresh)
                    top = self._unflushed.setdefault(table, {})
                    top[batch.stream] = max(top.get(batch.stream, -1), max(r[1] for r in fresh))
        if (
            self._buffered >= self._flush_rows
            or time.monotonic() - self._last_flush >= self._flush_seconds
        ):
            self.flush()

    def _fresh(self, table: str, stream: str, rows: list[Row]) -> list[Row]:
        """The rows not yet in ClickHouse; all of them unless this stream was resumed."""
        floor = self._resumed_at.get(table, {}).get(stream, -1)
        if floor < 0 and not self._written.has(table, stream):
            return rows
        return [r for r in rows if r[1] > floor and (table, stream, r[1]) not in self._written]

    def flush(self) -> None:
        started = time.monotonic()
        for table, rows in self._buffer.items():
            self._client.insert(table, rows, column_names=TABLES[table])
        for table, streams in self._unflushed.items():
            floors = self._floors.setdefault(table, {})
            for stream, top in streams.items():
                floors[stream] = max(floors.get(stream, -1), top)
        if self._buffered:
            self._on_flush(self._buffer, time.monotonic() - started)
        self._buffer = {}
        self._unflushed = {}
        self._buffered = 0
        self._last_flush = time.monotonic()

    def snapshot(self) -> Floors:
        """Flush first: a snapshot must never cover rows that exist only in memory."""
        self.flush()
        return {table: dict(streams) for table, streams in self._floors.items()}

    def close(self) -> None:
        self.flush()


class ClickHouseSink(FixedPartitionedSink[SinkBatch, Floors]):
    """One sink partition: with chDB only one process may open the data path."""

    def __init__(
        self,
        connect: Callable[[], Client],
        flush_rows: int,
        flush_seconds: float,
        on_flush: OnFlush = lambda rows, seconds: None,
    ):
        self._connect = connect
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._on_flush = on_flush

    def list_parts(self) -> list[str]:
        return ["clickhouse"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: Floors | None
    ) -> _ClickHousePartition:
        return _ClickHousePartition(
            self._connect(),
            resume_state or {},
            self._flush_rows,
            self._flush_seconds,
            self._on_flush,
        )
