"""`meterflow stack up|down|status`: the local Kafka broker and schema registry.

The shell scripts beside this file own the processes (fetch jars, format, start,
stop); this module runs them in order and creates the topics the flow uses.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class StackConfig:
    home: Path
    kafka_port: int
    kafka_controller_port: int
    registry_port: int
    topics: dict[str, int]
    compacted: frozenset[str] = frozenset()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "METERFLOW_HOME": str(self.home),
            "METERFLOW_KAFKA_PORT": str(self.kafka_port),
            "METERFLOW_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "METERFLOW_REGISTRY_PORT": str(self.registry_port),
        }


def up(config: StackConfig) -> None:
    _script(config, "kafka", "start")
    create_topics(config.bootstrap, config.topics, config.compacted)
    _script(config, "registry", "start")


def down(config: StackConfig) -> None:
    _script(config, "registry", "stop")
    _script(config, "kafka", "stop")


def broker(config: StackConfig, action: str) -> None:
    """Start or stop the broker alone: how a test takes Kafka away from a running client."""
    _script(config, "kafka", action)


def status(config: StackConfig) -> bool:
    """Print each service's state; true when both are up."""
    results = [_script(config, name, "status", check=False) for name in ("kafka", "registry")]
    return all(code == 0 for code in results)


def create_topics(
    bootstrap: str, topics: dict[str, int], compacted: frozenset[str] = frozenset()
) -> None:
    """Create missing topics with their partition counts; existing ones are left as they are.

    Records carry the broker's append time, which the flow orders partitions by. A
    compacted topic (the catalogue) keeps the latest record of each key."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config={"message.timestamp.type": "LogAppendTime"}
            | ({"cleanup.policy": "compact"} if name in compacted else {}),
        )
        for name, partitions in topics.items()
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=30).items():
        future.result()
        log.info("created topic %s", name)


def _script(config: StackConfig, name: str, action: str, check: bool = True) -> int:
    result = subprocess.run(
        ["bash", str(_HERE / f"{name}.sh"), action], env=config.env(), check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"infra/{name}.sh {action} failed with exit code {result.returncode}")
    return result.returncode
