"""The local stack for real: broker, registry, Confluent framing, restarts."""

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient

from flows.producing import produce_jsonl
from flows.settings import Settings
from infra import stack
from schemas.event import Rejection, RejectReason
from schemas.jsonform import dump_line
from schemas.producer import UsageProducer
from schemas.serde import Decoder, Encoder, RegistryUnavailable, frame, open_registry, parsed_schema

pytestmark = pytest.mark.stack

RECORD = {
    "event_id": "evt-1",
    "timestamp": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    "customer_id": "cust-0001",
    "project_id": None,
    "feature": "chat",
    "meter": "llm.tokens",
    "model": "gpt-4o",
    "provider": "openai",
    "mode": "realtime",
    "quantities": {"input_tokens": 1200, "output_tokens": 300},
    "properties": {"sdk": "python"},
    "region": "eu-west-1",
    "corrects": None,
}
LATER = ("region", "corrects")
"""Fields added after v1 (v2's region, v3's corrects)."""


def consume_all(bootstrap: str, topic: str, expected: int) -> list[bytes | None]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    values: list[bytes | None] = []
    for _ in range(60):
        values += [m.value() for m in consumer.consume(1000, 1.0) if m.error() is None]
        if len(values) >= expected:
            break
    consumer.close()
    return values


def test_status_reports_both_services_up(running_stack: stack.StackConfig) -> None:
    assert stack.status(running_stack)


def test_v1_v2_and_v3_events_round_trip_through_kafka_and_the_registry(
    registry_client: SchemaRegistryClient,
    kafka_bootstrap: str,
    topic_factory: Callable[[int], str],
    settings_registry_url: str,
) -> None:
    topic = topic_factory(2)
    v1, v2 = Encoder(registry_client, version=1), Encoder(registry_client, version=2)
    v3 = Encoder(registry_client, version=3)
    assert len({v1.schema_id, v2.schema_id, v3.schema_id}) == 3
    v1_record = {k: v for k, v in RECORD.items() if k not in LATER} | {"event_id": "evt-v1"}
    v3_record = RECORD | {"event_id": "evt-v3", "corrects": "evt-1"}
    with UsageProducer(kafka_bootstrap, topic, v2) as producer:
        producer.send(RECORD)
        producer.send_raw(v1.encode(v1_record), "cust-0001")
        producer.send_raw(v3.encode(v3_record), "cust-0001")
    assert producer.report.delivered == 3 and not producer.report.failed

    decoder = Decoder(SchemaRegistryClient({"url": settings_registry_url}))
    decoded = [decoder.decode(v) for v in consume_all(kafka_bootstrap, topic, 3)]
    by_id = {d["event_id"]: d for d in decoded if isinstance(d, dict)}
    assert by_id["evt-1"] == RECORD
    assert by_id["evt-v1"] == v1_record | {"region": None, "corrects": None}
    assert by_id["evt-v3"] == v3_record


def test_a_v1_reader_reads_v2_events(registry_client: SchemaRegistryClient) -> None:
    payload = Encoder(registry_client, version=2).encode(RECORD)
    decoded = Decoder(registry_client, reader_version=1).decode(payload)
    assert decoded == {k: v for k, v in RECORD.items() if k not in LATER}


def test_unknown_schema_ids_and_missing_fields_are_rejections(
    registry_client: SchemaRegistryClient,
) -> None:
    unknown = Decoder(registry_client).decode(frame(987_654, parsed_schema(), RECORD))
    assert isinstance(unknown, Rejection) and unknown.reason is RejectReason.UNKNOWN_SCHEMA_ID


