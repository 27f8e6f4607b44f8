"""Dead letters and alerts onto Kafka topics, every delivery checked.

Bytewax's `KafkaSink` flushes without reading delivery reports, so a broker outage
longer than the producer's message timeout drops its messages without a word. This
sink flushes every batch and raises when a message was not acknowledged: the flow
stops before the epoch closes, and its recovery sends the batch again, so a topic
gets every message at least once (consumers dedupe on the key: a dead letter's
source coordinates, an alert's customer and id).
"""

from __future__ import annotations

from datetime import timedelta

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

Message_ = tuple[bytes, bytes]
"""Key and value."""


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge a message: an outage, never a reason to go on."""


class CheckedTopicSink(DynamicSink[Message_]):
    def __init__(self, bootstrap: str, topic: str, timeout: timedelta = timedelta(seconds=30)):
        self._bootstrap = bootstrap
        self._topic = topic
        self._timeout = timeout

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TopicPartition:
        producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": int(self._timeout.total_seconds() * 1000),
            }
        )
        return _TopicPartition(producer, self._topic, self._timeout.total_seconds())


class _TopicPartition(StatelessSinkPartition[Message_]):
    def __init__(self, producer: Producer, topic: str, timeout_s: float):
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    def write_batch(self, items: list[Message_]) -> None:
        failures: list[str] = []

        def report(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for key, value in items:
            while True:
                try:
                    self._producer.produce(self._topic, value, key, on_delivery=report)
                    break
                except BufferError:
                    self._producer.poll(0.1)
        queued = self._producer.flush(self._timeout_s + 5)
        if failures or queued:
            first = failures[0] if failures else "no answer"
            raise DeliveryFailed(
                f"{len(failures) + queued} of {len(items)} messages to {self._topic} were not "
                f"acknowledged by Kafka ({first}); stopping so that recovery sends them again"
            )

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
