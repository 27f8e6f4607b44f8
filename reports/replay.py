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
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

from clickhouse_connect.driver.client import Client
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from flows.decode import Consumed, ConsumedGrant
from flows.metering import ShardMeter, ShardState
from flows.settings import Settings
from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.rating.money import to_cents
from metering.rating.totals import Totals
from reports.text_table import format_table
from schemas.event import EPOCH, Rejection, UsageEvent, to_micros
from schemas.eventlog import read_event_log
from schemas.serde import Decoder, open_registry
from schemas.validation import TimeBounds, validate
from sinks.batch import Row
from sinks.clickhouse import connect
from sinks.tables import RATED_USAGE, TABLES

Range = tuple[int, int, int]
"""(partition, first offset, end offset): the offsets [first, end) a replay read."""

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
_KEPT = [i for i, name in enumerate(TABLES[RATED_USAGE]) if name not in _LIVE_ONLY]
_pick = itemgetter(*_KEPT)
COLUMNS = ("replay", *_pick(TABLES[RATED_USAGE]))
"""Column order of `replayed_usage`: rated_usage's event and money columns, by replay."""

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
_BATCH = 5_000
_INSERT_ROWS = 50_000
_PAGE = 20_000
_STALL_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Entry:
    """One record of a log: decoded (or why not), where it was read, and when it arrived."""

    record: dict[str, Any] | Rejection
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    arrived: datetime | None
    """The clock to judge its event time by; None where the log does not say."""


class Source(Protocol):
    """An event log in log order; `total` (if known) sizes the progress line, and
    `topic` with `ranges` (None for a file) is the live data the diff compares with."""

    description: str
    total: int | None
    topic: str
    ranges: list[Range] | None

    def __iter__(self) -> Iterator[Entry]: ...


class FileLog:
    """An Avro event-log file (`schemas.eventlog`), in file order."""

    topic = ""
    ranges: list[Range] | None = None

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.description = f"file {self.path}"
        self.total: int | None = None

    def __iter__(self) -> Iterator[Entry]:
        for index, record in enumerate(read_event_log(self.path)):
            yield Entry(record, self.path.name, 0, index, 0, None)


class KafkaLog:
    """A topic from an offset or a time (default: its beginning) up to its end offsets
    now, partition after partition, each in offset order."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decoder: Decoder,
        from_offset: int | None = None,
        from_time: datetime | None = None,
    ):
        self.topic = topic
        self._decoder = decoder
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": f"meterflow-replay-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
        self.ranges: list[Range] | None = self._plan(from_offset, from_time)
        self.total: int | None = sum(end - first for _, first, end in self.ranges)
        start = "its beginning" if from_offset is None else f"offset {from_offset}"
        if from_time is not None:
            start = from_time.isoformat()
        self.description = f"Kafka topic {topic} from {start} to its end offsets at start"

    def _plan(self, from_offset: int | None, from_time: datetime | None) -> list[Range]:
        consumer = Consumer(self._config)
        try:
            metadata = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            if metadata.error is not None:
                raise RuntimeError(f"cannot read topic {self.topic!r}: {metadata.error.str()}")
            partitions = sorted(metadata.partitions)
            marks = {
                p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
                for p in partitions
            }
            starts = {p: low for p, (low, _) in marks.items()}
            if from_time is not None:
                ms = to_micros(from_time) // 1000
                found = consumer.offsets_for_times(
                    [TopicPartition(self.topic, p, ms) for p in partitions], timeout=30
                )
                starts = {tp.partition: tp.offset for tp in found}
            elif from_offset is not None:
                starts = {p: max(low, from_offset) for p, low in starts.items()}
        finally:
            consumer.close()
        ranges = []
        for p, (_, end) in marks.items():
            first = end if starts[p] < 0 else min(starts[p], end)
            ranges.append((p, first, end))
        return ranges

    def __iter__(self) -> Iterator[Entry]:
        consumer = Consumer(self._config)
        try:
            for partition, first, end in self.ranges or []:
                if first < end:
                    yield from self._partition(consumer, partition, first, end)
        finally:
            consumer.close()

    def _partition(
        self, consumer: Consumer, partition: int, first: int, end: int
    ) -> Iterator[Entry]:
        consumer.assign([TopicPartition(self.topic, partition, first)])
        idle = 0
        while True:
            messages = consumer.consume(_BATCH, 1.0)
            idle = 0 if messages else idle + 1
            if idle == _STALL_SECONDS:
                raise RuntimeError(
                    f"no records from {self.topic}[{partition}] for {_STALL_SECONDS}s, "
                    f"before its end offset {end}"
                )
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise RuntimeError(f"reading {self.topic}[{partition}]: {error}")
                offset = cast(int, msg.offset())
                if offset >= end:
                    return
                kind, ms = msg.timestamp()
                arrived = (
                    None
                    if kind == TIMESTAMP_NOT_AVAILABLE
                    else datetime.fromtimestamp(ms / 1000, UTC)
                )
                decoded = self._decoder.decode(msg.value())
                yield Entry(decoded, self.topic, partition, offset, max(ms, 0), arrived)
                if offset == end - 1:
                    return


class RawLog:
    """The raw event log in ClickHouse: the exact bytes the flow consumed from `topic`,
    judged against the clock the flow received them by."""

    def __init__(self, client: Client, topic: str, decoder: Decoder):
        self.topic = topic
        self.description = f"raw log of {topic} in ClickHouse"
        self._client = client
        self._decoder = decoder
        rows = client.query(
            "SELECT partition, min(offset), max(offset) + 1, count() FROM raw_events FINAL "
            "WHERE topic = %(topic)s GROUP BY partition ORDER BY partition",
            parameters={"topic": topic},
        ).result_rows
        self.ranges: list[Range] | None = [(int(p), int(lo), int(hi)) for p, lo, hi, _ in rows]
        self.total: int | None = sum(int(row[3]) for row in rows)

    def __iter__(self) -> Iterator[Entry]:
        """Paged by offset, so inserting the replay's rows never waits on an open stream."""
        for partition, first, end in self.ranges or []:
            after = first
            while after < end:
                rows = self._client.query(
                    "SELECT offset, kafka_timestamp, received_at, value FROM raw_events FINAL "
                    "WHERE topic = %(topic)s AND partition = %(partition)s "
                    "AND offset >= %(after)s AND offset < %(end)s ORDER BY offset LIMIT %(page)s",
                    parameters={
                        "topic": self.topic,
                        "partition": partition,
                        "after": after,
                        "end": end,
                        "page": _PAGE,
                    },
                    column_formats={"value": "bytes"},
                    tz_mode="aware",
                ).result_rows
                if not rows:
                    break
                for offset, kafka_timestamp, received_at, value in rows:
                    yield Entry(
                        self._decoder.decode(value),
                        self.topic,
                        partition,
                        offset,
                        to_micros(kafka_timestamp) // 1000,
                        received_at,
                    )
                after = rows[-1][0] + 1


