"""The metering dataflow, wired thin: every step calls logic that lives elsewhere.

    usage topic -> decode+validate -> split by customer shard -> meter (dedupe, lateness,
    rating; stateful) -> ClickHouse; dead letters and alerts also to their topics.
    credit grants topic -> parse -> the same shards, in arrival order with usage.

Run with `python -m bytewax.run "flows.dataflow:flow()"` (or `meterflow run`);
configuration comes from `flows.settings.Settings`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import StatefulBatchLogic
from clickhouse_connect.driver.client import Client

from flows import collector, metrics
from flows.catalogue import catalogue_parser, seed_catalogue
from flows.decode import (
    Decoded,
    Parse,
    ShardInput,
    Shards,
    grant_parser,
    per_record,
    split_batch,
    usage_parser,
)
from flows.kafka_source import KafkaBatchSource, partitions_of
from flows.redrive import redrive_parser
from flows.settings import Settings
from metering.catalogue.live import LiveCatalogue, UnknownCustomers
from metering.dedupe import DedupeWindow
from metering.ordering import Source
from metering.rating.budgets import current_budgets
from metering.records import ConsumedBatch, ShardRecord
from metering.shard import ShardMeter, ShardState
from metering.stopwatch import Stopwatch
from schemas.serde import CATALOGUE, Decoder, open_registry
from schemas.validation import TimeBounds
from sinks.batch import SinkBatch
from sinks.clickhouse import connect
from sinks.rows import shard_batch
from sinks.tables import ALERTS, BUDGET_COLUMNS, CUSTOMER_BUDGETS, DEAD_LETTERS
from sinks.topic import CheckedTopicSink
from sinks.writer import ClickHouseSink, OnFlush

log = logging.getLogger(__name__)

Keyed = tuple[str, SinkBatch]
"""A batch of rows keyed by its stream."""
ShardItems = tuple[str, ShardInput]
"""A shard's part of a consumed batch, with the shard's key (the logic is not told it)."""


@dataclass(frozen=True)
class DecodedStreams:
    """The decode step's outputs, by name."""

    audit: Stream[Keyed]
    """The raw log and the dead letters of decoding, for the sink."""
    shards: Stream[tuple[str, ShardItems]]
    """Every shard's part of every consumed batch, keyed for the meter."""


_PARSE_GRANTS = per_record(grant_parser)


