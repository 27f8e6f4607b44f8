"""Dead-letter and alert topics: every message acknowledged, or the flow stops."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from sinks.topic import CheckedTopicSink, DeliveryFailed


def test_a_broker_that_never_answers_stops_the_sink_instead_of_dropping_messages() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{closed.getsockname()[1]}"
    sink = CheckedTopicSink(bootstrap, "dead-letters", timeout=timedelta(seconds=1))
    part = sink.build("dead_letter_topic", 0, 1)
    with pytest.raises(DeliveryFailed, match="2 of 2 messages to dead-letters were not"):
        part.write_batch([(b"usage/0/1", b"{}"), (b"usage/0/2", b"{}")])


@pytest.mark.stack
def test_every_message_reaches_the_topic(
    kafka_bootstrap: str, topic_factory: Callable[[int], str]
) -> None:
    topic = topic_factory(1)
    part = CheckedTopicSink(kafka_bootstrap, topic).build("alerts_topic", 0, 1)
    part.write_batch([(f"k{i}".encode(), f"v{i}".encode()) for i in range(50)])
    part.close()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "topic-sink-test"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < 50 and time.monotonic() < deadline:
        got += [m.value() or b"" for m in consumer.consume(50, 1.0) if m.error() is None]
    consumer.close()
    assert got == [f"v{i}".encode() for i in range(50)]
