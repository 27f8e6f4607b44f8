"""`meterflow replay`: re-rate an event log with chosen books into a named result set,
then show per customer what would change against the live rated data.

The log is read from a Kafka topic (from offsets or a time, up to the end offsets at
start), an Avro event-log file, or the raw log in ClickHouse (`raw_events`, the exact
bytes the flow consumed). Each record goes through what the live flow does to it: the
same decoder, contract validation and `ShardMeter` (dedupe, rating), so a replay with
the live books reproduces the live amounts. Where it differs from the flow, and why:

- Dedupe is exact over the whole log, first occurrence of (customer_id, event_id) in
  log order wins. The flow's horizon exists to bound memory while tailing forever; a
  bounded replay needs none, and is the backfill path for what the flow dead-lettered
  as beyond it.
- Time bounds are judged against the clock of the log, not the wall clock, which would
  make every old log ancient: the raw log's `received_at` (the very clock the flow
  validated against), or the Kafka record timestamp. A file has no arrival times, so its
  event times are not bounded.
- Credits: the grants the live flow applied (`credit_grants`) are applied before any
  usage, and usage draws on them in log order. Amount, discount and cost totals do not
  depend on order; billable does wherever a grant arrived after usage it was already
  effective for (the flow billed that usage in cash, a replay draws credits for it).

Idempotent by construction: `replayed_usage` is partitioned by replay name, and a run
first drops its name's partition (a synchronous metadata operation, unlike a DELETE
mutation), then inserts. `replays` holds the latest run per name, marked finished only
once all its rows are in, so an interrupted run shows as unfinished and is re-run.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TextIO

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from flows.settings import Settings
from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.records import Consumed, ConsumedGrant, Origin
from metering.shard import ShardMeter, ShardState
from reports.event_logs import BATCH, Entry, Source
from reports.replay_diff import ReplayDiff, diff
from schemas.event import EPOCH, Rejection, UsageEvent
from schemas.validation import TimeBounds, validate
from sinks.clickhouse import connect
from sinks.rows import shard_batch
from sinks.tables import RATED_USAGE, SCHEMAS, TABLES

_EMPTY = SCHEMAS[RATED_USAGE].empty_table()
_LIVE_ONLY = {
    "stream",
    "position",
    "late",
    "lateness_ms",
    "adjustment",
    "kafka_timestamp",
    "rated_at",
    "redrive_of",
}
_KEPT = [name for name in TABLES[RATED_USAGE] if name not in _LIVE_ONLY]
COLUMNS = ("replay", *_KEPT)
"""The columns of `replayed_usage`: rated_usage's event and money columns, by replay."""

_REPLAYS = (
    "name",
    "source",
    "prices",
    "contracts",
    "costs",
    "started_at",
    "finished_at",
    "events",
    "rated",
    "duplicates",
    "rejected",
    "topic",
    "ranges",
    "first_event",
    "last_event",
)
_SHARD = "replay"
_UNBOUNDED_US = 2**62
_UNBOUNDED = TimeBounds(max_future=timedelta.max, max_age=None)
_INSERT_ROWS = 50_000


@dataclass
class _Run:
    name: str
    source: Source
    books: tuple[Path, Path, Path]
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    events: int = 0
    rated: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_event: datetime | None = None
    last_event: datetime | None = None

    def saw(self, event: UsageEvent) -> None:
        ts = event.timestamp
        self.first_event = ts if self.first_event is None else min(self.first_event, ts)
        self.last_event = ts if self.last_event is None else max(self.last_event, ts)

    def row(self, finished_at: datetime | None) -> tuple[object, ...]:
        return (
            self.name,
            self.source.description,
            *(str(path) for path in self.books),
            self.started_at,
            finished_at,
            self.events,
            self.rated,
            self.duplicates,
            dict(self.rejected),
            self.source.topic,
            self.source.ranges or [],
            self.first_event,
            self.last_event,
        )


class Progress:
    """One line on `out` (None: silent), redrawn at most five times a second."""

    def __init__(self, label: str, total: int | None, out: TextIO | None):
        self._label, self._total, self._out = label, total, out
        self._count = 0
        self._started = self._drawn = time.monotonic()

    def advance(self, n: int) -> None:
        self._count += n
        if self._out is not None and time.monotonic() - self._drawn >= 0.2:
            self._draw(self._out)

    def close(self) -> None:
        if self._out is not None:
            self._draw(self._out)
            self._out.write("\n")

    def _draw(self, out: TextIO) -> None:
        self._drawn = now = time.monotonic()
        rate = self._count / max(now - self._started, 1e-9)
        share = f"/{self._total:,} ({self._count / self._total:.0%})" if self._total else ""
        out.write(f"\r{self._label}: {self._count:,}{share} records, {rate:,.0f}/s ")
        out.flush()