def open_source(
    settings: Settings,
    *,
    topic: str | None = None,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    file: Path | None = None,
    raw: bool = False,
) -> Source:
    """The one source the CLI names: a topic (from an offset or a time), a file, or the
    raw log of the usage topic."""
    if sum((topic is not None, file is not None, raw)) != 1:
        raise ValueError("give exactly one source: a topic, a file or the raw log")
    if topic is None and (from_offset is not None or from_time is not None):
        raise ValueError("an offset or a time to start from applies to a topic only")
    if from_time is not None and from_time.utcoffset() is None:
        raise ValueError(f"the time to start from needs a UTC offset: {from_time.isoformat()}")
    if file is not None:
        return FileLog(file)
    decoder = Decoder(open_registry(settings.registry_url), settings.registry_url)
    if topic is not None:
        return KafkaLog(settings.kafka_bootstrap, topic, decoder, from_offset, from_time)
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    return RawLog(client, settings.usage_topic, decoder)


@dataclass(frozen=True, slots=True)
class CustomerDiff:
    customer_id: str
    before: Totals
    """Live rated_usage, over the replay's scope."""
    after: Totals
    """The replay."""


@dataclass(frozen=True)
class ReplayDiff:
    name: str
    source: str
    events: int
    """Records read."""
    rated: int
    duplicates: int
    rejected: dict[str, int]
    customers: list[CustomerDiff]

    @property
    def total(self) -> CustomerDiff:
        before, after = Totals(), Totals()
        for c in self.customers:
            before, after = before + c.before, after + c.after
        return CustomerDiff("total", before, after)

    def lines(self) -> list[str]:
        """The diff as a table, money rounded to cents for display only."""
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        out = [
            f"replay {self.name}: {self.events} records from {self.source}",
            f"  {self.rated} rated, {self.duplicates} duplicates, "
            f"{sum(self.rejected.values())} rejected{f' ({rejected})' if rejected else ''}",
        ]
        head = ["customer", "events", "amount live", "replay", "change"]
        head += ["billable live", "replay", "change", "cost change"]
        out += format_table([head, *(_cells(c) for c in [*self.customers, self.total])])
        return out


