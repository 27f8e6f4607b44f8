"""`meterflow redrive [--reason R] [--since T] [--until T] [--customer C]`.

Reads the dead-letter topic (so it works while the flow runs, whatever holds ClickHouse),
picks the usage dead letters that match, and sends each once to the redrive topic, which
the flow rates like usage (`flows.redrive`). Dead letters redriven before are skipped
(the redrive topic says which), and the flow would count a second copy as a duplicate
anyway. Only usage rejected after decoding carries the event to redrive; a record that
could not be decoded must be re-sent by its producer.
"""

from __future__ import annotations

import json
from base64 import b64decode
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Producer

from commands.topic_reader import read_to_end
from flows.redrive import redrive_value
from flows.settings import Settings


@dataclass(frozen=True, slots=True)
class Filter:
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    customer: str | None = None

    def matches(self, letter: dict[str, object]) -> bool:
        appended = datetime.fromisoformat(str(letter["kafka_timestamp"]))
        return (
            (self.reason is None or letter["reason"] == self.reason)
            and (self.customer is None or letter["customer_id"] == self.customer)
            and (self.since is None or appended >= self.since)
            and (self.until is None or appended < self.until)
        )


@dataclass
class RedriveReport:
    sent: Counter[str]
    already: int = 0
    undecoded: int = 0

    def lines(self, topic: str) -> list[str]:
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(self.sent.items())) or "none"
        return [
            f"redriven to {topic}: {sum(self.sent.values())} ({by_reason})",
            f"skipped: {self.already} already redriven, {self.undecoded} never decoded "
            "(their producer must send them again)",
        ]


def redrive(settings: Settings, wanted: Filter) -> RedriveReport:
    redriven = {
        json.loads(r.value or b"{}").get("original")
        for r in read_to_end(settings.kafka_bootstrap, settings.redrive_topic)
    }
    report = RedriveReport(Counter())
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    failures: list[str] = []
    for read in read_to_end(settings.kafka_bootstrap, settings.dead_letter_topic):
        letter = json.loads(read.value or b"{}")
        if letter.get("topic") != settings.usage_topic or not wanted.matches(letter):
            continue
        original = f"{letter['topic']}/{letter['partition']}/{letter['offset']}"
        payload = b64decode(letter["payload"])
        if original in redriven:
            report.already += 1
            continue
        if not payload.startswith(b"{"):
            report.undecoded += 1
            continue
        redriven.add(original)
        producer.produce(
            settings.redrive_topic,
            key=str(letter["customer_id"]).encode(),
            value=redrive_value(original, str(letter["reason"]), payload.decode()),
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
        producer.poll(0)
        report.sent[str(letter["reason"])] += 1
    producer.flush(60)
    if failures:
        raise RuntimeError(f"{len(failures)} redrive records not delivered: {failures[0]}")
    return report
