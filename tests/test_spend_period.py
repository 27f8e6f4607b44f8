"""The per-period spend roll-up the API reads: filled from rows rated before it existed,
once, and by its view after that."""

from __future__ import annotations

from decimal import Decimal

from sinks.clickhouse import connect, migrate

SOURCE = (
    "SELECT customer_id, toDateTime(period_start, 'UTC'), count(), sum(amount - discount), "
    "sum(credits_applied), sum(billable_amount) FROM rated_usage GROUP BY ALL ORDER BY ALL"
)
ROLLUP = (
    "SELECT customer_id, period_start, sum(events), sum(revenue), sum(credits_applied), "
    "sum(billable_amount) FROM spend_period GROUP BY ALL ORDER BY ALL"
)
TENTH = Decimal("0.1")
CREDIT = [Decimal(f"0.{k}") for k in range(7)]
COLUMNS = ["event_id", "customer_id", "period_start", "amount", "discount", "credits_applied"]


def rows(start: int, count: int) -> list[list[object]]:
    return [
        [
            f"e{i}",
            f"cust-{i % 3}",
            f"2026-{1 + i % 2:02d}-01 00:00:00",
            Decimal(f"1.{i}"),
            TENTH,
            Decimal(f"0.{i % 7}"),
        ]
        for i in range(start, start + count)
    ]


def test_rows_rated_before_the_migration_are_counted_once(
    clickhouse_dsn: str, database: str
) -> None:
    client = connect(clickhouse_dsn, database)
    client.command("DROP VIEW spend_period_mv")
    client.command("DROP TABLE spend_period")
    client.command("DELETE FROM schema_migrations WHERE name = '011_spend_period.sql'")
    client.insert("rated_usage", rows(0, 50), column_names=COLUMNS)
    client.command(
        "ALTER TABLE rated_usage UPDATE billable_amount = amount - discount - credits_applied "
        "WHERE 1 SETTINGS mutations_sync = 1"
    )
    assert migrate(client) == ["011_spend_period.sql"]
    client.command("DELETE FROM schema_migrations WHERE name = '011_spend_period.sql'")
    assert migrate(client) == ["011_spend_period.sql"], "a repeated migration"
    client.insert("rated_usage", rows(50, 30), column_names=COLUMNS)
    before = client.query(SOURCE).result_rows
    assert len(before) == 6
    assert client.query(ROLLUP).result_rows == before
