"""Deterministic, realistic usage traffic with its ground truth, for tests, demos and benchmarks.

`generate` is pure: a seeded `random.Random` and a simulated clock make every send,
so a seed and a `LoadSpec` reproduce the same bytes and the same manifest anywhere.
`run_loadgen` is the only part that touches Kafka and the schema registry.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from itertools import accumulate
from pathlib import Path
from types import MappingProxyType
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import parse_schema

from bench.catalogue import customer_id as generated_id
from bench.manifest import Manifest, Total, write_manifest
from schemas.event import Rejection, RejectReason, from_micros, to_micros
from schemas.jsonform import dump_line
from schemas.meters import METER_DIMENSIONS
from schemas.producer import UsageProducer
from schemas.serde import HEADER, MAGIC_BYTE, Encoder, frame, parsed_schema, schema_text
from schemas.validation import MAX_QUANTITY, TimeBounds, validate

MAX_CUSTOMERS = 24
"""Customers of the example catalogue; more come from a generated one (`bench.catalogue`)."""
MAX_GENERATED = 1_000_000
"""The example contract catalogue lists exactly `cust-0001`..`cust-0024`."""
UNKNOWN_CUSTOMER_ID = "cust-9999"
UNPRICED_MODEL = "mystery-model-7b"
"""A model name no price book has."""
UNREGISTERED_SCHEMA_ID = 999_999
BROKEN_SUBJECT = "usage-events-broken-value"
"""Where the writer schema lacking `customer_id` is registered, away from the real subject."""
DEFAULT_SPAN = timedelta(hours=1)
V2_SHARE = 0.7
"""Fraction of valid events written with contract v2; the rest use v1, to exercise evolution."""

MALFORMED_REASONS: tuple[RejectReason, ...] = (
    RejectReason.CORRUPT_BYTES,
    RejectReason.BAD_MAGIC_BYTE,
    RejectReason.UNKNOWN_SCHEMA_ID,
    RejectReason.MISSING_FIELD,
    RejectReason.INVALID_FIELD,
    RejectReason.NEGATIVE_QUANTITY,
    RejectReason.INVALID_QUANTITY,
    RejectReason.UNKNOWN_DIMENSION,
    RejectReason.UNKNOWN_METER,
    RejectReason.FUTURE_TIMESTAMP,
    RejectReason.ANCIENT_TIMESTAMP,
    RejectReason.UNKNOWN_CUSTOMER,
    RejectReason.UNKNOWN_MODEL,
)
"""Every reason reachable through the Avro path, assigned round-robin to malformed sends."""


@dataclass(frozen=True, slots=True)
class ModelProfile:
    model: str
    meter: str
    providers: tuple[str, ...]
    weight: float
    """Relative share of valid traffic."""


CATALOGUE: tuple[ModelProfile, ...] = (
    ModelProfile("gpt-4o-mini", "llm.tokens", ("openai", "azure-openai"), 24),
    ModelProfile("gpt-4o", "llm.tokens", ("openai", "azure-openai"), 14),
    ModelProfile("claude-sonnet-4", "llm.tokens", ("anthropic", "aws-bedrock"), 14),
    ModelProfile("llama-3.1-70b", "llm.tokens", ("self-hosted", "meta"), 8),
    ModelProfile("h100", "gpu.time", ("nvidia", "coreweave"), 3),
    ModelProfile("a100", "gpu.time", ("nvidia", "self-hosted"), 3),
    ModelProfile("sdxl", "image.generation", ("stability", "self-hosted"), 4),
    ModelProfile("dall-e-3", "image.generation", ("openai",), 3),
    ModelProfile("agent-runtime", "agent.step", ("meterflow",), 10),
    ModelProfile("search-api", "api.call", ("meterflow",), 17),
)
ALL_MODELS: tuple[str, ...] = tuple(p.model for p in CATALOGUE)
MODELS_BY_METER: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {meter: tuple(p.model for p in CATALOGUE if p.meter == meter) for meter in METER_DIMENSIONS}
)

FEATURES = ("chat-assistant", "doc-summary", "ticket-triage", "code-review", "search")
SDKS = ("python/1.4.2", "python/1.5.0", "node/2.1.0", "go/0.9.3")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")

_US = timedelta(microseconds=1)
_SECOND_US = 1_000_000
_LATENESS_US = (2 * 60 * _SECOND_US, 6 * 3600 * _SECOND_US)
_HOLD_US = (_SECOND_US, 30 * _SECOND_US)
_MAX_RETRY_US = 300 * _SECOND_US


@cache
def customer_ids(n: int = MAX_CUSTOMERS) -> tuple[str, ...]:
    """The example catalogue's customers, or beyond 24 the generated catalogue's
    (`bench.catalogue.write_customers`, for `meterflow catalogue apply`)."""
    if n > MAX_CUSTOMERS:
        return tuple(generated_id(i) for i in range(1, n + 1))
    return tuple(f"cust-{i:04d}" for i in range(1, n + 1))


@cache
def known_customers(n: int) -> frozenset[str]:
    return frozenset(customer_ids(n))


def live_start(span: timedelta = DEFAULT_SPAN, now: datetime | None = None) -> datetime:
    """A start whose event times end at the current minute.

    A flow validates against the wall clock, so a live run must not put event
    times ahead of it (more than `TimeBounds.max_future` is rejected).
    """
    now = now or datetime.now(UTC)
    return now.replace(second=0, microsecond=0) - span


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


class Wire(StrEnum):
    """How a send becomes bytes on the topic."""

    V1 = "v1"
    V2 = "v2"
    V3 = "v3"
    """With `corrects`: a correction names the event it corrects."""
    BROKEN = "broken"
    """Framed with a registered writer schema that lacks `customer_id`."""
    TRUNCATED = "truncated"
    """Framed with v2, then cut in the middle of the Avro body."""
    RAW = "raw"
    """The body is already the bytes to send."""


@dataclass(frozen=True, slots=True)
class Send:
    """One message in send order, and what the pipeline must make of it."""

    sent_at: datetime
    """On the generator's simulated clock; validate against this as `now`."""
    key: str
    wire: Wire
    body: dict[str, Any] | bytes
    """A record in contract shape, or the exact bytes when `wire` is RAW."""
    expect: RejectReason | None = None
    """None: valid, must be rated once however often it is sent."""
    duplicate: bool = False
    late: bool = False
    out_of_order: bool = False

    @property
    def record(self) -> dict[str, Any]:
        if isinstance(self.body, bytes):
            raise TypeError("a raw send has bytes, not a record")
        return self.body


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


