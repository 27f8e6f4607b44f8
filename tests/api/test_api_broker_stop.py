"""A broker of its own, stopped under a running API and started again: what was answered
`accepted` is in the topic, whole; what was answered `unavailable` never arrives later."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apiworld import World, auth, event, start_server
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from flows.settings import Settings
from infra import stack
from schemas.serde import Decoder

pytestmark = pytest.mark.stack

PORT_BASE = int(os.environ.get("METERFLOW_TEST_PORT_BASE", "29000"))
TOPIC = f"api-broker-usage-{uuid.uuid4().hex[:8]}"
"""A new topic each session: the broker keeps its data folder from run to run."""


@pytest.fixture
def own_broker(settings: Settings) -> Iterator[stack.StackConfig]:
    config = stack.StackConfig(
        home=settings.home / "api-broker",
        kafka_port=PORT_BASE + 94,
        kafka_controller_port=PORT_BASE + 95,
        registry_port=PORT_BASE - 918,
        topics={TOPIC: 2},
    )
    stack.broker(config, "start")
    try:
        stack.create_topics(config.bootstrap, config.topics)
        yield config
    finally:
        stack.broker(config, "stop")


def batch(name: str) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(seconds=5)
    return [
        event(
            f"{name}-{uuid.uuid4().hex[:8]}",
            "cust-0001",
            "api.call",
            "search-api",
            {"calls": 1},
            at,
        )
        for _ in range(10)
    ]


def ids(answer: dict[str, Any], status: str) -> set[str]:
    return {s["event_id"] for s in answer["events"] if s["status"] == status}


def in_topic(bootstrap: str, registry: SchemaRegistryClient) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(2)])
    decoder, records, idle = Decoder(registry), [], 0
    while idle < 5:
        message = consumer.poll(1.0)
        if message is None:
            idle += 1
            continue
        assert message.error() is None, message.error()
        records.append(decoder.decode(message.value()))
    consumer.close()
    return records


def test_accepted_events_reach_kafka_whole_and_unavailable_ones_never_do(
    world: World, own_broker: stack.StackConfig, registry_client: SchemaRegistryClient
) -> None:
    env = world.env | {
        "METERFLOW_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "METERFLOW_USAGE_TOPIC": TOPIC,
        "METERFLOW_API_PRODUCE_TIMEOUT": "PT3S",
    }
    server = start_server(env)
    try:
        with server.client() as http:
            before = http.post("/v1/events", json=batch("up"), headers=auth("operator"))
            stack.broker(own_broker, "stop")
            down = http.post("/v1/events", json=batch("down"), headers=auth("operator"))
            stack.broker(own_broker, "start")
            after = http.post("/v1/events", json=batch("again"), headers=auth("operator"))
    finally:
        server.stop()
    assert before.status_code == 202 and before.json()["accepted"] == 10
    assert down.status_code == 503 and down.headers["Retry-After"]
    assert down.json()["unavailable"] == 10 and not ids(down.json(), "accepted")
    assert after.status_code == 202 and after.json()["accepted"] == 10
    records = in_topic(own_broker.bootstrap, registry_client)
    assert all(isinstance(r, dict) for r in records), "every record decodes whole"
    accepted = ids(before.json(), "accepted") | ids(after.json(), "accepted")
    assert sorted(r["event_id"] for r in records) == sorted(accepted)
