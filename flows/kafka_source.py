"""A Kafka source that emits one item per consumed batch, not one per message.

Bytewax spends several microseconds on every item it moves; carrying a whole
poll's worth of records in one item keeps that cost per batch. Each Kafka
partition is a Bytewax partition whose snapshot is the next offset to read, so
offsets resume together with the rest of the flow's state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from flows import metrics

_IDLE_WAIT = timedelta(milliseconds=50)


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ConsumedBatch:
    """Consecutive records of one partition, in offset order."""

    topic: str
    partition: int
    records: list[Record]
    received_at: float


class _BatchPartition(StatefulSourcePartition[ConsumedBatch, int]):
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        offset: int,
        batch_size: int,
        tail: bool,
        until: float | None,
    ):
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._tail = tail
        self._until = until
        self._eof = False
        self._awake: datetime | None = None
        self._partition_handle = TopicPartition(topic, partition)

    def next_batch(self) -> list[ConsumedBatch]:
        if self._eof:
            raise StopIteration
        messages = self._consumer.consume(self._batch_size, 0.0)
        records = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._eof = not self._tail or (self._until or math.inf) <= time.time()
                    continue
                raise RuntimeError(f"consuming {self._topic}[{self._partition}]: {error}")
            records.append(
                Record(cast(int, msg.offset()), msg.key(), msg.value(), msg.timestamp()[1])
            )
        if not records:
            self._awake = datetime.now(UTC) + _IDLE_WAIT
            return []
        self._awake = None
        self._offset = records[-1].offset + 1
        _, high = self._consumer.get_watermark_offsets(self._partition_handle, cached=True)
        if high >= 0:
            metrics.record_lag(self._topic, self._partition, high - self._offset)
        return [ConsumedBatch(self._topic, self._partition, records, time.time())]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class KafkaBatchSource(FixedPartitionedSource[ConsumedBatch, int]):
    """All partitions of one topic.

    `tail=False` stops at the end of the topic (demo, tests); `until`, a Unix time,
    stops at the first end reached after it (benchmarks that produce while running).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        batch_size: int = 5000,
        tail: bool = True,
        until: float | None = None,
    ):
        self._bootstrap = bootstrap
        self._topic = topic
        self._batch_size = batch_size
        self._tail = tail
        self._until = until

    def list_parts(self) -> list[str]:
        metadata = AdminClient({"bootstrap.servers": self._bootstrap}).list_topics(
            self._topic, timeout=30
        )
        topic = metadata.topics[self._topic]
        if topic.error is not None:
            raise RuntimeError(f"cannot list partitions of {self._topic!r}: {topic.error.str()}")
        return [str(p) for p in sorted(topic.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition:
        config = {
            "bootstrap.servers": self._bootstrap,
            "group.id": f"meterflow-{step_id}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.min.messages": 200_000,
        }
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _BatchPartition(
            config, self._topic, int(for_part), offset, self._batch_size, self._tail, self._until
        )
