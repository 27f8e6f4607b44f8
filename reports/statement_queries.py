"""The SQL behind a usage statement: one customer's rated rows of one period, summed
the ways the statement shows them, with its recurring readings and its corrections."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from metering.rating.engine import RatingEngine
from metering.rating.recurring import Reading
from reports.statement_model import Correction

_USAGE = (
    "customer_id = %(customer)s AND NOT adjustment "
    "AND period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC')"
)
_MONEY = "count(), sum(amount), sum(discount), sum(credits_applied), sum(billable_amount)"


@dataclass(frozen=True, slots=True)
class PeriodRows:
    """Result rows by position, as ClickHouse returns them."""

    uses: Sequence[Sequence[Any]]
    """meter, model, mode, contract_version, dimension, quantity, amount."""
    money: Sequence[Sequence[Any]]
    """meter, model, mode, then the money sums."""
    adjustments: Sequence[Sequence[Any]]
    """original_period_start, meter, model, then the money sums."""
    charges: Sequence[Sequence[Any]]
    """meter, model, kind, amount."""
    by_version: Sequence[Sequence[Any]]
    """contract_version, then the money sums."""


def period_rows(client: Client, params: dict[str, Any]) -> PeriodRows:
    """The period's usage (late adjustments apart) and the late usage of earlier periods
    that arrived inside it; `params` names the customer and the period's start and end."""
    uses = client.query(
        "SELECT meter, model, mode, contract_version, dimension, "
        "sum(quantities[dimension]), sum(amounts[dimension]) FROM rated_usage "
        f"ARRAY JOIN mapKeys(quantities) AS dimension WHERE {_USAGE} GROUP BY ALL ORDER BY ALL",
        parameters=params,
    ).result_rows
    money = client.query(
        f"SELECT meter, model, mode, {_MONEY} FROM rated_usage WHERE {_USAGE} "
        "GROUP BY ALL ORDER BY ALL",
        parameters=params,
    ).result_rows
    adjustments = client.query(
        f"SELECT original_period_start, meter, model, {_MONEY} FROM late_adjustments "
        "WHERE customer_id = %(customer)s "
        "AND toUnixTimestamp64Micro(watermark) >= %(start)s "
        "AND toUnixTimestamp64Micro(watermark) < %(end)s "
        "AND toUnixTimestamp64Micro(original_period_start) < %(start)s "
        "GROUP BY ALL ORDER BY ALL",
        parameters=params,
        tz_mode="aware",
    ).result_rows
    charges = client.query(
        "SELECT meter, model, kind, sum(charges[kind]) FROM rated_usage "
        f"ARRAY JOIN mapKeys(charges) AS kind WHERE {_USAGE} GROUP BY ALL ORDER BY ALL",
        parameters=params,
    ).result_rows
    by_version = client.query(
        f"SELECT contract_version, {_MONEY} FROM rated_usage WHERE {_USAGE} GROUP BY ALL",
        parameters=params,
    ).result_rows
    return PeriodRows(uses, money, adjustments, charges, by_version)


def readings(client: Client, engine: RatingEngine, params: dict[str, Any]) -> list[Reading]:
    """The readings of recurring meters in the period, and the last of each before it."""
    pairs = client.query(
        "SELECT DISTINCT meter, model FROM rated_usage WHERE customer_id = %(customer)s "
        "AND toUnixTimestamp64Micro(timestamp) < %(end)s",
        parameters=params,
    ).result_rows
    levels = [(meter, model) for meter, model in pairs if engine.reads_level(meter, model)]
    if not levels:
        return []
    columns = (
        "SELECT toUnixTimestamp64Micro(timestamp), event_id, meter, model, mode, quantities "
        "FROM rated_usage WHERE customer_id = %(customer)s AND corrects IS NULL "
        "AND (meter, model) IN %(levels)s AND toUnixTimestamp64Micro(timestamp)"
    )
    where = {**params, "levels": levels}
    inside = client.query(
        f"{columns} >= %(start)s AND toUnixTimestamp64Micro(timestamp) < %(end)s",
        parameters=where,
    ).result_rows
    before = client.query(
        f"{columns} < %(start)s "
        "ORDER BY timestamp DESC, event_id DESC LIMIT 1 BY meter, model, mode",
        parameters=where,
    ).result_rows
    return [Reading(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in [*before, *inside]]


def corrections(client: Client, params: dict[str, Any]) -> Iterable[Correction]:
    rows = client.query(
        "SELECT event_id, corrects, meter, model, amount FROM rated_usage "
        f"WHERE {_USAGE} AND corrects IS NOT NULL ORDER BY timestamp, event_id",
        parameters=params,
    ).result_rows
    if not rows:
        return
    originals: dict[str, Decimal] = dict(
        client.query(
            "SELECT event_id, sum(amount) FROM rated_usage WHERE customer_id = %(customer)s "
            "AND event_id IN %(ids)s GROUP BY event_id",
            parameters={**params, "ids": sorted({row[1] for row in rows})},
        ).result_rows  # type: ignore[arg-type]
    )
    for event_id, corrects, meter, model, amount in rows:
        yield Correction(event_id, corrects, meter, model, amount, originals.get(corrects))