def test_events_produced_before_a_restart_decode_after_it(
    running_stack: stack.StackConfig,
    kafka_bootstrap: str,
    topic_factory: Callable[[int], str],
    settings_registry_url: str,
) -> None:
    topic = topic_factory(1)
    client = SchemaRegistryClient({"url": settings_registry_url})
    with UsageProducer(kafka_bootstrap, topic, Encoder(client)) as producer:
        producer.send(RECORD)

    stack.down(running_stack)
    assert not stack.status(running_stack)
    stack.up(running_stack)

    fresh = Decoder(SchemaRegistryClient({"url": settings_registry_url}))
    assert [fresh.decode(v) for v in consume_all(kafka_bootstrap, topic, 1)] == [RECORD]


def test_produce_sends_good_lines_and_reports_bad_ones_by_number(
    settings: Settings,
    kafka_bootstrap: str,
    topic_factory: Callable[[int], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(1)
    good = dump_line(RECORD | {"timestamp": datetime.now(UTC)})
    bad = dump_line(RECORD | {"event_id": "evt-2", "quantities": {"input_tokens": -5}})
    lines = tmp_path / "events.jsonl"
    lines.write_text(f"{good}\n{bad}\nnot json\n")

    assert produce_jsonl(settings.model_copy(update={"usage_topic": topic}), lines) == 0
    err = capsys.readouterr().err
    assert "line 2: negative_quantity" in err and "line 3: malformed_json" in err
    assert len(consume_all(kafka_bootstrap, topic, 1)) == 1


# A registry that is down, silent, or behind a wrong URL is an outage: the flow stops and
# names it; nothing is dead-lettered for it and no answer of it is remembered.


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def wrong_path(registry_url: str) -> str:
    return registry_url.removesuffix("/apis/ccompat/v7")


def test_a_wrong_path_a_silent_registry_and_a_refused_one_are_named_at_start(
    settings_registry_url: str, silent_port: int
) -> None:
    with pytest.raises(RegistryUnavailable, match=r"answered HTTP 404 .*/apis/ccompat/v7"):
        open_registry(wrong_path(settings_registry_url))
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        open_registry(f"http://127.0.0.1:{silent_port}", timeout=0.5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        open_registry(f"http://127.0.0.1:{refused}")


def test_an_outage_while_decoding_raises_every_time(
    registry_client: SchemaRegistryClient, settings_registry_url: str, silent_port: int
) -> None:
    payload = Encoder(registry_client).encode(RECORD)
    url = wrong_path(settings_registry_url)
    behind_a_wrong_url = Decoder(SchemaRegistryClient({"url": url, "timeout": 2}), url)
    for _ in range(2):  # not cached: the second call asks again
        with pytest.raises(RegistryUnavailable, match="HTTP 404"):
            behind_a_wrong_url.decode(payload)
    silent = Decoder(
        SchemaRegistryClient({"url": f"http://127.0.0.1:{silent_port}", "timeout": 0.5})
    )
    with pytest.raises(RegistryUnavailable, match="did not answer"):
        silent.decode(payload)


def test_the_flow_with_a_wrong_registry_url_exits_naming_it_and_writes_nothing(
    settings: Settings,
    kafka_bootstrap: str,
    registry_client: SchemaRegistryClient,
    topic_factory: Callable[[int], str],
    tmp_path: Path,
) -> None:
    topic = topic_factory(2)
    with UsageProducer(kafka_bootstrap, topic, Encoder(registry_client)) as producer:
        producer.send(RECORD)
    env = {
        **os.environ,
        "METERFLOW_USAGE_TOPIC": topic,
        "METERFLOW_REGISTRY_URL": wrong_path(settings.registry_url),
        "METERFLOW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
        "METERFLOW_RECOVERY_DIR": str(tmp_path / "recovery"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "commands.cli", "run", "--until-end"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3
    assert run.stderr.strip().splitlines()[-1] == (
        f"meterflow run: schema registry {wrong_path(settings.registry_url)} answered HTTP 404 "
        "to GET /subjects: is it the API root (for Apicurio, ending in /apis/ccompat/v7)?"
    )
    assert not (tmp_path / "chdb").exists()
