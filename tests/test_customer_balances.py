"""The roll-up the API's balance and entitlement read: filled from what was written before
it existed, once, and by its views after that, equal to its four sources."""

from __future__ import annotations

from decimal import Decimal

from clickhouse_connect.driver.client import Client

from sinks.clickhouse import connect, migrate

MIGRATION = "014_customer_balances.sql"
SOURCES = """
SELECT customer_id, period_start, sum(events), sum(revenue), sum(credits), sum(billable),
    sum(granted), sum(expired), sum(caps) FROM (
    SELECT customer_id, toDateTime(period_start, 'UTC') AS period_start, count() AS events,
        sum(amount - discount) AS revenue, sum(credits_applied) AS credits,
        sum(billable_amount) AS billable, toDecimal128(0, 18) AS granted,
        toDecimal128(0, 18) AS expired, toUInt64(0) AS caps
    FROM rated_usage GROUP BY ALL
    UNION ALL SELECT customer_id, toDateTime(0, 'UTC'), 0, 0, 0, 0, sum(amount), 0, 0
    FROM credit_grants GROUP BY ALL
    UNION ALL SELECT customer_id, toDateTime(0, 'UTC'), 0, 0, 0, 0, 0, sum(amount), 0
    FROM credit_expiries GROUP BY ALL
    UNION ALL SELECT customer_id, toDateTime(period_start, 'UTC'), 0, 0, 0, 0, 0, 0, count()
    FROM alerts WHERE kind = 'budget_hard_cap' GROUP BY ALL
) GROUP BY ALL ORDER BY ALL
"""
ROLLUP = """
SELECT customer_id, period_start, sum(events), sum(revenue), sum(credits_applied),
    sum(billable_amount), sum(granted), sum(expired), sum(hard_caps)
FROM customer_balances GROUP BY ALL ORDER BY ALL
"""
TENTH = Decimal("0.1")


RATED = ["event_id", "customer_id", "period_start", "amount", "discount", "credits_applied"]


def write(client: Client, start: int, count: int) -> None:
    rated = []
    for i in range(start, start + count):
        amount, credits = Decimal(f"1.{i}"), Decimal(i % 7) / 10
        period = f"2026-{1 + i % 2:02d}-01"
        rated.append([f"e{i}", f"cust-{i % 3}", period, amount, TENTH, credits, amount - credits])
    client.insert("rated_usage", rated, column_names=[*RATED, "billable_amount"])
    grants = [[f"g{i}", f"cust-{i % 2}", Decimal(5 + i)] for i in range(start, start + 3)]
    for table in ("credit_grants", "credit_expiries"):
        client.insert(table, grants, column_names=["grant_id", "customer_id", "amount"])
    alerts = [
        [f"a{i}", "cust-1", kind, "2026-01-01"]
        for i, kind in enumerate(("budget_hard_cap", "budget_soft"), start)
    ]
    columns = ["alert_id", "customer_id", "kind", "period_start"]
    client.insert("alerts", alerts, column_names=columns)


def test_what_was_written_before_the_migration_counts_once(
    clickhouse_dsn: str, database: str
) -> None:
    client = connect(clickhouse_dsn, database)
    for view in ("rated", "grants", "expiries", "alerts"):
        client.command(f"DROP VIEW customer_balances_{view}_mv")
    client.command("DROP TABLE customer_balances")
    client.command(f"DELETE FROM schema_migrations WHERE name = '{MIGRATION}'")
    write(client, 0, 50)
    assert migrate(client) == [MIGRATION]
    client.command(f"DELETE FROM schema_migrations WHERE name = '{MIGRATION}'")
    assert migrate(client) == [MIGRATION], "a migration repeated after a crash"
    write(client, 50, 30)
    expected = client.query(SOURCES).result_rows
    assert len(expected) == 8  # 3 customers x 2 periods, 2 with grants, 1 hard cap in Jan
    assert client.query(ROLLUP).result_rows == expected
