"""The flow publishes the catalogue's budgets to ClickHouse for the spend dashboard."""

from decimal import Decimal

from flows.dataflow import _Steps
from flows.settings import Settings


def test_the_sink_connection_publishes_current_budgets(clickhouse_dsn: str, database: str) -> None:
    settings = Settings(clickhouse_dsn=clickhouse_dsn, clickhouse_database=database)
    client = _Steps(settings).connect_sink()
    rows = client.query(
        "SELECT customer_id, budget, hard_cap, currency FROM customer_budgets FINAL "
        "ORDER BY customer_id"
    ).result_rows
    assert ("cust-0018", Decimal(100), True, "USD") in rows
    assert all(budget > 0 for _, budget, _, _ in rows)
    assert "cust-0001" not in {customer for customer, *_ in rows}
