"""Reading a whole topic as it is now: every record up to the end offsets of the moment."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


@dataclass(frozen=True, slots=True)
class Read:
    timestamp_ms: int
    partition: int
    offset: int
    value: bytes | None


def read_to_end(bootstrap: str, topic: str) -> list[Read]:
    """In (append time, partition, offset) order: the flow's order for a topic's records."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "meterflow-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Read] = []
        left = {p for p, end in ends.items() if end > 0}
        while left:
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is not None:
                    raise RuntimeError(f"reading {topic}: {msg.error()}")
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                out.append(Read(msg.timestamp()[1], partition, offset, msg.value()))
                if offset + 1 >= ends[partition]:
                    left.discard(partition)
        return sorted(out, key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    finally:
        consumer.close()