def totals_of(records: Iterable[Mapping[str, Any]]) -> tuple[Total, ...]:
    """Quantities summed per customer, meter, model and dimension, in sorted order."""
    totals: Counter[tuple[str, str, str, str]] = Counter()
    for record in records:
        for dimension, quantity in record["quantities"].items():
            totals[record["customer_id"], record["meter"], record["model"], dimension] += quantity
    return tuple(Total(*key, quantity) for key, quantity in sorted(totals.items()))


def generate(spec: LoadSpec) -> tuple[list[Send], Manifest]:
    """Every send in send order, and the manifest of what they must produce."""
    traffic = _Traffic(spec)
    unique = traffic.unique_events()
    duplicates, malformed = _send_counts(spec)
    sends = [*unique, *traffic.duplicates(unique, duplicates), *traffic.malformed(malformed)]
    sends.sort(key=lambda send: send.sent_at)
    return sends, _manifest(spec, sends)


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge every send, so the manifest would not describe the topic."""


class WireEncoders:
    """Registers every writer a load run uses and turns sends into bytes."""

    def __init__(self, client: SchemaRegistryClient):
        self._versions = {
            wire: Encoder(client, int(wire[1])) for wire in (Wire.V1, Wire.V2, Wire.V3)
        }
        text = _broken_schema_text()
        self._broken_id: int = client.register_schema(BROKEN_SUBJECT, Schema(text, "AVRO"))
        self._broken = parse_schema(json.loads(text))

    def encode(self, send: Send) -> bytes:
        if isinstance(send.body, bytes):
            return send.body
        if send.wire is Wire.BROKEN:
            return frame(self._broken_id, self._broken, send.body)
        if send.wire is Wire.TRUNCATED:
            whole = self._versions[Wire.V2].encode(send.body)
            return whole[: (len(whole) + HEADER.size) // 2]
        return self._versions[send.wire].encode(send.body)


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


class _Traffic:
    """The simulated world of one run: one RNG, the customer mix and the model mix."""

    def __init__(self, spec: LoadSpec):
        self._spec = spec
        self._rng = rng = random.Random(spec.seed)
        self._customers = customer_ids(spec.customers)
        ranks = list(range(1, spec.customers + 1))
        rng.shuffle(ranks)
        self._customer_weights = list(accumulate(rank**-1.2 for rank in ranks))
        self._profiles = [p for p in CATALOGUE if p.model in spec.models]
        self._profile_weights = list(accumulate(p.weight for p in self._profiles))
        self._start_us = to_micros(spec.start)
        self._span_us = spec.span // _US

    def unique_events(self) -> list[Send]:
        spec, rng, n = self._spec, self._rng, self._spec.count
        emitted = sorted(self._start_us + rng.randrange(self._span_us) for _ in range(n))
        late = set(rng.sample(range(n), round(n * spec.late_rate)))
        held = set(rng.sample(range(n), round(n * spec.out_of_order_rate)))
        sends = []
        for i, at in enumerate(emitted):
            event_us = at - _log_uniform(rng, *_LATENESS_US) if i in late else at
            sent_us = at + rng.randint(*_HOLD_US) if i in held else at
            wire = Wire.V2 if rng.random() < V2_SHARE else Wire.V1
            record = self._record(from_micros(event_us), wire, batch=i in late)
            sends.append(
                Send(
                    from_micros(sent_us),
                    record["customer_id"],
                    wire,
                    record,
                    late=i in late,
                    out_of_order=i in held,
                )
            )
        return sends

    def duplicates(self, originals: list[Send], n: int) -> list[Send]:
        """Retries: the same record, re-sent a moment to minutes after the original."""
        retries = self._rng.choices(originals, k=n)
        return [
            replace(
                original,
                sent_at=original.sent_at + self._retry_delay(),
                duplicate=True,
                late=False,
                out_of_order=False,
            )
            for original in retries
        ]

    def malformed(self, n: int) -> list[Send]:
        sends = []
        for i in range(n):
            sent_at = from_micros(self._start_us + self._rng.randrange(self._span_us))
            record = self._record(sent_at, Wire.V2, batch=False)
            reason = MALFORMED_REASONS[i % len(MALFORMED_REASONS)]
            wire, body = self._spoil(reason, record, sent_at)
            sends.append(Send(sent_at, record["customer_id"], wire, body, expect=reason))
        return sends

    def _record(self, timestamp: datetime, wire: Wire, batch: bool) -> dict[str, Any]:
        rng = self._rng
        profile = rng.choices(self._profiles, cum_weights=self._profile_weights)[0]
        customer = rng.choices(self._customers, cum_weights=self._customer_weights)[0]
        quantities, properties = _SHAPES[profile.meter](rng, profile.model)
        if rng.random() < 0.8:
            properties["sdk"] = rng.choice(SDKS)
        project = f"proj-{customer[5:]}-{rng.randint(1, 3)}" if rng.random() < 0.6 else None
        realtime = not batch and (profile.meter != "llm.tokens" or rng.random() < 0.95)
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": timestamp,
            "customer_id": customer,
            "project_id": project,
            "feature": rng.choice(FEATURES) if rng.random() < 0.5 else None,
            "meter": profile.meter,
            "model": profile.model,
            "provider": rng.choice(profile.providers),
            "mode": "realtime" if realtime else "batch",
            "quantities": quantities,
            "properties": properties,
            "region": rng.choice(REGIONS) if wire is Wire.V2 and rng.random() < 0.7 else None,
            "corrects": None,
        }

    def _spoil(
        self, reason: RejectReason, record: dict[str, Any], sent_at: datetime
    ) -> tuple[Wire, dict[str, Any] | bytes]:
        """Make a realistic record produce `reason`: a fault of the bytes or of the contents."""
        rng = self._rng
        quantities = dict(record["quantities"])
        first = next(iter(quantities))
        match reason:
            case RejectReason.CORRUPT_BYTES:
                if rng.random() < 0.5:
                    return Wire.RAW, bytes([MAGIC_BYTE, 0, 0])
                return Wire.TRUNCATED, record
            case RejectReason.BAD_MAGIC_BYTE:
                return Wire.RAW, dump_line(record).encode()
            case RejectReason.UNKNOWN_SCHEMA_ID:
                return Wire.RAW, frame(UNREGISTERED_SCHEMA_ID, _latest_schema(), record)
            case RejectReason.MISSING_FIELD:
                return Wire.BROKEN, {k: v for k, v in record.items() if k != "customer_id"}
            case RejectReason.INVALID_FIELD:
                record["provider"] = ""
            case RejectReason.NEGATIVE_QUANTITY:
                quantities[first] = -quantities[first]
            case RejectReason.INVALID_QUANTITY:
                quantities[first] = MAX_QUANTITY * 10
            case RejectReason.UNKNOWN_DIMENSION:
                quantities["audio_seconds"] = rng.randint(1, 600)
            case RejectReason.UNKNOWN_METER:
                record["meter"] = "video.generation"
            case RejectReason.FUTURE_TIMESTAMP:
                record["timestamp"] = sent_at + timedelta(days=rng.uniform(1, 30))
            case RejectReason.ANCIENT_TIMESTAMP:
                record["timestamp"] = sent_at - timedelta(days=rng.uniform(2 * 365, 10 * 365))
            case RejectReason.UNKNOWN_CUSTOMER:
                record["customer_id"] = UNKNOWN_CUSTOMER_ID
            case RejectReason.UNKNOWN_MODEL:
                record["model"] = UNPRICED_MODEL
            case _:
                raise ValueError(f"the load generator cannot produce {reason}")
        record["quantities"] = quantities
        return Wire.V2, record

    def _retry_delay(self) -> timedelta:
        delay_us = int(self._rng.lognormvariate(math.log(2 * _SECOND_US), 1.0))
        return _US * min(max(delay_us, 1_000), _MAX_RETRY_US)


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


_Shape = Callable[[random.Random, str], tuple[dict[str, int], dict[str, str]]]


@dataclass(frozen=True, slots=True)
class _Task:
    name: str
    weight: float
    input_median: int
    output_median: int
    cached_chance: float
    """How often the prompt prefix hits the provider's cache."""
    reasoning_chance: float
    """How often a reasoning model thinks before answering."""


