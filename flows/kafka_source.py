"""A Kafka source that emits one item per consumed batch, not one per message.

Bytewax spends several microseconds on every item it moves; carrying a whole
poll's worth of records in one item keeps that cost per batch. Each Kafka
partition is a Bytewax partition whose snapshot is the next offset to read, so
offsets resume together with the rest of the flow's state.

Every record also gets an order key, `order_ms`: the running maximum of the broker's
append times (LogAppendTime) in its partition, a function of the log alone. Every
batch says how far its partition has got (`bound_ms`, no later record can have a
smaller key), and an idle partition says so too, every `_HEARTBEAT`, once the broker
confirms there is nothing more to read. Shards merge their partitions by these keys
(`metering.ordering`), so the order a shard rates in never depends on how partitions
happen to interleave, in a run or in its recovery.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from flows import metrics
from metering.records import ConsumedBatch, Record

_IDLE_WAIT = timedelta(milliseconds=50)
_HEARTBEAT = 0.1
"""Seconds between progress reports of an idle partition."""
_ASKING = ThreadPoolExecutor(4, thread_name_prefix="kafka-watermarks")
"""Idle partitions' questions to the broker, off the workers' threads."""
FINAL_MS = 2**62
"""The bound of a partition that will be read no further in this run."""


class TopicMisconfigured(ValueError):
    """A topic the flow cannot read exactly once as it is configured."""


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """A partition's snapshot: where to read next and the order key reached."""

    offset: int
    order_ms: int


class _BatchPartition(StatefulSourcePartition[ConsumedBatch, PartitionPosition]):
    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        position: PartitionPosition | None,
        batch_size: int,
        tail: bool,
        until: float | None,
        grace_ms: int,
    ):
        offset = OFFSET_BEGINNING if position is None else position.offset
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._offset = 0 if position is None else position.offset
        self._order_ms = 0 if position is None else position.order_ms
        self._batch_size = batch_size
        self._tail = tail
        self._until = until
        self._grace_ms = grace_ms
        self._eof = False
        self._finished = False
        self._bound_ms = -1
        self._next_heartbeat = 0.0
        self._awake: datetime | None = None
        self._asking: Future[tuple[int, int]] | None = None
        self._partition_handle = TopicPartition(topic, partition)

    def next_batch(self) -> list[ConsumedBatch]:
        started = time.perf_counter()
        try:
            return self._next_batch()
        finally:
            metrics.record_stage("consume", time.perf_counter() - started)

    def _next_batch(self) -> list[ConsumedBatch]:
        if self._finished:
            raise StopIteration
        if self._eof:
            self._finished = True
            return [self._batch([], FINAL_MS)]
        messages = self._consumer.consume(self._batch_size, 0.0)
        records = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._eof = not self._tail or (self._until or math.inf) <= time.time()
                    continue
                raise RuntimeError(f"consuming {self._topic}[{self._partition}]: {error}")
            kind, stamp = msg.timestamp()
            if kind != TIMESTAMP_LOG_APPEND_TIME:
                raise RuntimeError(
                    f"{self._topic}[{self._partition}] offset {msg.offset()} has no broker "
                    "append time: set message.timestamp.type=LogAppendTime on the topic"
                )
            self._order_ms = max(self._order_ms, stamp)
            records.append(
                Record(cast(int, msg.offset()), msg.key(), msg.value(), stamp, self._order_ms)
            )
        if records:
            self._awake = None
            self._offset = records[-1].offset + 1
            _, high = self._consumer.get_watermark_offsets(self._partition_handle, cached=True)
            if high >= 0:
                metrics.record_lag(self._topic, self._partition, high - self._offset)
            return [self._batch(records, self._order_ms)]
        self._awake = datetime.now(UTC) + _IDLE_WAIT
        return self._heartbeat()

    def _heartbeat(self) -> list[ConsumedBatch]:
        """When the broker says the partition is read to its end, every later record
        is appended after the question was asked: its key is at least that moment."""
        if self._asking is None:
            if time.monotonic() >= self._next_heartbeat:
                self._next_heartbeat = time.monotonic() + _HEARTBEAT
                self._asking = _ASKING.submit(self._ask)
            return []
        if not self._asking.done():
            return []
        asked_ms, high = self._asking.result()
        self._asking = None
        if high > self._offset:
            return []
        return [self._batch([], max(self._order_ms, asked_ms - self._grace_ms))]

    def _ask(self) -> tuple[int, int]:
        """The broker's high watermark, and when it was asked: on a thread of its own,
        since the round trip would stop the worker; records read meanwhile are after
        the answer or below the watermark, so the bound holds either way."""
        asked_ms = int(time.time() * 1000)
        _, high = self._consumer.get_watermark_offsets(self._partition_handle, timeout=10)
        return asked_ms, high

    def _batch(self, records: list[Record], bound_ms: int) -> ConsumedBatch:
        self._bound_ms = max(self._bound_ms, bound_ms)
        return ConsumedBatch(self._topic, self._partition, records, time.time(), self._bound_ms)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> PartitionPosition:
        return PartitionPosition(self._offset, self._order_ms)

    def close(self) -> None:
        if self._asking is not None:
            self._asking.result()
        self._consumer.close()


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The topic's partitions; the topic must order by broker append time."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(topic, timeout=30).topics[topic]
    if metadata.error is not None:
        raise RuntimeError(f"cannot list partitions of {topic!r}: {metadata.error.str()}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    kind = config["message.timestamp.type"].value
    if kind != "LogAppendTime":
        raise TopicMisconfigured(
            f"topic {topic!r} has message.timestamp.type={kind}; meterflow orders partitions by "
            "broker append time: set it to LogAppendTime"
        )
    return sorted(metadata.partitions)


class KafkaBatchSource(FixedPartitionedSource[ConsumedBatch, PartitionPosition]):
    """All partitions of one topic.

    `tail=False` stops at the end of the topic (demo, tests); `until`, a Unix time,
    stops at the first end reached after it (benchmarks that produce while running).
    `grace` allows for the broker's clock running behind this process's.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        batch_size: int = 5000,
        tail: bool = True,
        until: float | None = None,
        grace: timedelta = timedelta(milliseconds=100),
    ):
        self._bootstrap = bootstrap
        self._topic = topic
        self._batch_size = batch_size
        self._tail = tail
        self._until = until
        self._grace_ms = grace // timedelta(milliseconds=1)

    def list_parts(self) -> list[str]:
        return [str(p) for p in partitions_of(self._bootstrap, self._topic)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: PartitionPosition | None
    ) -> _BatchPartition:
        config = {
            "bootstrap.servers": self._bootstrap,
            "group.id": f"meterflow-{step_id}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.min.messages": 200_000,
        }
        return _BatchPartition(
            config,
            self._topic,
            int(for_part),
            resume_state,
            self._batch_size,
            self._tail,
            self._until,
            self._grace_ms,
        )
