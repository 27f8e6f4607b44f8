"""Usage statements: totals equal the rated rows to the cent, late adjustments are billed
once on the next statement, allowances and fees as worked by hand, and the three renderings."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from test_replay import run_live

from bench.loadgen import LoadSpec, generate
from bench.wire import Send, Wire
from metering.rating.books import Books, load_books
from metering.rating.engine import RatingEngine
from reports.statement import render_text, statement, to_json, write_csv, write_json
from reports.statement_billing import billing_period
from reports.statement_model import Statement
from schemas.validation import TimeBounds
from sinks.clickhouse import connect
from sinks.tables import LATE_ADJUSTMENTS, RATED_USAGE

PAST = TimeBounds(max_age=None)
"""The flow's bounds minus the age limit: the test months are behind the wall clock."""
JUNE = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def books() -> Books:
    return load_books()


@pytest.fixture(scope="module")
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://"})


Rows = dict[str, list[dict[str, Any]]]


def as_dicts(rows: Rows, table: str) -> list[dict[str, Any]]:
    return rows.get(table, [])


def billed_in(rows: Rows, customer: str, start: datetime, end: datetime) -> list[Decimal]:
    """Billable amounts a statement of [start, end) must bill, from the rows the flow wrote:
    usage of the period that was not a late adjustment, and the late adjustments whose
    watermark fell in the period."""
    usage = [
        r["billable_amount"]
        for r in as_dicts(rows, RATED_USAGE)
        if r["customer_id"] == customer and r["period_start"] == start and not r["adjustment"]
    ]
    late = [
        r["billable_amount"]
        for r in as_dicts(rows, LATE_ADJUSTMENTS)
        if r["customer_id"] == customer and start <= r["watermark"] < end
    ]
    return usage + late


def test_statement_totals_equal_the_rated_rows_to_the_cent_and_bill_every_row_once(
    clickhouse_dsn: str, database: str, registry: SchemaRegistryClient, books: Books
) -> None:
    spec = LoadSpec(
        count=4000,
        start=JUNE - timedelta(hours=2),
        span=timedelta(hours=4),
        seed=5,
        late_rate=0.05,
        malformed_rate=0,
    )
    sends, _ = generate(spec)
    client = connect(clickhouse_dsn, database)
    rows = run_live(client, registry, sends, bounds=PAST)
    assert rows[LATE_ADJUSTMENTS], "the data must cross a period boundary late"
    engine = RatingEngine(books)

    billed_events = 0
    for customer in sorted({r["customer_id"] for r in as_dicts(rows, RATED_USAGE)}):
        periods = {billing_period(books, customer, d) for d in ("2026-05-31", "2026-06-01")}
        for start, end in periods:
            s = statement(client, books, customer, start.date().isoformat())
            fees = sum((f.amount for f in engine.period_fees(customer, start)), Decimal(0))
            want = sum(billed_in(rows, customer, start, end), Decimal(0)) + fees
            assert s.total == want, (customer, start)
            assert s.total_due == want.quantize(Decimal("0.01"))
            billed_events += s.usage.events + s.adjusted.events
    assert billed_events == len(rows[RATED_USAGE])


def send(event_id: str, customer: str, at: datetime, quantities: dict[str, int]) -> Send:
    record = {
        "event_id": event_id,
        "timestamp": at,
        "customer_id": customer,
        "project_id": None,
        "feature": None,
        "meter": "llm.tokens",
        "model": "gpt-4o",
        "provider": "openai",
        "mode": "realtime",
        "quantities": quantities,
        "properties": {},
        "region": None,
    }
    return Send(at, customer, Wire.V2, record)


