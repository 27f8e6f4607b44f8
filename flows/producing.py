"""`meterflow produce`: JSON lines in, Confluent-framed Avro on the usage topic out."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flows.settings import Settings
from schemas.event import Rejection
from schemas.jsonform import event_from_line, line_problem, to_record
from schemas.producer import UsageProducer
from schemas.serde import Encoder, open_registry
from schemas.validation import TimeBounds, utc_now


def open_producer(settings: Settings, topic: str | None = None, **config: Any) -> UsageProducer:
    """The idempotent producer on the usage topic (or `topic`); `config` is librdkafka's."""
    encoder = Encoder(open_registry(settings.registry_url))
    return UsageProducer(settings.kafka_bootstrap, topic or settings.usage_topic, encoder, **config)


def produce_jsonl(settings: Settings, path: Path | None) -> int:
    """Validate each line before sending; bad lines are reported by number and skipped."""
    bounds = TimeBounds(settings.max_future, settings.max_age)
    producer = open_producer(settings)
    bad = 0
    with producer:
        for number, line in _lines(path):
            outcome = event_from_line(line, utc_now(), bounds)
            if isinstance(outcome, Rejection):
                bad += 1
                print(line_problem(number, outcome), file=sys.stderr)
                continue
            producer.send(to_record(outcome))
    report = producer.report
    print(
        f"sent {report.delivered} events to {settings.usage_topic}, skipped {bad} bad lines, "
        f"{len(report.failed)} delivery failures",
        file=sys.stderr,
    )
    return 1 if report.failed else 0


def _lines(path: Path | None) -> Iterable[tuple[int, str]]:
    stream = path.open() if path else sys.stdin
    with stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                yield number, line