def _cells(c: CustomerDiff) -> list[str]:
    b, a = c.before, c.after
    events = str(a.events) if a.events == b.events else f"{b.events}->{a.events}"
    money = [b.amount, a.amount, a.amount - b.amount, b.billable, a.billable]
    money += [a.billable - b.billable, a.cost - b.cost]
    return [c.customer_id, events, *(str(to_cents(m)) for m in money)]


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

    def row(self, finished_at: datetime | None) -> Row:
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
    meter.meter(_SHARD, state, _live_grants(client), run.started_at)
    bounds = TimeBounds(settings.max_future, settings.max_age)
    shown = Progress(f"replay {name}", source.total, sys.stderr if progress else None)
    rows: list[Row] = []
    for chunk in _chunks(source, _BATCH):
        rows += _meter_chunk(meter, state, run, chunk, bounds)
        if len(rows) >= _INSERT_ROWS:
            client.insert("replayed_usage", rows, column_names=COLUMNS)
            rows = []
        shown.advance(len(chunk))
    if rows:
        client.insert("replayed_usage", rows, column_names=COLUMNS)
    shown.close()
    client.insert("replays", [run.row(datetime.now(UTC))], column_names=_REPLAYS)
    return diff(client, name)


def _meter_chunk(
    meter: ShardMeter, state: ShardState, run: _Run, chunk: Sequence[Entry], bounds: TimeBounds
) -> list[Row]:
    """The chunk's rated rows as replayed_usage rows; everything else counted by outcome."""
    items = []
    for entry in chunk:
        checked = _check(entry, bounds)
        if isinstance(checked, Rejection):
            run.rejected[str(checked.reason)] += 1
            continue
        run.saw(checked)
        items.append(
            Consumed(checked, entry.topic, entry.partition, entry.offset, entry.timestamp_ms)
        )
    out, report = meter.meter(_SHARD, state, items, run.started_at)
    run.events += len(chunk)
    run.duplicates += report.outcomes["duplicate"]
    run.rejected.update(report.dead_letters)
    rated = [(run.name, *_pick(row)) for row in out.tables.get(RATED_USAGE, [])]
    run.rated += len(rated)
    return rated


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
    ).result_rows
    return [
        ConsumedGrant(CreditGrant(*grant), topic, partition, offset, 0)
        for *grant, topic, partition, offset in rows
    ]


def _chunks(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    iterator = iter(entries)
    while chunk := list(islice(iterator, size)):
        yield chunk


_SUMS = "count(), sum(amount), sum(discount), sum(credits_applied), sum(billable_amount), sum(cost)"
_IN_RANGES = (
    "topic = %(topic)s AND "
    "arrayExists(r -> r.1 = partition AND offset >= r.2 AND offset < r.3, %(ranges)s)"
)
_IN_SPAN = "toUnixTimestamp64Micro(timestamp) BETWEEN %(first)s AND %(last)s"


def diff(client: Client, name: str) -> ReplayDiff:
    """The finished replay `name` against live rated_usage over the same scope: the same
    topic offsets for a Kafka or raw-log replay, the same event-time span for a file."""
    found = client.query(
        "SELECT source, finished_at, events, rated, duplicates, rejected, topic, ranges, "
        "first_event, last_event FROM replays FINAL WHERE name = %(name)s",
        parameters={"name": name},
        tz_mode="aware",
    ).result_rows
    if not found:
        raise LookupError(f"no replay named {name!r}")
    source, finished, events, rated, duplicates, rejected, topic, ranges, first, last = found[0]
    if finished is None:
        raise RuntimeError(f"replay {name!r} did not finish; run it again")
    scope = {
        "topic": topic,
        "ranges": [tuple(r) for r in ranges],
        "first": None if first is None else to_micros(first),
        "last": None if last is None else to_micros(last),
    }
    before = _totals(client, "rated_usage", _IN_RANGES if topic else _IN_SPAN, scope)
    after = _totals(client, "replayed_usage", "replay = %(name)s", {"name": name})
    customers = [
        CustomerDiff(c, before.get(c, Totals()), after.get(c, Totals()))
        for c in sorted(before.keys() | after.keys())
    ]
    return ReplayDiff(name, source, events, rated, duplicates, dict(rejected), customers)


def _totals(
    client: Client, table: str, where: str, parameters: dict[str, Any]
) -> dict[str, Totals]:
    rows = client.query(
        f"SELECT customer_id, {_SUMS} FROM {table} WHERE {where} GROUP BY customer_id",
        parameters=parameters,
    ).result_rows
    return {row[0]: Totals(int(row[1]), *row[2:]) for row in rows}