_TASKS = (
    _Task("chat", 5, 900, 450, 0.5, 0.3),
    _Task("summarisation", 3, 600, 1400, 0.2, 0.2),
    _Task("classification", 2, 2400, 6, 0.7, 0.0),
)
_TASK_WEIGHTS = list(accumulate(task.weight for task in _TASKS))
_REASONING_MODELS = frozenset({"claude-sonnet-4"})


def _llm_tokens(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    task = rng.choices(_TASKS, cum_weights=_TASK_WEIGHTS)[0]
    prompt = _log_normal(rng, task.input_median, 0.9, 1, 200_000)
    completion = _log_normal(rng, task.output_median, 0.8, 1, 16_000)
    quantities = {"input_tokens": prompt, "output_tokens": completion}
    if rng.random() < task.cached_chance and (cached := int(prompt * rng.uniform(0.2, 0.95))):
        quantities["input_tokens"] = prompt - cached
        quantities["cached_input_tokens"] = cached
    if model in _REASONING_MODELS and rng.random() < task.reasoning_chance:
        quantities["reasoning_tokens"] = _log_normal(rng, 700, 1.0, 1, 32_000)
    return quantities, {"task": task.name}


def _gpu_time(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    gpu_ms = _log_normal(rng, 90_000, 1.8, 1_000, 8 * 3_600_000)
    return {"gpu_ms": gpu_ms}, {"job": rng.choice(("inference", "fine-tune", "embedding", "eval"))}


def _images(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    images = rng.choices((1, 2, 4), weights=(75, 15, 10))[0]
    return {"images": images}, {"size": rng.choice(("1024x1024", "1792x1024", "1024x1792"))}


def _agent_steps(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    steps = _log_normal(rng, 12, 0.8, 1, 400)
    quantities = {"steps": steps}
    if tool_calls := round(steps * rng.uniform(0.2, 0.8)):
        quantities["tool_calls"] = tool_calls
    return quantities, {}


def _api_calls(rng: random.Random, model: str) -> tuple[dict[str, int], dict[str, str]]:
    calls = 1 if rng.random() < 0.85 else _log_normal(rng, 10, 1.0, 2, 500)
    return {"calls": calls}, {}


_SHAPES: Mapping[str, _Shape] = MappingProxyType(
    {
        "llm.tokens": _llm_tokens,
        "gpu.time": _gpu_time,
        "image.generation": _images,
        "agent.step": _agent_steps,
        "api.call": _api_calls,
    }
)


def _log_normal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """Heavy-tailed integer counts, as token and job sizes are, clamped to a plausible range."""
    return min(max(round(median * math.exp(rng.gauss(0.0, sigma))), low), high)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


@cache
def _latest_schema() -> Any:
    return parsed_schema()


@cache
def _broken_schema_text() -> str:
    """The latest contract minus `customer_id`: what a producer on a stale fork would register."""
    schema = json.loads(schema_text())
    schema["fields"] = [field for field in schema["fields"] if field["name"] != "customer_id"]
    return json.dumps(schema)
