"""Totals read back from ClickHouse: what the demo, the CLI and the fault tests compare.

Money is summed in ClickHouse Decimal(38, 18) and returned as Decimal strings,
so two runs can be compared to the last digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

MONEY = ("amount", "discount", "credits_applied", "billable_amount", "cost", "margin")


@dataclass(frozen=True)
class UsageSummary:
    quantities: dict[str, int]
    """`customer|meter|model|dimension` -> rated quantity."""
    money: dict[str, dict[str, str]]
    """customer -> money column -> exact decimal string."""
    counts: dict[str, int]
    """rated, duplicates, dead_letters, late_adjustments, alerts."""
    dead_letters: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "quantities": self.quantities,
            "money": self.money,
            "counts": self.counts,
            "dead_letters": self.dead_letters,
        }


def summarize(client: Client) -> UsageSummary:
    rows = client.query(
        "SELECT customer_id, meter, model, dimension, sum(quantity) FROM rated_usage "
        "ARRAY JOIN mapKeys(quantities) AS dimension, mapValues(quantities) AS quantity "
        "GROUP BY ALL ORDER BY ALL"
    ).result_rows
    quantities = {"|".join(row[:4]): int(row[4]) for row in rows}
    sums = ", ".join(f"toString(sum({column}))" for column in MONEY)
    rows = client.query(
        f"SELECT customer_id, {sums} FROM rated_usage GROUP BY customer_id ORDER BY customer_id"
    ).result_rows
    money = {row[0]: dict(zip(MONEY, row[1:], strict=True)) for row in rows}
    counts = {
        table: int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
        for table in ("rated_usage", "duplicates", "dead_letters", "late_adjustments", "alerts")
    }
    rows = client.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows
    return UsageSummary(quantities, money, counts, {reason: int(n) for reason, n in rows})
