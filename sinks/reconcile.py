"""`meterflow reconcile`: prove every consumed offset has exactly one outcome.

The raw event log holds every consumed record; rated usage, duplicates, dead
letters and usage parked for a customer not in the catalogue yet each name the offset
they account for. An offset with no outcome is a
gap (lost revenue), one with two is a double count, an outcome without a raw
record is an orphan, and a partition whose log stops short of Kafka's end has
records not consumed yet. Each materialized view must also count what its table
holds: a view short of its table missed an insert.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

_OUTCOMES = """
    SELECT partition, offset, multiIf(adjustment, 'adjustment', late, 'late', 'rated') AS outcome
    FROM rated_usage WHERE topic = %(topic)s
    UNION ALL
    SELECT partition, offset, if(conflicting, 'conflicting_duplicate', 'duplicate')
    FROM duplicates WHERE topic = %(topic)s
    UNION ALL
    SELECT partition, offset, 'dead_letter' FROM dead_letters WHERE topic = %(topic)s
    UNION ALL
    SELECT partition, offset, 'parked' FROM parked_usage WHERE topic = %(topic)s
    GROUP BY partition, offset HAVING max(action = 'parked') AND NOT max(action != 'parked')
"""
"""Usage parked for a customer not in the catalogue yet is accounted for while it is held;
once released it is rated, once past the bound dead-lettered."""

_VIEWS = {
    "usage_minute": ("sum(events)", "rated_usage", "count()"),
    "revenue_daily": ("sum(events)", "rated_usage", "count()"),
    "spend_minute": ("sum(events)", "rated_usage", "count()"),
    "customer_balances": ("sum(events)", "rated_usage", "count()"),
    "alerts_minute": ("sum(alerts)", "alerts", "count()"),
    "outcomes_minute": (
        "sum(events)",
        "(SELECT 1 FROM rated_usage UNION ALL SELECT 1 FROM "
        "duplicates UNION ALL SELECT 1 FROM dead_letters)",
        "count()",
    ),
}
"""view -> what it counts, and the same counted in the rows it is made from."""


@dataclass
class Reconciliation:
    topic: str
    consumed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    doubles: list[tuple[int, int, list[str]]] = field(default_factory=list)
    orphans: list[tuple[int, int]] = field(default_factory=list)
    behind: dict[int, int] = field(default_factory=dict)
    views_short: dict[str, int] = field(default_factory=dict)
    """view -> rows of its table it has not counted (negative: counted twice)."""
    redriven: int = 0
    """Dead letters of this topic rated since through the redrive topic (`redrive_of`)."""

    @property
    def ok(self) -> bool:
        accounted = sum(self.outcomes.values()) == self.consumed
        faults = self.gaps or self.doubles or self.orphans or self.behind
        return accounted and not faults and not any(self.views_short.values())

    def lines(self) -> list[str]:
        out = [f"topic {self.topic}: {self.consumed} records consumed"]
        out += [f"  {name:<12} {count}" for name, count in sorted(self.outcomes.items())]
        out += [f"    dead letter {reason}: {n}" for reason, n in sorted(self.dead_letters.items())]
        if self.redriven:
            out.append(f"    of which redriven and rated: {self.redriven}")
        out.append(f"  gaps (no outcome): {len(self.gaps)} {self.gaps[:5]}")
        out.append(f"  double outcomes: {len(self.doubles)} {self.doubles[:5]}")
        out.append(f"  orphan outcomes: {len(self.orphans)} {self.orphans[:5]}")
        out.append(f"  partitions not fully consumed: {self.behind or 'none'}")
        short = {view: n for view, n in self.views_short.items() if n}
        out.append(f"  views that differ from their tables: {short or 'none'}")
        out.append(
            "  every consumed offset is accounted for" if self.ok else "  RECONCILIATION FAILED"
        )
        return out


def reconcile(client: Client, topic: str, end_offsets: dict[int, int]) -> Reconciliation:
    """Check the tables against each other and against Kafka's end offsets (next offset)."""
    p = {"topic": topic}
    result = Reconciliation(topic)
    count = client.query("SELECT count() FROM raw_events WHERE topic = %(topic)s", parameters=p)
    result.consumed = count.result_rows[0][0]
    rows = client.query(
        f"SELECT outcome, count() FROM ({_OUTCOMES}) GROUP BY outcome", parameters=p
    )
    result.outcomes = {outcome: n for outcome, n in rows.result_rows}
    rows = client.query(
        "SELECT reason, count() FROM dead_letters WHERE topic = %(topic)s GROUP BY reason",
        parameters=p,
    )
    result.dead_letters = {reason: n for reason, n in rows.result_rows}
    rows = client.query(
        f"""
        SELECT r.partition, r.offset, groupArrayIf(o.outcome, o.outcome != '') AS outs
        FROM (SELECT partition, offset FROM raw_events WHERE topic = %(topic)s) AS r
        LEFT JOIN ({_OUTCOMES}) AS o ON r.partition = o.partition AND r.offset = o.offset
        GROUP BY r.partition, r.offset
        HAVING length(outs) != 1
        ORDER BY r.partition, r.offset
        """,
        parameters=p,
    )
    for partition, offset, outs in rows.result_rows:
        if outs:
            result.doubles.append((partition, offset, list(outs)))
        else:
            result.gaps.append((partition, offset))
    rows = client.query(
        f"""
        SELECT o.partition, o.offset FROM ({_OUTCOMES}) AS o
        LEFT ANTI JOIN (SELECT partition, offset FROM raw_events WHERE topic = %(topic)s) AS r
            ON r.partition = o.partition AND r.offset = o.offset
        ORDER BY o.partition, o.offset
        """,
        parameters=p,
    )
    result.orphans = [(partition, offset) for partition, offset in rows.result_rows]
    rows = client.query(
        "SELECT partition, max(offset) + 1, count() FROM raw_events WHERE topic = %(topic)s "
        "GROUP BY partition",
        parameters=p,
    )
    consumed_to = {partition: (end, n) for partition, end, n in rows.result_rows}
    for partition, end in end_offsets.items():
        next_offset, count = consumed_to.get(partition, (0, 0))
        if next_offset < end or count != next_offset:
            result.behind[partition] = end - count
    result.views_short = views_short(client)
    rows = client.query(
        "SELECT count() FROM rated_usage WHERE startsWith(redrive_of, %(prefix)s)",
        parameters={"prefix": f"{topic}/"},
    )
    result.redriven = rows.result_rows[0][0]
    return result


def views_short(client: Client) -> dict[str, int]:
    """Per view, how many of its table's rows it has not counted."""
    short = {}
    for view, (counted, source, expected) in _VIEWS.items():
        query = f"SELECT (SELECT {expected} FROM {source}) - (SELECT {counted} FROM {view})"
        short[view] = int(client.query(query).result_rows[0][0])
    return short