class _Steps:
    """What the steps close over; built lazily so each worker process makes its own clients."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.bounds = TimeBounds(settings.max_future, settings.max_age)
        self.shards = Shards(settings.shards, settings.usage_topic)

    @cached_property
    def decoder(self) -> Decoder:
        return Decoder(open_registry(self.settings.registry_url), self.settings.registry_url)

    @cached_property
    def catalogue_decoder(self) -> Decoder:
        registry = open_registry(self.settings.registry_url)
        return Decoder(registry, self.settings.registry_url, 1, CATALOGUE)

    @cached_property
    def sources(self) -> list[Source]:
        """Every partition a shard merges: all of the usage, grants and catalogue topics."""
        bootstrap = self.settings.kafka_bootstrap
        settings = self.settings
        topics = (
            settings.usage_topic,
            settings.credit_grants_topic,
            settings.catalogue_topic,
            settings.redrive_topic,
        )
        return [(t, p) for t in topics for p in partitions_of(bootstrap, t)]

    @cached_property
    def meter(self) -> ShardMeter:
        settings = self.settings
        unknown = UnknownCustomers(
            settings.unknown_customers,
            settings.park_max_events,
            settings.park_max_age // timedelta(milliseconds=1),
        )
        live = LiveCatalogue(seed_catalogue(settings), self.shards.keys[0], unknown)
        lateness_us = self.settings.allowed_lateness // timedelta(microseconds=1)
        return ShardMeter(live.seed_engine, lateness_us, live)

    @cached_property
    def parse_usage(self) -> Parse:
        return usage_parser(self.decoder, self.bounds)

    def decode_usage(self, batch: ConsumedBatch) -> Decoded:
        return self._split(batch, self.parse_usage)

    def decode_grants(self, batch: ConsumedBatch) -> Decoded:
        return self._split(batch, _PARSE_GRANTS)

    @cached_property
    def parse_catalogue(self) -> Parse:
        return per_record(catalogue_parser(self.catalogue_decoder))

    @cached_property
    def parse_redrive(self) -> Parse:
        return per_record(redrive_parser(self.bounds))

    def decode_catalogue(self, batch: ConsumedBatch) -> Decoded:
        return self._split(batch, self.parse_catalogue)

    def decode_redrive(self, batch: ConsumedBatch) -> Decoded:
        return self._split(batch, self.parse_redrive)

    def _split(self, batch: ConsumedBatch, parse: Parse) -> Decoded:
        metrics.record_consumed(batch.topic, batch.partition, len(batch.records))
        watch = Stopwatch()
        decoded = split_batch(batch, parse, self.shards, watch)
        metrics.record_rejections(decoded.reasons)
        metrics.record_stages(watch)
        return decoded

    def connect_sink(self) -> Client:
        """The sink's client, after publishing the catalogue's budgets for the dashboards."""
        client = connect(self.settings.clickhouse_dsn, self.settings.clickhouse_database)
        engine, now = self.meter.engine, datetime.now(UTC)
        rows = [
            (customer, limit, hard_cap, engine.currency, now)
            for customer, limit, hard_cap in current_budgets(engine.books, now)
        ]
        client.insert(CUSTOMER_BUDGETS, rows, column_names=BUDGET_COLUMNS)
        return client

    def build_meter(self, resume: bytes | None) -> _MeterLogic:
        if resume is None:
            horizon_us = self.settings.dedupe_horizon // timedelta(microseconds=1)
            runs = self.settings.recovery_dir or self.settings.home
            state = ShardState(DedupeWindow(horizon_us, runs / "dedupe"))
        else:
            state = pickle.loads(resume)
        state.sequencer.feed_from(self.sources)
        return _MeterLogic(self.meter, state)


class _MeterLogic(StatefulBatchLogic[ShardItems, SinkBatch, bytes]):
    def __init__(self, meter: ShardMeter, state: ShardState):
        self.meter = meter
        self.state = state

    def on_batch(self, values: list[ShardItems]) -> tuple[list[SinkBatch], bool]:
        shard = values[0][0]
        if any(p.items for _, p in values):
            records = self._offer(shard, values)
        else:
            records = self._advance(shard, values)
        if not records:
            return [], StatefulBatchLogic.RETAIN
        watch = Stopwatch()
        outcomes = self.meter.meter(shard, self.state, records, watch)
        window = self.state.dedupe
        metrics.record_shard(shard, outcomes, len(window), window.max_event_us)
        metrics.record_parking(shard, outcomes, len(self.state.parked))
        with watch.stage("rows"):
            rows = shard_batch(shard, self.state.positions, outcomes)
        metrics.record_stages(watch)
        return [rows], StatefulBatchLogic.RETAIN

    def _offer(self, shard: str, values: list[ShardItems]) -> list[ShardRecord]:
        """Records in, and those the shard's order releases."""
        watch = Stopwatch()
        sequencer = self.state.sequencer
        with watch.stage("order"):
            behind = sum(sequencer.offer(p.source, p.items, p.bound_ms) for _, p in values)
            records = sequencer.release()
        if behind:
            log.warning(
                "%s: %d records arrived below the frontier; is the broker's clock behind?",
                shard,
                behind,
            )
        metrics.record_order(shard, len(sequencer), behind)
        metrics.record_stages(watch)
        return records

    def _advance(self, shard: str, values: list[ShardItems]) -> list[ShardRecord]:
        """Bounds alone: an idle partition reports one to every shard ten times a second,
        so this is the short way round, timed and counted only when it releases records."""
        sequencer = self.state.sequencer
        for _, p in values:
            sequencer.offer(p.source, p.items, p.bound_ms)
        records = sequencer.release()
        if records:
            metrics.record_order(shard, len(sequencer), 0)
        return records

    def snapshot(self) -> bytes:
        """Pickled now, so later batches cannot change what the snapshot holds; the
        dedupe window seals its epoch's ids into a file first, so the snapshot holds
        only their names (`metering.dedupe`)."""
        watch = Stopwatch()
        with watch.stage("snapshot"):
            self.state.dedupe.seal()
            snapshot = pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        metrics.record_stages(watch)
        return snapshot


