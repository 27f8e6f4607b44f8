"""Event logs a replay reads, in log order: a Kafka topic (from offsets or a time, up to
the end offsets at start), an Avro event-log file, or the raw log in ClickHouse
(`raw_events`, the exact bytes the flow consumed).

Each record comes with the clock to judge its event time by: the raw log's
`received_at` (the very clock the flow validated against), or the Kafka record
timestamp. A file has no arrival times.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from clickhouse_connect.driver.client import Client
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from flows.settings import Settings
from schemas.event import Rejection, to_micros
from schemas.eventlog import read_event_log
from schemas.serde import Decoder, open_registry
from sinks.clickhouse import connect

Range = tuple[int, int, int]
"""(partition, first offset, end offset): the offsets [first, end) a replay read."""

BATCH = 5_000
"""Records read at a time."""
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
            messages = consumer.consume(BATCH, 1.0)
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