def replay(
    settings: Settings,
    name: str,
    source: Source,
    prices: Path | None = None,
    contracts: Path | None = None,
    costs: Path | None = None,
    progress: bool = True,
) -> ReplayDiff:
    """Re-rate `source` into the replay `name` (replacing a previous run of it) and diff it."""
    if not name:
        raise ValueError("a replay needs a name")
    books = (
        prices or settings.prices_file,
        contracts or settings.contracts_file,
        costs or settings.costs_file,
    )
    meter = ShardMeter(
        RatingEngine(load_books(*books)), settings.allowed_lateness // timedelta(microseconds=1)
    )
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    run = _Run(name, source, books)
    client.command("ALTER TABLE replayed_usage DROP PARTITION %(name)s", parameters={"name": name})
    client.insert("replays", [run.row(None)], column_names=_REPLAYS)
    state = ShardState(DedupeWindow(_UNBOUNDED_US))
    meter.meter(_SHARD, state, _live_grants(client))
    bounds = TimeBounds(settings.max_future, settings.max_age)
    shown = Progress(f"replay {name}", source.total, sys.stderr if progress else None)
    rows: list[pa.Table] = []
    for chunk in _chunks(source, BATCH):
        rows.append(_meter_chunk(meter, state, run, chunk, bounds))
        if sum(table.num_rows for table in rows) >= _INSERT_ROWS:
            client.insert_arrow("replayed_usage", pa.concat_tables(rows))
            rows = []
        shown.advance(len(chunk))
    if rows:
        client.insert_arrow("replayed_usage", pa.concat_tables(rows))
    shown.close()
    client.insert("replays", [run.row(datetime.now(UTC))], column_names=_REPLAYS)
    return diff(client, name)


def _meter_chunk(
    meter: ShardMeter, state: ShardState, run: _Run, chunk: Sequence[Entry], bounds: TimeBounds
) -> pa.Table:
    """The chunk's rated rows as replayed_usage rows; everything else counted by outcome."""
    items = []
    for entry in chunk:
        checked = _check(entry, bounds)
        if isinstance(checked, Rejection):
            run.rejected[str(checked.reason)] += 1
            continue
        run.saw(checked)
        origin = Origin(entry.topic, entry.partition, entry.offset, entry.timestamp_ms)
        items.append(Consumed(checked, origin))
    outcomes = meter.meter(_SHARD, state, items)
    run.events += len(chunk)
    run.duplicates += len(outcomes.duplicates)
    run.rejected.update(outcomes.reasons())
    run.rated += len(outcomes.rated)
    rated = shard_batch(_SHARD, state.positions, outcomes).tables.get(RATED_USAGE)
    kept = pa.Table.from_batches([rated]) if rated is not None else _EMPTY
    kept = kept.select(_KEPT)
    return kept.add_column(0, "replay", pa.array([run.name] * kept.num_rows, pa.string()))


def _check(entry: Entry, bounds: TimeBounds) -> UsageEvent | Rejection:
    if isinstance(entry.record, Rejection):
        return entry.record
    if entry.arrived is None:
        return validate(entry.record, EPOCH, _UNBOUNDED, typed=True)
    return validate(entry.record, entry.arrived, bounds, typed=True)


def _live_grants(client: Client) -> list[ConsumedGrant]:
    rows = client.query(
        "SELECT grant_id, customer_id, credits, effective_at, expires_at, topic, partition, "
        "offset FROM credit_grants FINAL ORDER BY topic, partition, offset",
        tz_mode="aware",
    ).named_results()
    return [
        ConsumedGrant(
            CreditGrant(
                r["grant_id"], r["customer_id"], r["credits"], r["effective_at"], r["expires_at"]
            ),
            Origin(r["topic"], r["partition"], r["offset"], 0),
        )
        for r in rows
    ]


def _chunks(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    iterator = iter(entries)
    while chunk := list(islice(iterator, size)):
        yield chunk
