"""All configuration: `METERFLOW_*` environment variables over a TOML file over defaults.

The file is `meterflow.toml` in the working directory, or the path in
`METERFLOW_CONFIG_FILE`. Defaults describe the local stack on 127.0.0.1.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from infra.stack import StackConfig
from metering.rating.books import CATALOGUE


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meterflow"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERFLOW_", extra="forbid")

    home: Path = Field(
        default_factory=_default_home, description="Jars, broker data, chDB data, recovery"
    )
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    registry_port: int = 18081
    kafka_bootstrap: str = ""
    registry_url: str = ""
    clickhouse_dsn: str = ""
    clickhouse_database: str = "meterflow"

    usage_topic: str = "usage-events"
    dead_letter_topic: str = "usage-dead-letters"
    credit_grants_topic: str = "credit-grants"
    alerts_topic: str = "usage-alerts"
    redrive_topic: str = "usage-redrive"
    """Dead-lettered usage re-submitted by `meterflow redrive`, rated at most once."""
    catalogue_topic: str = "catalogue"
    """Compacted: the live catalogue's records, over the seed files below."""
    usage_partitions: int = 4

    dedupe_horizon: timedelta = timedelta(hours=24)
    allowed_lateness: timedelta = timedelta(minutes=10)
    order_grace: timedelta = timedelta(milliseconds=100)
    """How far the broker's clock may run behind the workers' (`metering.ordering`)."""
    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=35)

    meters_file: Path = CATALOGUE / "meters.yaml"
    """With the prices, contracts and costs files: the seed catalogue, in force from the
    beginning."""
    prices_file: Path = CATALOGUE / "prices.yaml"
    contracts_file: Path = CATALOGUE / "contracts.yaml"
    costs_file: Path = CATALOGUE / "costs.yaml"

    unknown_customers: Literal["park", "list_price", "dead_letter"] = "park"
    """Usage and grants of a customer not in the catalogue: held until the customer
    appears (within the bounds below), at list price on the default tier, or
    dead-lettered."""
    park_max_events: int = Field(default=100_000, gt=0)
    """Per shard, usage and grants together; past it the oldest are dead-lettered."""
    park_max_age: timedelta = timedelta(hours=24)
    """By broker append time, against the shard's order."""

    shards: int = 32
    tail: bool = True
    snapshot_seconds: float = 5.0
    """A snapshot costs the size of the state, not the events since the last: rarer is
    cheaper per event, and a recovery replays at most this much."""
    recovery_dir: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    sink_batch_rows: int = 10_000
    sink_flush_seconds: float = 1.0
    sink_partitions: int = 0
    """Sink partitions; 0: one for chDB, one per worker of the cluster for a server."""

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_keys: str = ""
    """`KEY=SCOPE` entries, comma- or newline-separated; SCOPE is `operator` or a customer id."""
    api_keys_file: Path | None = None
    """The same entries in a file, one a line, so keys stay out of the environment."""
    api_rate_limit: float = 200.0
    """Requests a second per key, with bursts of twice as many."""
    api_body_limit: int = 4 * 1024 * 1024
    api_produce_timeout: timedelta = timedelta(seconds=5)
    """How long an ingest waits for Kafka's acknowledgements before answering 503."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("METERFLOW_CONFIG_FILE", "meterflow.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    def stack(self) -> StackConfig:
        """The local stack these settings point at, with the topics the flow uses."""
        return StackConfig(
            home=self.home,
            kafka_port=self.kafka_port,
            kafka_controller_port=self.kafka_controller_port,
            registry_port=self.registry_port,
            topics={
                self.usage_topic: self.usage_partitions,
                self.credit_grants_topic: self.usage_partitions,
                self.dead_letter_topic: 1,
                self.alerts_topic: 1,
                self.catalogue_topic: 1,
                self.redrive_topic: self.usage_partitions,
            },
            compacted=frozenset({self.catalogue_topic}),
        )

    def model_post_init(self, _context: object) -> None:
        self.kafka_bootstrap = self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"
        self.registry_url = (
            self.registry_url or f"http://127.0.0.1:{self.registry_port}/apis/ccompat/v7"
        )
        self.clickhouse_dsn = self.clickhouse_dsn or f"chdb://{self.home / 'chdb'}"
        self.recovery_dir = self.recovery_dir or self.home / "recovery"
