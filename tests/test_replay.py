"""Replays: the live books reproduce live money exactly, a changed rate moves it by exactly
the hand-computed amount, re-runs replace, and the three sources read what they should."""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from bench.loadgen import LoadSpec, generate, live_start
from bench.wire import Send, WireEncoders
from flows.decode import Shards, split_batch, usage_parser
from flows.settings import Settings
from metering.dedupe import DedupeWindow
from metering.rating.books import CATALOGUE, load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.records import ConsumedBatch, ConsumedGrant, Origin, Record
from metering.shard import ShardMeter, ShardState
from metering.stopwatch import Stopwatch
from reports.event_logs import FileLog, KafkaLog, RawLog
from reports.replay import COLUMNS, replay
from reports.replay_diff import ReplayDiff
from schemas.event import RejectReason, to_micros
from schemas.eventlog import write_event_log
from schemas.serde import Decoder, Encoder
from schemas.validation import TimeBounds
from sinks.batch import SinkBatch
from sinks.clickhouse import connect
from sinks.rows import shard_batch
from sinks.tables import SCHEMAS

TOPIC = "usage"
LIVE_BOUNDS = TimeBounds()
HOUR_US = 3_600_000_000
GRANT_CUSTOMERS = ("cust-0015", "cust-0016")
LIST_PRICED_GPT_4O = {f"cust-{i:04d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 24)}
"""Customers whose realtime gpt-4o is priced by the list price book (shipped catalogue):
not the starter-49 plan's `model: "*"` rates (9-12, 14), the enterprise gpt-4o rate
(13, 19, and 23 since its July 2026 amendment) or the credits tier's own prices (15-18)."""


def run_live(
    client: Client,
    registry: SchemaRegistryClient,
    sends: list[Send],
    grants: Iterable[CreditGrant] = (),
    bounds: TimeBounds = LIVE_BOUNDS,
    partitions: int = 2,
    shards: int = 4,
) -> dict[str, list[dict[str, Any]]]:
    """What the flow does with `sends`, minus Bytewax: bytes keyed by customer onto
    partitions, decoded and split per batch, metered per shard, every row stored."""
    encoders, parse = WireEncoders(registry), usage_parser(Decoder(registry), bounds)
    sharding = Shards(shards, TOPIC)
    meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=HOUR_US // 6)
    states: dict[str, ShardState] = {}
    tables: dict[str, list[pa.RecordBatch]] = {}

    def keep(batch: SinkBatch) -> None:
        for table, rows in batch.tables.items():
            tables.setdefault(table, []).append(rows)

    def store(shard: str, items: list[Any]) -> None:
        state = states.setdefault(shard, ShardState(DedupeWindow(24 * HOUR_US)))
        keep(shard_batch(shard, state.positions, meter.meter(shard, state, items)))

    for offset, grant in enumerate(grants):
        origin = Origin("grants", 0, offset, 0)
        store(sharding.of(grant.customer_id), [ConsumedGrant(grant, origin)])
    offsets = [0] * partitions
    for start in range(0, len(sends), 200):
        pending: dict[int, list[Record]] = {}
        for send in sends[start : start + 200]:
            p = zlib.crc32(send.key.encode()) % partitions
            ms = to_micros(send.sent_at) // 1000
            record = Record(offsets[p], send.key.encode(), encoders.encode(send), ms, ms)
            pending.setdefault(p, []).append(record)
            offsets[p] += 1
        for p, records in pending.items():
            batch = ConsumedBatch(TOPIC, p, records, time.time(), records[-1].order_ms)
            decoded = split_batch(batch, parse, sharding, Stopwatch())
            keep(decoded.audit)
            for shard, part in decoded.shards:
                store(shard, part.items)
    for table, batches in tables.items():
        client.insert_arrow(table, pa.Table.from_batches(batches))
    return {
        table: pa.Table.from_batches(batches).to_pylist(maps_as_pydicts="strict")
        for table, batches in tables.items()
    }


@pytest.fixture(scope="module")
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://"})


@pytest.fixture
def live(
    clickhouse_dsn: str, database: str, registry: SchemaRegistryClient
) -> tuple[Settings, list[Send]]:
    """Seeded traffic of the last hour (duplicates, late, malformed) through the live path."""
    spec = LoadSpec(count=3000, start=live_start(), seed=11, malformed_rate=0.03)
    sends, _ = generate(spec)
    start = spec.start - timedelta(hours=1)
    grants = [CreditGrant(f"g-{c}", c, Decimal(300), start) for c in GRANT_CUSTOMERS]
    settings = Settings(clickhouse_dsn=clickhouse_dsn, clickhouse_database=database)
    run_live(connect(clickhouse_dsn, database), registry, sends, grants)
    return settings, sends


def counts(client: Client, sql: str) -> dict[str, int]:
    return {str(k): int(n) for k, n in client.query(sql).result_rows}


def assert_same_money(diff: ReplayDiff) -> None:
    for c in diff.customers:
        assert c.after == c.before, c.customer_id


def file_log(path: Path, sends: list[Send]) -> Path:
    """The records a file can hold (a contract-shaped body), minus those only a clock rejects."""
    clock = {RejectReason.FUTURE_TIMESTAMP, RejectReason.ANCIENT_TIMESTAMP}
    records = [s.record for s in sends if s.wire in ("v1", "v2") and s.expect not in clock]
    write_event_log(path, records)
    return path


def test_replayed_usage_has_the_columns_the_replay_writes(
    clickhouse_dsn: str, database: str
) -> None:
    client = connect(clickhouse_dsn, database)
    described = client.query("DESCRIBE TABLE replayed_usage").result_rows
    assert tuple(row[0] for row in described) == COLUMNS


def test_a_raw_log_replay_with_the_live_books_reproduces_live_money_and_rejections(
    live: tuple[Settings, list[Send]], registry: SchemaRegistryClient
) -> None:
    settings, sends = live
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    diff = replay(settings, "same", RawLog(client, TOPIC, Decoder(registry)), progress=False)

    assert diff.events == len(sends)
    assert diff.rated == counts(client, "SELECT 'n', count() FROM rated_usage")["n"]
    assert diff.duplicates == counts(client, "SELECT 'n', count() FROM duplicates")["n"]
    assert diff.rejected == counts(client, "SELECT reason, count() FROM dead_letters GROUP BY 1")
    assert_same_money(diff)
    total = diff.total
    assert total.before.credits > 0 and total.before.events == diff.rated


def test_a_file_replay_reproduces_live_money_and_a_changed_rate_moves_it_exactly(
    live: tuple[Settings, list[Send]], tmp_path: Path
) -> None:
    settings, sends = live
    path = file_log(tmp_path / "events.avro", sends)
    assert_same_money(replay(settings, "file", FileLog(path), progress=False))

    old = "rates: {input_tokens: 2.50, output_tokens: 10.00, cached_input_tokens: 1.25}"
    prices = (CATALOGUE / "prices.yaml").read_text()
    assert prices.count(old) == 1  # the realtime gpt-4o list price
    changed = tmp_path / "prices.yaml"
    changed.write_text(prices.replace(old, old.replace("10.00", "12.50")))
    diff = replay(settings, "gpt-4o-output", FileLog(path), prices=changed, progress=False)

    expected: Counter[str] = Counter()
    for r in (s.record for s in sends if s.expect is None and not s.duplicate):
        if (r["model"], r["mode"]) == ("gpt-4o", "realtime") and r[
            "customer_id"
        ] in LIST_PRICED_GPT_4O:
            tokens = r["quantities"].get("output_tokens", 0)
            expected[r["customer_id"]] += Decimal(tokens) * Decimal("2.50") / 10**6
    assert sum(expected.values()) > 0
    for c in diff.customers:
        assert c.after.amount - c.before.amount == expected[c.customer_id], c.customer_id
        assert c.after.cost == c.before.cost and c.after.events == c.before.events
        if c.customer_id in LIST_PRICED_GPT_4O - {"cust-0020"}:  # 0020: 10% discount
            assert c.after.billable - c.before.billable == expected[c.customer_id]


def test_re_running_a_replay_replaces_its_rows_and_leaves_other_replays_alone(
    live: tuple[Settings, list[Send]], tmp_path: Path
) -> None:
    settings, sends = live
    client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    path = file_log(tmp_path / "events.avro", sends)
    other = replay(settings, "other", FileLog(path), progress=False)
    first = replay(settings, "again", FileLog(path), progress=False)
    second = replay(settings, "again", FileLog(path), progress=False)

    assert second == first
    per_replay = "SELECT replay, count() FROM replayed_usage GROUP BY replay"
    assert counts(client, per_replay) == {"again": first.rated, "other": other.rated}
    finished = "SELECT name, count() FROM replays FINAL WHERE finished_at IS NOT NULL GROUP BY 1"
    assert counts(client, finished) == {"again": 1, "other": 1}


def test_first_occurrence_wins_and_a_clockless_file_is_neither_ancient_nor_beyond_horizon(
    clickhouse_dsn: str, database: str, tmp_path: Path
) -> None:
    def record(event_id: str, customer: str, at: datetime, output: int) -> dict[str, Any]:
        quantities = {"input_tokens": 1000, "output_tokens": output}
        return {
            "event_id": event_id,
            "timestamp": at,
            "customer_id": customer,
            "meter": "llm.tokens",
            "model": "gpt-4o",
            "provider": "openai",
            "mode": "realtime",
            "quantities": quantities,
        }

    day = datetime(2025, 6, 10, tzinfo=UTC)
    records = [
        record("e1", "cust-0001", day, 100),
        record("e1", "cust-0001", day, 999),  # a re-send with other contents: loses
        record("e1", "cust-0002", day, 100),  # another customer's id space
        record("e2", "cust-0001", day - timedelta(days=5), 100),  # past the live horizon
        record("e3", "cust-9999", day, 100),
    ]
    path = tmp_path / "small.avro"
    write_event_log(path, records)
    settings = Settings(clickhouse_dsn=clickhouse_dsn, clickhouse_database=database)
    diff = replay(settings, "small", FileLog(path), progress=False)

    assert (diff.rated, diff.duplicates, diff.rejected) == (3, 1, {"unknown_customer": 1})
    client = connect(clickhouse_dsn, database)
    rows = client.query(
        "SELECT quantities['output_tokens'] FROM replayed_usage "
        "WHERE customer_id = 'cust-0001' AND event_id = 'e1'"
    ).result_rows
    assert rows == [(100,)]
    assert diff.total.after.amount == Decimal("0.0025") * 3 + Decimal("0.001") * 3


def test_raw_records_are_judged_by_the_clock_that_received_them(
    clickhouse_dsn: str, database: str, registry: SchemaRegistryClient
) -> None:
    received = datetime(2025, 6, 1, 12, tzinfo=UTC)
    encoder = Encoder(registry)
    times = {
        "ok": received - timedelta(minutes=1),
        "future": received + timedelta(minutes=10),
        "ancient": received - timedelta(days=40),
    }
    rows = []
    for offset, (event_id, at) in enumerate(times.items()):
        value = encoder.encode(
            {
                "event_id": event_id,
                "timestamp": at,
                "customer_id": "cust-0001",
                "meter": "api.call",
                "model": "search-api",
                "provider": "meterflow",
                "mode": "realtime",
                "quantities": {"calls": 1000},
                "properties": {},
            }
        )
        rows.append(
            {
                "stream": TOPIC,
                "position": offset,
                "topic": TOPIC,
                "partition": 0,
                "offset": offset,
                "kafka_timestamp": received,
                "key": "cust-0001",
                "value": value,
                "schema_id": encoder.schema_id,
                "event_id": event_id,
                "customer_id": "cust-0001",
                "received_at": received,
            }
        )
    client = connect(clickhouse_dsn, database)
    client.insert_arrow("raw_events", pa.Table.from_pylist(rows, schema=SCHEMAS["raw_events"]))
    settings = Settings(clickhouse_dsn=clickhouse_dsn, clickhouse_database=database)
    diff = replay(settings, "clock", RawLog(client, TOPIC, Decoder(registry)), progress=False)

    assert diff.rated == 1
    assert diff.rejected == {"future_timestamp": 1, "ancient_timestamp": 1}
    assert diff.total.after.amount == Decimal(5)


@pytest.mark.stack
def test_a_kafka_replay_starts_at_an_offset_or_a_time_and_stops_at_the_end_at_start(
    kafka_bootstrap: str,
    registry_client: SchemaRegistryClient,
    topic_factory: Callable[[int], str],
    clickhouse_dsn: str,
    database: str,
) -> None:
    topic = topic_factory(2)
    encoder = Encoder(registry_client)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

    def produce(first: int, n: int) -> None:
        for i in range(first, first + n):
            at = t0 + timedelta(seconds=i)
            record = {
                "event_id": f"e{i}",
                "timestamp": at,
                "customer_id": "cust-0001",
                "meter": "image.generation",
                "model": "sdxl",
                "provider": "stability",
                "mode": "realtime",
                "quantities": {"images": 1},
                "properties": {},
            }
            producer.produce(topic, encoder.encode(record), partition=i % 2)
        producer.flush(30)

    produce(0, 12)
    time.sleep(0.05)
    twelfth_sent_at = datetime.now(UTC)  # topics carry the broker's append time
    time.sleep(0.05)
    produce(12, 8)
    decoder = Decoder(registry_client)
    by_time = KafkaLog(kafka_bootstrap, topic, decoder, from_time=twelfth_sent_at)
    by_offset = KafkaLog(kafka_bootstrap, topic, decoder, from_offset=7)
    produce(20, 10)  # after the end offsets were taken: not part of either replay

    settings = Settings(clickhouse_dsn=clickhouse_dsn, clickhouse_database=database)
    timed = replay(settings, "by-time", by_time, progress=False)
    assert (timed.events, timed.rated) == (8, 8)
    assert by_time.ranges == [(0, 6, 10), (1, 6, 10)]
    offsets = replay(settings, "by-offset", by_offset, progress=False)
    assert (offsets.events, offsets.rated) == (6, 6)
    assert offsets.total.after.amount == Decimal("0.24")
