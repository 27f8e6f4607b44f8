"""What a replay changes: its totals per customer against live rated_usage over the
same scope (the same topic offsets for a Kafka or raw-log replay, the same event-time
span for a file), and the table `meterflow replay` prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from metering.rating.money import to_cents
from metering.rating.totals import Totals
from reports.text_table import format_table
from schemas.event import to_micros


@dataclass(frozen=True, slots=True)
class CustomerDiff:
    customer_id: str
    before: Totals
    """Live rated_usage, over the replay's scope."""
    after: Totals
    """The replay."""


@dataclass(frozen=True)
class ReplayDiff:
    name: str
    source: str
    events: int
    """Records read."""
    rated: int
    duplicates: int
    rejected: dict[str, int]
    customers: list[CustomerDiff]

    @property
    def total(self) -> CustomerDiff:
        before, after = Totals(), Totals()
        for c in self.customers:
            before, after = before + c.before, after + c.after
        return CustomerDiff("total", before, after)

    def lines(self) -> list[str]:
        """The diff as a table, money rounded to cents for display only."""
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        out = [
            f"replay {self.name}: {self.events} records from {self.source}",
            f"  {self.rated} rated, {self.duplicates} duplicates, "
            f"{sum(self.rejected.values())} rejected{f' ({rejected})' if rejected else ''}",
        ]
        head = ["customer", "events", "amount live", "replay", "change"]
        head += ["billable live", "replay", "change", "cost change"]
        out += format_table([head, *(_cells(c) for c in [*self.customers, self.total])])
        return out


def _cells(c: CustomerDiff) -> list[str]:
    b, a = c.before, c.after
    events = str(a.events) if a.events == b.events else f"{b.events}->{a.events}"
    money = [b.amount, a.amount, a.amount - b.amount, b.billable, a.billable]
    money += [a.billable - b.billable, a.cost - b.cost]
    return [c.customer_id, events, *(str(to_cents(m)) for m in money)]


_SUMS = "count(), sum(amount), sum(discount), sum(credits_applied), sum(billable_amount), sum(cost)"
_IN_RANGES = (
    "topic = %(topic)s AND "
    "arrayExists(r -> r.1 = partition AND offset >= r.2 AND offset < r.3, %(ranges)s)"
)
_IN_SPAN = "toUnixTimestamp64Micro(timestamp) BETWEEN %(first)s AND %(last)s"


def diff(client: Client, name: str) -> ReplayDiff:
    """The finished replay `name` against live rated_usage over the same scope: the same
    topic offsets for a Kafka or raw-log replay, the same event-time span for a file."""
    found = client.query(
        "SELECT source, finished_at, events, rated, duplicates, rejected, topic, ranges, "
        "first_event, last_event FROM replays FINAL WHERE name = %(name)s",
        parameters={"name": name},
        tz_mode="aware",
    ).result_rows
    if not found:
        raise LookupError(f"no replay named {name!r}")
    source, finished, events, rated, duplicates, rejected, topic, ranges, first, last = found[0]
    if finished is None:
        raise RuntimeError(f"replay {name!r} did not finish; run it again")
    scope = {
        "topic": topic,
        "ranges": [tuple(r) for r in ranges],
        "first": None if first is None else to_micros(first),
        "last": None if last is None else to_micros(last),
    }
    before = _totals(client, "rated_usage", _IN_RANGES if topic else _IN_SPAN, scope)
    after = _totals(client, "replayed_usage", "replay = %(name)s", {"name": name})
    customers = [
        CustomerDiff(c, before.get(c, Totals()), after.get(c, Totals()))
        for c in sorted(before.keys() | after.keys())
    ]
    return ReplayDiff(name, source, events, rated, duplicates, dict(rejected), customers)


def _totals(
    client: Client, table: str, where: str, parameters: dict[str, Any]
) -> dict[str, Totals]:
    rows = client.query(
        f"SELECT customer_id, {_SUMS} FROM {table} WHERE {where} GROUP BY customer_id",
        parameters=parameters,
    ).result_rows
    return {row[0]: Totals(int(row[1]), *row[2:]) for row in rows}