@pytest.fixture
def worked(
    clickhouse_dsn: str, database: str, registry: SchemaRegistryClient, books: Books
) -> Statement:
    """cust-0009 on starter-49: 49.00 a month, 500,000 llm.tokens included, then
    0.015 input and 0.030 output per thousand tokens."""
    at = JUNE + timedelta(days=3)
    sends = [
        send("a", "cust-0009", at, {"input_tokens": 400_000}),
        send("b", "cust-0009", at + timedelta(minutes=1), {"output_tokens": 300_000}),
        send("c", "cust-0001", at, {"input_tokens": 1_000_000, "output_tokens": 100_000}),
    ]
    client = connect(clickhouse_dsn, database)
    run_live(client, registry, sends, bounds=PAST)
    return statement(client, books, "cust-0009", "2026-06")


def test_allowance_overage_and_base_fee_as_worked_by_hand(worked: Statement) -> None:
    # Pool gross 400k x 0.015/1k + 300k x 0.030/1k = 15.00 for 700k tokens, 200k beyond
    # the 500k included: 15 x 200/700 = 4.285714285714285714(2857...) at 18 places.
    overage = Decimal("4.285714285714285714")
    (o,) = worked.overages
    assert (o.meter, o.contract_version, o.included, o.used, o.over) == (
        "llm.tokens",
        "C-0009",
        Decimal(500_000),
        700_000,
        Decimal(200_000),
    )
    assert o.amount == overage == worked.usage.amount == worked.usage.billable
    assert [f.amount for f in worked.fees] == [Decimal(49)]
    assert worked.total == overage + 49 and worked.total_due == Decimal("53.29")
    (line,) = worked.lines
    assert [(d.dimension, d.quantity, d.per) for d in line.dimensions] == [
        ("input_tokens", 400_000, "million"),
        ("output_tokens", 300_000, "million"),
    ]
    assert sum(d.amount for d in line.dimensions) == overage


def test_flat_list_prices_show_as_the_book_rates(
    worked: Statement, clickhouse_dsn: str, database: str, books: Books
) -> None:
    s = statement(connect(clickhouse_dsn, database), books, "cust-0001", "2026-06-04")
    (line,) = s.lines
    assert [(d.dimension, d.unit_price, d.amount) for d in line.dimensions] == [
        ("input_tokens", Decimal("2.5"), Decimal("2.5")),
        ("output_tokens", Decimal(10), Decimal(1)),
    ]
    assert (s.overages, s.fees, s.total_due) == ((), (), Decimal("3.50"))


def test_text_csv_and_json_carry_the_same_figures(worked: Statement) -> None:
    text = render_text(worked)
    assert "Base fee C-0009" in text and text.splitlines()[-1].split() == ["Total", "due", "53.29"]

    out = io.StringIO()
    write_csv(worked, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    items = sum(Decimal(r["amount"]) for r in rows if r["section"] == "item")
    assert items == worked.usage.amount
    assert [r["billable_amount"] for r in rows if r["section"] in ("total", "total_due")] == [
        "53.285714285714285714",
        "53.29",
    ]

    out = io.StringIO()
    write_json(worked, out)
    document = json.loads(out.getvalue())
    assert document == to_json(worked)
    assert (document["total"], document["total_due"]) == ("53.285714285714285714", "53.29")
    assert document["overages"][0]["over"] == "200000"


def test_periods_by_month_or_by_a_date_inside_an_anchored_period(books: Books) -> None:
    def period(customer: str, text: str) -> tuple[str, str]:
        start, end = billing_period(books, customer, text)
        return start.date().isoformat(), end.date().isoformat()

    assert period("cust-0001", "2026-06") == ("2026-06-01", "2026-07-01")
    assert period("cust-0011", "2026-06-20") == ("2026-06-15", "2026-07-15")  # anchor: 15th
    assert period("cust-0019", "2026-05") == ("2026-05-01", "2026-08-01")  # quarterly from Feb
    with pytest.raises(ValueError, match="2026-05-15 to 2026-06-15"):
        billing_period(books, "cust-0011", "2026-06")
    with pytest.raises(ValueError, match="not in the contracts catalogue"):
        billing_period(books, "cust-9999", "2026-06")
