"""Whatever arrives, the decoder and validator answer with an event or a rejection."""

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import schemaless_reader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import Rejection, UsageEvent
from schemas.jsonform import event_from_line
from schemas.serde import HEADER, Decoder, Encoder, parsed_schema
from schemas.validation import TimeBounds, validate, validate_decoded

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BOUNDS = TimeBounds()
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.floats(), st.text())),
)
FIELDS = (
    "event_id",
    "timestamp",
    "customer_id",
    "project_id",
    "feature",
    "meter",
    "model",
    "provider",
    "mode",
    "quantities",
    "properties",
    "region",
)


def outcome(record: dict[str, Any] | Rejection) -> UsageEvent | Rejection:
    return record if isinstance(record, Rejection) else validate(record, NOW, BOUNDS)


@settings(suppress_health_check=[HealthCheck.too_slow])  # nested strategies, a busy machine
@given(st.dictionaries(st.sampled_from(FIELDS), anything))
def test_validation_of_arbitrary_fields_never_raises(record: dict[str, Any]) -> None:
    assert isinstance(validate(record, NOW, BOUNDS), UsageEvent | Rejection)


@given(st.text())
def test_arbitrary_json_lines_never_raise(line: str) -> None:
    assert isinstance(event_from_line(line, NOW, BOUNDS), UsageEvent | Rejection)


avro_records = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=40),
        "timestamp": st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ),
        "customer_id": st.text(max_size=12),
        "project_id": st.none() | st.text(max_size=8),
        "feature": st.none() | st.text(max_size=8),
        "meter": st.sampled_from(["llm.tokens", "gpu.time", "video.generation", ""]),
        "model": st.text(max_size=12),
        "provider": st.text(max_size=8),
        "mode": st.sampled_from(["realtime", "batch"]),
        "quantities": st.dictionaries(
            st.sampled_from(["input_tokens", "output_tokens", "gpu_ms", "audio_s"]),
            st.integers(-(2**63), 2**63 - 1),
        ),
        "properties": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "region": st.none() | st.text(max_size=8),
    }
)


@pytest.mark.stack
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=avro_records)
def test_any_encodable_record_decodes_to_an_event_or_a_rejection(
    registry_client: SchemaRegistryClient, record: dict[str, Any]
) -> None:
    payload = Encoder(registry_client).encode(record)
    result = outcome(Decoder(registry_client).decode(payload))
    assert isinstance(result, UsageEvent | Rejection)
    if isinstance(result, UsageEvent):
        assert result.event_id == record["event_id"]
        assert all(q >= 0 for q in result.quantities.values())
        assert abs(result.timestamp - NOW) <= timedelta(days=35)


@pytest.mark.stack
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=300), framed=st.booleans(), schema_id=st.integers(0, 2**32 - 1))
def test_arbitrary_bytes_never_raise(
    registry_client: SchemaRegistryClient, body: bytes, framed: bool, schema_id: int
) -> None:
    known = Encoder(registry_client).schema_id
    payload = HEADER.pack(0, known if framed else schema_id) + body
    assert isinstance(outcome(Decoder(registry_client).decode(payload)), UsageEvent | Rejection)
    assert isinstance(outcome(Decoder(registry_client).decode(body)), UsageEvent | Rejection)


VALID = {
    "event_id": "e1",
    "timestamp": NOW,
    "customer_id": "c1",
    "project_id": None,
    "feature": None,
    "meter": "llm.tokens",
    "model": "m1",
    "provider": "p1",
    "mode": "realtime",
    "quantities": {"input_tokens": 5},
    "properties": {},
    "region": None,
    "corrects": None,
}
EDGES: dict[str, list[Any]] = {
    "event_id": ["", "  ", "x" * 256, "x" * 257],
    "customer_id": ["", "\t", "c" * 257],
    "timestamp": [
        NOW + BOUNDS.max_future,
        NOW + BOUNDS.max_future + timedelta(microseconds=1),
        NOW - timedelta(days=35),
        NOW - timedelta(days=35, microseconds=1),
    ],
    "meter": ["gpu.time", "vector.storage", " "],
    "quantities": [
        {},
        {"input_tokens": 0},
        {"input_tokens": -1},
        {"output_tokens": 10**15},
        {"output_tokens": 10**15 + 1},
        {"input_tokens": 1, "gpu_ms": 2},
        {"vectors": 3},
    ],
    "corrects": ["e0", "e1", ""],
}
edge_records = st.lists(
    st.sampled_from(sorted(EDGES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(EDGES[name]))
    ),
    max_size=2,
).map(lambda changes: {**VALID, **dict(changes)})
"""A valid record with at most two fields set to the edge of a check."""


@given(records=st.lists(avro_records | edge_records, max_size=8), catalogue_meters=st.booleans())
def test_the_batch_validator_agrees_with_validate_on_every_typed_record(
    records: list[dict[str, Any]], catalogue_meters: bool
) -> None:
    """The hot path's shortcut for plainly valid records decides, and words, exactly what
    `validate` does."""
    clock = [NOW] * len(records)
    batch = validate_decoded(records, clock, BOUNDS, catalogue_meters)
    one_by_one = [
        validate(r, NOW, BOUNDS, typed=True, catalogue_meters=catalogue_meters) for r in records
    ]
    assert batch == one_by_one


@settings(max_examples=60, deadline=None)
@given(record=avro_records, version=st.sampled_from([1, 2, 3]), corrects=st.none() | st.text())
def test_earlier_writers_read_as_written_equal_avro_schema_resolution(
    record: dict[str, Any], version: int, corrects: str | None
) -> None:
    """The decoder reads a writer whose fields have the reader's types as written and
    fills in the reader's defaults: the same record Avro's schema resolution gives."""
    registry = SchemaRegistryClient.new_client({"url": "mock://"})
    if version < 2:
        record = {k: v for k, v in record.items() if k != "region"}
    if version == 3:
        record = {**record, "corrects": corrects}
    payload = Encoder(registry, version).encode(record)
    body = io.BytesIO(payload[HEADER.size :])
    resolved = schemaless_reader(body, parsed_schema(version), parsed_schema())
    assert Decoder(registry).decode(payload) == resolved
