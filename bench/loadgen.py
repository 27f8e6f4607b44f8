"""Deterministic, realistic usage traffic with its ground truth, for tests, demos and benchmarks.

`generate` is pure: a seeded `random.Random` and a simulated clock (`bench.traffic`)
make every send, so a seed and a `LoadSpec` reproduce the same bytes and the same
manifest anywhere. `run_loadgen` is the only part that touches Kafka and the schema
registry (through `bench.wire`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from bench.manifest import Manifest, totals_of, write_manifest
from bench.spoiling import MALFORMED_REASONS
from bench.traffic import Traffic
from bench.usage_mix import CATALOGUE, MAX_CUSTOMERS, MAX_GENERATED, customer_ids, known_customers
from bench.wire import Send, WireEncoders
from schemas.event import Rejection, RejectReason
from schemas.producer import UsageProducer
from schemas.validation import TimeBounds, validate

DEFAULT_SPAN = timedelta(hours=1)
ALL_MODELS: tuple[str, ...] = tuple(p.model for p in CATALOGUE)


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to generate. Rates are fractions: duplicates and malformed of all sends,
    late and out-of-order of the unique valid events."""

    count: int
    """Unique valid events, the ones that must be rated."""
    start: datetime
    customers: int = MAX_CUSTOMERS
    seed: int = 0
    span: timedelta = DEFAULT_SPAN
    duplicate_rate: float = 0.02
    late_rate: float = 0.02
    out_of_order_rate: float = 0.05
    malformed_rate: float = 0.01
    models: tuple[str, ...] = ALL_MODELS
    """Only these models appear in valid traffic (the CLI's --models filter)."""

    def __post_init__(self) -> None:
        rates = (self.duplicate_rate, self.late_rate, self.out_of_order_rate, self.malformed_rate)
        problems = [
            (self.count < 0, "count must be >= 0"),
            (not 1 <= self.customers <= MAX_GENERATED, f"customers must be 1..{MAX_GENERATED}"),
            (self.start.utcoffset() != timedelta(0), "start must be a UTC time"),
            (self.span <= timedelta(0), "span must be positive"),
            (not all(0 <= r <= 1 for r in rates), "rates must be within 0..1"),
            (self.duplicate_rate + self.malformed_rate >= 1, "duplicate + malformed must be < 1"),
            (not self.models or not set(self.models) <= set(ALL_MODELS), f"models: {ALL_MODELS}"),
        ]
        messages = [message for failed, message in problems if failed]
        if messages:
            raise ValueError("; ".join(messages))

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "customers": self.customers,
            "seed": self.seed,
            "span_seconds": self.span.total_seconds(),
            "duplicate_rate": self.duplicate_rate,
            "late_rate": self.late_rate,
            "out_of_order_rate": self.out_of_order_rate,
            "malformed_rate": self.malformed_rate,
            "models": list(self.models),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadSpec:
        fields = dict(data)
        fields["start"] = datetime.fromisoformat(fields["start"])
        fields["span"] = timedelta(seconds=fields.pop("span_seconds"))
        fields["models"] = tuple(fields["models"])
        return cls(**fields)


def live_start(span: timedelta = DEFAULT_SPAN, now: datetime | None = None) -> datetime:
    """A start whose event times end at the current minute.

    A flow validates against the wall clock, so a live run must not put event
    times ahead of it (more than `TimeBounds.max_future` is rejected).
    """
    now = now or datetime.now(UTC)
    return now.replace(second=0, microsecond=0) - span


def generate(spec: LoadSpec) -> tuple[list[Send], Manifest]:
    """Every send in send order, and the manifest of what they must produce."""
    traffic = Traffic(spec.seed, spec.customers, spec.models, spec.start, spec.span)
    unique = traffic.unique_events(spec.count, spec.late_rate, spec.out_of_order_rate)
    duplicates, malformed = _send_counts(spec)
    sends = [*unique, *traffic.duplicates(unique, duplicates), *traffic.malformed(malformed)]
    sends.sort(key=lambda send: send.sent_at)
    return sends, _manifest(spec, sends)


def _send_counts(spec: LoadSpec) -> tuple[int, int]:
    """Duplicates and malformed sends, as fractions of all sends."""
    sent_total = spec.count / (1 - spec.duplicate_rate - spec.malformed_rate)
    return round(sent_total * spec.duplicate_rate), round(sent_total * spec.malformed_rate)


def _manifest(spec: LoadSpec, sends: list[Send]) -> Manifest:
    unique = [send.record for send in sends if send.expect is None and not send.duplicate]
    per_customer = dict.fromkeys(customer_ids(spec.customers), 0)
    for record in unique:
        per_customer[record["customer_id"]] += 1
    malformed = dict.fromkeys((reason.value for reason in MALFORMED_REASONS), 0)
    for send in sends:
        if send.expect is not None:
            malformed[send.expect.value] += 1
    return Manifest(
        spec=spec.to_json(),
        sent_total=len(sends),
        unique_events=len(unique),
        duplicates=sum(send.duplicate for send in sends),
        late=sum(send.late for send in sends),
        out_of_order=sum(send.out_of_order for send in sends),
        malformed=malformed,
        totals=totals_of(unique),
        events_per_customer=per_customer,
    )


def run_loadgen(
    spec: LoadSpec,
    producer: UsageProducer,
    registry: SchemaRegistryClient,
    rate: float | None = None,
    manifest_path: str | Path | None = None,
) -> Manifest:
    """Send a generated run through `producer`, at most `rate` sends a second, and return
    its manifest, written to `manifest_path` only once Kafka has acknowledged every send.

    Every send goes through `send_raw` keyed by customer: `UsageProducer.send` binds one
    encoder, and mixing writer versions on one producer keeps each key's order.
    """
    sends, manifest = generate(spec)
    encoders = WireEncoders(registry)
    delivered_before, failed_before = producer.report.delivered, len(producer.report.failed)
    started = time.monotonic()
    for i, send in enumerate(sends):
        if rate:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        producer.send_raw(encoders.encode(send), send.key)
    report = producer.flush()
    failed = report.failed[failed_before:]
    delivered = report.delivered - delivered_before
    if failed or delivered != len(sends):
        first = f"; first failure: {failed[0]}" if failed else ""
        raise DeliveryError(
            f"{delivered} of {len(sends)} sends to {producer.topic} were acknowledged, "
            f"{len(failed)} failed{first}"
        )
    if manifest_path is not None:
        write_manifest(manifest, manifest_path)
    return manifest


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge every send, so the manifest would not describe the topic."""


def verdict(
    decoded: dict[str, Any] | Rejection, now: datetime, spec: LoadSpec, bounds: TimeBounds
) -> RejectReason | None:
    """Why the pipeline must reject a decoded payload, or None when it must be rated.

    Contract checks are `validate`'s own; customer and model are checked against this
    generator's catalogue, which stands in for the rater's contracts and price books.
    """
    checked = (
        decoded if isinstance(decoded, Rejection) else validate(decoded, now, bounds, typed=True)
    )
    if isinstance(checked, Rejection):
        return checked.reason
    if checked.customer_id not in known_customers(spec.customers):
        return RejectReason.UNKNOWN_CUSTOMER
    if checked.model not in ALL_MODELS:
        return RejectReason.UNKNOWN_MODEL
    return None
