"""Rows are made by name from the shard's outcomes, as Arrow columns: every money value
reaches ClickHouse to the last digit, whatever the events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.dedupe import DedupeWindow
from metering.rating.books import load_books
from metering.rating.engine import RatingEngine
from metering.records import Consumed, Origin
from metering.shard import ShardMeter, ShardState
from schemas.event import UsageEvent
from sinks.clickhouse import connect
from sinks.rows import shard_batch
from sinks.tables import RATED_USAGE

START = datetime(2026, 11, 3, tzinfo=UTC)
MONEY = ("amount", "discount", "credits_applied", "billable_amount", "cost", "margin")
PRICED = [
    ("llm.tokens", "gpt-4o", "openai", ("input_tokens", "output_tokens", "cached_input_tokens")),
    ("llm.tokens", "claude-sonnet-4", "anthropic", ("input_tokens", "output_tokens")),
    ("gpu.time", "h100", "self-hosted", ("gpu_ms",)),
    ("image.generation", "sdxl", "stability", ("images",)),
]


@st.composite
def usage(draw: st.DrawFn) -> list[UsageEvent]:
    count = draw(st.integers(1, 40))
    events = []
    for i in range(count):
        meter, model, provider, dimensions = draw(st.sampled_from(PRICED))
        quantities = {d: draw(st.integers(0, 10**12)) for d in dimensions}
        events.append(
            UsageEvent(
                f"e{i}",
                START + timedelta(seconds=draw(st.integers(0, 86_400))),
                draw(st.sampled_from(["cust-0001", "cust-0007", "cust-0015", "cust-0020"])),
                meter,
                model,
                provider,
                draw(st.sampled_from(["realtime", "batch"])),
                quantities,
            )
        )
    return events


@pytest.fixture(scope="module")
def client(chdb_path: Path) -> Client:
    return connect(f"chdb://{chdb_path}", f"t_rows_{uuid.uuid4().hex[:12]}")


@settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(usage())
def test_rated_rows_reach_clickhouse_to_the_last_digit(
    client: Client, events: list[UsageEvent]
) -> None:
    meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=600_000_000)
    state = ShardState(DedupeWindow(35 * 86_400 * 10**6))
    records = [Consumed(e, Origin("usage", 0, i, 0)) for i, e in enumerate(events)]
    outcomes = meter.meter("shard", state, records)
    assert len(outcomes.rated) == len(events)
    stream = uuid.uuid4().hex
    rows = shard_batch(stream, state.positions, outcomes).tables[RATED_USAGE]
    client.insert_arrow(RATED_USAGE, pa.Table.from_batches([rows]))

    stored = client.query(
        f"SELECT event_id, quantities, unit_prices, amounts, {', '.join(MONEY)} "
        "FROM rated_usage WHERE stream = %(stream)s ORDER BY position",
        parameters={"stream": stream},
    ).named_results()
    assert list(stored) == [
        {
            "event_id": r.line.event_id,
            "quantities": dict(r.line.quantities),
            "unit_prices": r.line.unit_prices,
            "amounts": r.line.amounts,
            **{name: getattr(r.line, name) for name in MONEY},
        }
        for r in outcomes.rated
    ]
