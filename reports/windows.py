"""One customer's usage and money per time window and group, from the roll-ups.

Grouped by meter and model (or not at all) it reads `usage_minute`, which the flow fills
as it inserts rated rows, so a month of one customer is at most 44,640 rows per model
and meter, whatever the traffic. Grouping by feature or project needs columns the
roll-up does not keep; it reads `rated_usage`, whose primary key starts with the
customer. `month` windows are the customer's billing periods (UTC, from the contract's
anchor), folded from day windows here, exactly, in `Decimal`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from metering.rating.contracts import Customer
from metering.rating.money import ZERO, fmt
from schemas.event import from_micros, to_micros

WINDOWS = ("minute", "hour", "day", "month")
GROUPS = ("meter", "model", "feature", "project")
MONEY = ("amount", "discount", "credits_applied", "billable_amount", "cost", "margin")
_ROLLUP_GROUPS = frozenset({"meter", "model"})
_BUCKET = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}
_COLUMN = {"meter": "meter", "model": "model", "feature": "feature", "project": "project_id"}


@dataclass
class Window:
    start: datetime
    group: dict[str, str | None]
    events: int = 0
    quantities: dict[str, int] = field(default_factory=dict)
    money: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(MONEY, ZERO))

    def add(self, events: int, quantities: dict[str, int], money: Sequence[Decimal]) -> None:
        self.events += events
        for dimension, quantity in quantities.items():
            self.quantities[dimension] = self.quantities.get(dimension, 0) + quantity
        for name, value in zip(MONEY, money, strict=True):
            self.money[name] += value

    def to_json(self) -> dict[str, Any]:
        money = self.money
        return {
            "window_start": self.start.isoformat(),
            **self.group,
            "events": self.events,
            "quantities": dict(sorted(self.quantities.items())),
            **{name: fmt(value) for name, value in money.items()},
            "revenue": fmt(money["amount"] - money["discount"]),
        }


@dataclass(frozen=True)
class UsageQuery:
    customer: Customer
    start: datetime
    end: datetime
    window: str = "day"
    group_by: tuple[str, ...] = ()
    meter: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        unknown = set(self.group_by) - set(GROUPS)
        if unknown:
            raise ValueError(f"group_by takes {', '.join(GROUPS)}, not {', '.join(unknown)}")
        if self.end <= self.start:
            raise ValueError("'to' must be after 'from'")


def usage_windows(client: Client, query: UsageQuery) -> list[Window]:
    """Windows in time order, then by group; only windows with usage."""
    groups = [g for g in GROUPS if g in query.group_by]
    bucket = _BUCKET["day" if query.window == "month" else query.window]
    rollup = set(groups) <= _ROLLUP_GROUPS
    table, time = ("usage_minute", "minute") if rollup else ("rated_usage", "timestamp")
    quantities = "quantities" if rollup else "CAST(quantities, 'Map(String, UInt64)')"
    events = "sum(events)" if rollup else "count()"
    filters = [
        "customer_id = %(customer)s",
        f"{time} >= fromUnixTimestamp64Micro(%(start)s, 'UTC')",
        f"{time} < fromUnixTimestamp64Micro(%(end)s, 'UTC')",
    ]
    params: dict[str, Any] = {
        "customer": query.customer.id,
        "start": to_micros(query.start),
        "end": to_micros(query.end),
    }
    for name in ("meter", "model"):
        if (value := getattr(query, name)) is not None:
            filters.append(f"{name} = %({name})s")
            params[name] = value
    keys = [f"{_COLUMN[g]} AS {g}" for g in groups]
    sums = ", ".join(f"sum({m})" for m in MONEY)
    rows = client.query(
        f"SELECT toUnixTimestamp({bucket}({time})) AS bucket, {', '.join([*keys, ''])}"
        f"{events}, sumMap({quantities}), {sums} FROM {table} "
        f"WHERE {' AND '.join(filters)} GROUP BY ALL ORDER BY ALL",
        parameters=params,
    ).result_rows
    return _fold(rows, groups, query)


def _fold(rows: Iterable[Sequence[Any]], groups: list[str], query: UsageQuery) -> list[Window]:
    windows: dict[tuple[Any, ...], Window] = {}
    for row in rows:
        start = datetime.fromtimestamp(row[0], UTC)
        if query.window == "month":
            start = from_micros(query.customer.billing.period(to_micros(start))[0])
        group = dict(zip(groups, row[1 : 1 + len(groups)], strict=True))
        key = (start, *group.values())
        window = windows.get(key)
        if window is None:
            window = windows[key] = Window(start, group)
        n = 1 + len(groups)
        window.add(int(row[n]), dict(row[n + 1]), row[n + 2 :])
    return list(windows.values())


def totals(windows: Iterable[Window]) -> dict[str, str]:
    """Every money column over all windows, exact."""
    total = Window(datetime.min.replace(tzinfo=UTC), {})
    for w in windows:
        total.add(w.events, w.quantities, [w.money[m] for m in MONEY])
    body = total.to_json()
    return {key: body[key] for key in ("events", *MONEY, "revenue")}