def build_flow(
    settings: Settings,
    until: float | None = None,
    on_flush: OnFlush = metrics.record_flush,
    workers: int = 1,
) -> Dataflow:
    """`workers`: of the whole cluster, which a server's sink partitions follow."""
    steps = _Steps(settings)
    flow = Dataflow("meterflow")

    def source(topic: str) -> KafkaBatchSource:
        return KafkaBatchSource(
            settings.kafka_bootstrap,
            topic,
            tail=settings.tail,
            until=until,
            grace=settings.order_grace,
        )

    usage = op.input("usage", flow, source(settings.usage_topic))
    grants = op.input("grants", flow, source(settings.credit_grants_topic))
    catalogue = op.input("catalogue", flow, source(settings.catalogue_topic))
    redrive = op.input("redrive", flow, source(settings.redrive_topic))
    decoded = decode(steps, usage, grants, catalogue, redrive)
    metered = op.stateful_batch("meter", decoded.shards, steps.build_meter)
    rows = op.merge("rows", decoded.audit, metered)
    sink = ClickHouseSink(
        steps.connect_sink,
        settings.sink_batch_rows,
        settings.sink_flush_seconds,
        on_flush,
        sink_partitions(settings, workers),
    )
    op.output("clickhouse", rows, sink)
    bootstrap = settings.kafka_bootstrap
    dead = op.flat_map(
        "dead_letter_messages",
        rows,
        lambda kb: _messages(kb[1], DEAD_LETTERS, _source_key),
    )
    op.output("dead_letter_topic", dead, CheckedTopicSink(bootstrap, settings.dead_letter_topic))
    alerts = op.flat_map(
        "alert_messages", metered, lambda kb: _messages(kb[1], ALERTS, _customer_key)
    )
    op.output("alerts_topic", alerts, CheckedTopicSink(bootstrap, settings.alerts_topic))
    return flow


def sink_partitions(settings: Settings, workers: int) -> int:
    embedded = settings.clickhouse_dsn.startswith("chdb://")
    if embedded and settings.sink_partitions > 1:
        raise ValueError(
            f"METERFLOW_SINK_PARTITIONS is {settings.sink_partitions}, but chDB "
            f"({settings.clickhouse_dsn}) is opened by one process: it takes 1"
        )
    return settings.sink_partitions or (1 if embedded else workers)


def decode(
    steps: _Steps,
    usage: Stream[ConsumedBatch],
    grants: Stream[ConsumedBatch],
    catalogue: Stream[ConsumedBatch],
    redrive: Stream[ConsumedBatch],
) -> DecodedStreams:
    decoded = op.merge(
        "decoded",
        op.map("decode_usage", usage, steps.decode_usage),
        op.map("decode_grants", grants, steps.decode_grants),
        op.map("decode_catalogue", catalogue, steps.decode_catalogue),
        op.map("decode_redrive", redrive, steps.decode_redrive),
    )
    return DecodedStreams(
        audit=op.map("audit", decoded, lambda d: (d.audit.stream, d.audit)),
        shards=op.flat_map(
            "split", decoded, lambda d: [(shard, (shard, part)) for shard, part in d.shards]
        ),
    )


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run "flows.dataflow:flow()"`."""
    settings = Settings()
    process = int(os.environ.get("BYTEWAX_PROCESS_ID", "0"))
    metrics.serve(settings.metrics_host, settings.metrics_port + process)
    collector.tune()
    return build_flow(settings)


def _messages(
    batch: SinkBatch, table: str, key: Callable[[dict[str, Any]], str]
) -> list[tuple[bytes, bytes]]:
    """A table's rows of the batch as JSON messages; bytes as base64, the rest as text."""
    rows = batch.tables.get(table)
    records = [] if rows is None else rows.to_pylist()
    return [(key(r).encode(), json.dumps(r, default=_json_text).encode()) for r in records]


def _source_key(record: dict[str, Any]) -> str:
    """Dead letters are keyed by where they were read, which consumers dedupe on."""
    return f"{record['topic']}/{record['partition']}/{record['offset']}"


def _customer_key(record: dict[str, Any]) -> str:
    return str(record["customer_id"])


def _json_text(value: object) -> str:
    """Bytes as base64, times in RFC 3339, the rest (decimals) as their text."""
    if isinstance(value, bytes):
        return b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
