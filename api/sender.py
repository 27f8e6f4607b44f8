"""Produce a batch of events and learn, per event, whether Kafka acknowledged it.

One idempotent `UsageProducer` serves every request; a thread of its own serves its
delivery callbacks, and a request waits for its own events only, at most the produce
timeout (librdkafka's `message.timeout.ms` is set to it, so a record not acknowledged
by then is failed by librdkafka itself, never delivered later behind the answer).
Every event is encoded before any is queued: a registry or encoding problem sends nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message

from flows.producing import open_producer
from flows.settings import Settings
from schemas.producer import UsageProducer


class Unavailable(Exception):
    """Kafka or the registry cannot take events now: answer 503 and let the client retry."""


class Sender:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._timeout = settings.api_produce_timeout.total_seconds()
        self._producer: UsageProducer | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def send(self, records: Sequence[dict[str, Any]]) -> list[str | None]:
        """Per record, None once acknowledged, else why not (within the produce timeout)."""
        producer = self._open()
        try:
            values = [producer.encoder.encode(record) for record in records]
        except Exception as exc:
            raise Unavailable(f"could not encode through the registry: {exc}") from exc
        outcomes: list[str | None] = ["not acknowledged in time"] * len(records)
        pending = [len(records)]
        done = threading.Event()
        lock = threading.Lock()

        def on_delivery(index: int) -> Any:
            def record_outcome(err: KafkaError | None, _msg: Message) -> None:
                with lock:
                    outcomes[index] = None if err is None else err.str()
                    pending[0] -= 1
                    if not pending[0]:
                        done.set()

            return record_outcome

        for index, (record, value) in enumerate(zip(records, values, strict=True)):
            producer.send_raw(value, record["customer_id"], on_delivery(index))
        done.wait(self._timeout + 1.0)
        with lock:
            return list(outcomes)

    def close(self) -> None:
        self._stopped.set()
        if self._producer is not None:
            self._producer.flush(self._timeout)

    def _open(self) -> UsageProducer:
        with self._lock:
            if self._producer is None:
                try:
                    config = {"message.timeout.ms": int(self._timeout * 1000), "linger.ms": 2}
                    self._producer = open_producer(self._settings, None, **config)
                except Exception as exc:
                    raise Unavailable(f"schema registry or Kafka unavailable: {exc}") from exc
                threading.Thread(target=self._serve, daemon=True, name="api-deliveries").start()
            return self._producer

    def _serve(self) -> None:
        while not self._stopped.is_set():
            assert self._producer is not None
            self._producer.poll(0.05)
