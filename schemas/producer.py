"""The producer SDK: an idempotent Kafka producer that sends Confluent-framed usage events.

Keyed by customer so one customer's events stay in one partition, in order.
Delivery failures are collected rather than raised from librdkafka's callback
thread-of-control, and `close` flushes, so a caller knows exactly what landed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.serde import Encoder

log = logging.getLogger(__name__)

OnDelivery = Callable[[KafkaError | None, Message], None]


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: list[str] = field(default_factory=list)


class UsageProducer:
    def __init__(self, bootstrap: str, topic: str, encoder: Encoder, **config: Any):
        self.topic = topic
        self.encoder = encoder
        self.report = DeliveryReport()
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "compression.type": "lz4",
                **config,
            }
        )

    def send(self, record: dict[str, Any], on_delivery: OnDelivery | None = None) -> None:
        """Encode and queue one event record (the Avro/JSON shape of the contract);
        `on_delivery` also hears this record's acknowledgement or failure."""
        self.send_raw(self.encoder.encode(record), record["customer_id"], on_delivery)

    def send_raw(
        self, value: bytes, key: str | None, on_delivery: OnDelivery | None = None
    ) -> None:
        """Queue bytes as they are: how tests and the load generator send malformed records."""
        callback = self._on_delivery if on_delivery is None else self._also(on_delivery)
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key.encode() if key else None, on_delivery=callback
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks: a long-lived sender calls it from a thread of its own."""
        self._producer.poll(timeout)

    def _also(self, on_delivery: OnDelivery) -> OnDelivery:
        def both(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            on_delivery(err, msg)

        return both

    def flush(self, timeout: float = 60.0) -> DeliveryReport:
        remaining = self._producer.flush(timeout)
        if remaining:
            self.report.failed.append(f"{remaining} messages still queued after {timeout}s")
        return self.report

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.report.delivered += 1
        else:
            self.report.failed.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def __enter__(self) -> UsageProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        report = self.flush()
        if report.failed:
            log.error("%d deliveries failed, first: %s", len(report.failed), report.failed[0])
