"""Session-wide services: the real Kafka broker and schema registry, started once.

Tests run their own stack on their own ports and data folder, so a running demo
stack is neither used nor disturbed. `METERFLOW_TEST_PORT_BASE` (default 29000)
moves the ports (the workers' metrics port too), so two test sessions can run side by side.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from flows.settings import Settings
from infra import stack

PORT_BASE = int(os.environ.get("METERFLOW_TEST_PORT_BASE", "29000"))
TEST_ENV = {
    "METERFLOW_KAFKA_PORT": str(PORT_BASE + 92),
    "METERFLOW_KAFKA_CONTROLLER_PORT": str(PORT_BASE + 93),
    "METERFLOW_REGISTRY_PORT": str(PORT_BASE - 919),
    "METERFLOW_METRICS_PORT": str(PORT_BASE + 464),
}


@pytest.fixture(scope="session")
def settings() -> Settings:
    base = Settings()
    os.environ.update(TEST_ENV)
    return Settings(home=base.home / f"test-stack-{PORT_BASE}")


@pytest.fixture(scope="session")
def stack_config(settings: Settings) -> stack.StackConfig:
    return settings.stack()


@pytest.fixture(scope="session")
def running_stack(stack_config: stack.StackConfig) -> Iterator[stack.StackConfig]:
    stack.up(stack_config)
    yield stack_config
    stack.down(stack_config)


@pytest.fixture(scope="session")
def kafka_bootstrap(running_stack: stack.StackConfig) -> str:
    return running_stack.bootstrap


@pytest.fixture(scope="session")
def settings_registry_url(running_stack: stack.StackConfig, settings: Settings) -> str:
    return settings.registry_url


@pytest.fixture(scope="session")
def registry_client(settings_registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings_registry_url})


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Callable[[int], str]:
    def make(partitions: int = 1) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        stack.create_topics(kafka_bootstrap, {name: partitions})
        return name

    return make


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chDB opens one data path per process, so the whole session shares this one."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def clickhouse_dsn(chdb_path: Path) -> str:
    return f"chdb://{chdb_path}"


@pytest.fixture
def database() -> str:
    """A fresh database per test keeps tests independent inside the one chDB engine."""
    return f"t_{uuid.uuid4().hex[:12]}"
