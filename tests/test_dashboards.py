"""Every Grafana panel and variable query runs on real ClickHouse (chDB) over realistic data,
and the analytics roll-ups (sinks/migrations/005_analytics.sql) are exact."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from bench.loadgen import LoadSpec, generate
from bench.usage_mix import customer_ids
from bench.wire import Wire
from flows.decode import Shards
from metering.dedupe import DedupeWindow
from metering.outcomes import DeadLetter
from metering.rating.books import load_books
from metering.rating.credits import CreditGrant
from metering.rating.engine import RatingEngine
from metering.records import Consumed, ConsumedGrant, Origin
from metering.shard import ShardMeter, ShardState
from schemas.event import Rejection, UsageEvent
from schemas.validation import TimeBounds, validate
from sinks.batch import SinkBatch
from sinks.clickhouse import connect
from sinks.rows import dead_letter_columns, shard_batch
from sinks.tables import RATED_USAGE
from sinks.writer import ClickHouseSink

GRAFANA = Path(__file__).resolve().parent.parent / "infra" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
CLICKHOUSE = "grafana-clickhouse-datasource"
PROMETHEUS = "prometheus"

START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
"""An hour before a month starts: late events land in the closed period as adjustments."""
SHARDS = 4
GRANTED = customer_ids()[14:18]
"""Customers on the credits plan: their grants draw down and raise credit alerts."""
USAGE = "usage-events"
UNDECODABLE = (Wire.RAW, Wire.TRUNCATED)
"""Sends whose bytes fail before validation: their expected reason is the decoder's."""


# Grafana's side: template variables, then the ClickHouse plugin's macros (pkg/macros).


@dataclass(frozen=True)
class Dashboard:
    """What Grafana substitutes into a query: the time range, interval and `$customer`."""

    start: datetime
    end: datetime
    interval_s: int
    customers: tuple[str, ...]
    all_customers: bool


def expand(sql: str, ctx: Dashboard) -> str:
    """The SQL the plugin sends for `sql`; unknown macros or variables fail loudly."""
    sql = _conditional_all(sql, ctx)
    sql = sql.replace("${customer:singlequote}", ",".join(f"'{c}'" for c in ctx.customers))
    sql = re.sub(r"\$\{customer\}|\$customer\b", ",".join(ctx.customers), sql)
    parts, pos = [], 0
    while match := _MACRO.search(sql, pos):
        parts.append(sql[pos : match.start()])
        if sql.startswith("(", match.end()):
            args, pos = _call(sql, match.end())
        else:
            args, pos = [], match.end()
        parts.append(_macro(match.group(1), args, ctx))
    sql = "".join(parts) + sql[pos:]
    if "$" in sql:
        raise ValueError(f"unexpanded variable or macro in {sql}")
    return sql


_MACRO = re.compile(r"\$__(\w+)")


def _call(sql: str, open_at: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose '(' is at `open_at`, and where it ends."""
    depth, start = 0, open_at + 1
    args: list[str] = []
    for i in range(open_at, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                return [*args, sql[start:i].strip()], i + 1
        elif sql[i] == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise ValueError(f"unbalanced parentheses in {sql}")


def _conditional_all(sql: str, ctx: Dashboard) -> str:
    """`$__conditionalAll(cond, $var)` is `1=1` when All is selected (the plugin's frontend)."""
    marker = "$__conditionalAll("
    while (at := sql.find(marker)) >= 0:
        (condition, variable), end = _call(sql, at + len(marker) - 1)
        assert variable == "$customer", f"unknown variable {variable}"
        sql = sql[:at] + ("1=1" if ctx.all_customers else condition) + sql[end:]
    return sql


def _macro(name: str, args: list[str], ctx: Dashboard) -> str:
    frm, to = int(ctx.start.timestamp()), int(ctx.end.timestamp())
    if not args:
        bare = {
            "fromTime": f"toDateTime({frm})",
            "toTime": f"toDateTime({to})",
            "fromTime_ms": f"fromUnixTimestamp64Milli({frm * 1000})",
            "toTime_ms": f"fromUnixTimestamp64Milli({to * 1000})",
            "interval_s": str(ctx.interval_s),
        }
        return bare[name]
    (col,) = args
    day_from, day_to = f"toDate('{ctx.start:%Y-%m-%d}')", f"toDate('{ctx.end:%Y-%m-%d}')"
    with_column = {
        "timeFilter": f"{col} >= toDateTime({frm}) AND {col} <= toDateTime({to})",
        "timeFilter_ms": (
            f"{col} >= fromUnixTimestamp64Milli({frm * 1000}) "
            f"AND {col} <= fromUnixTimestamp64Milli({to * 1000})"
        ),
        "dateFilter": f"{col} >= {day_from} AND {col} <= {day_to}",
        "timeInterval": f"toStartOfInterval(toDateTime({col}), INTERVAL {ctx.interval_s} second)",
    }
    return with_column[name]


# Demo data: generated traffic through the real metering and the real sink.


@dataclass(frozen=True)
class Demo:
    client: Client
    batches: list[SinkBatch]
    rows: dict[str, list[dict[str, Any]]]


def _demo_batches() -> list[SinkBatch]:
    sends, _ = generate(LoadSpec(count=3000, start=START, seed=11, span=timedelta(hours=2)))
    meter = ShardMeter(RatingEngine(load_books()), allowed_lateness_us=600_000_000)
    states: dict[str, ShardState] = defaultdict(lambda: ShardState(DedupeWindow(24 * 3600 * 10**6)))
    pending: dict[str, list[Consumed | ConsumedGrant]] = defaultdict(list)
    for i, customer in enumerate(GRANTED):
        grant = CreditGrant(f"grant-{customer}", customer, Decimal(200), START - timedelta(days=1))
        pending[Shards(SHARDS, USAGE).of(customer)].append(
            ConsumedGrant(grant, Origin("credit-grants", 0, i, 0))
        )
    decoded = SinkBatch(f"{USAGE}/0")
    letters: list[DeadLetter] = []
    batches = [decoded]

    def flush() -> None:
        for shard, items in pending.items():
            state = states[shard]
            batches.append(shard_batch(shard, state.positions, meter.meter(shard, state, items)))
        pending.clear()

    for offset, send in enumerate(sends):
        kafka_ms = int(send.sent_at.timestamp() * 1000)
        if send.wire in UNDECODABLE:
            assert send.expect is not None
            event: UsageEvent | Rejection = Rejection(send.expect, "as the decoder reports it")
        else:
            event = validate(send.record, send.sent_at, TimeBounds())
        origin = Origin(USAGE, 0, offset, kafka_ms)
        if isinstance(event, Rejection):
            letters.append(DeadLetter(origin, event, b""))
            continue
        pending[Shards(SHARDS, USAGE).of(event.customer_id)].append(Consumed(event, origin))
        if offset % 500 == 499:
            flush()
    flush()
    positions = range(len(letters))
    decoded.add("dead_letters", dead_letter_columns(decoded.stream, positions, letters, START))
    return batches


def write(client: Client, batches: list[SinkBatch]) -> None:
    """A flush per batch, as the flow does: many inserts, so the roll-ups get many parts."""
    sink = ClickHouseSink(lambda: client, flush_rows=1, flush_seconds=3600)
    part = sink.build_part("clickhouse", "clickhouse", None)
    for batch in batches:
        part.write_batch([batch])
    part.close()


ROLLUPS = (
    "usage_minute",
    "revenue_daily",
    "spend_minute",
    "customer_balances",
    "alerts_minute",
    "outcomes_minute",
)


@pytest.fixture(scope="module")
def demo(chdb_path: Path) -> Demo:
    """One database for the module: loading it once keeps the many query tests fast.

    Merges are stopped, so the queries and the exactness checks see unmerged parts.
    """
    client = connect(f"chdb://{chdb_path}", f"t_dash_{uuid.uuid4().hex[:12]}")
    for table in ROLLUPS:
        client.command(f"SYSTEM STOP MERGES {table}")
    batches = _demo_batches()
    write(client, batches)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for batch in batches:
        for table, table_rows in batch.tables.items():
            rows[table].extend(table_rows.to_pylist(maps_as_pydicts="strict"))
    return Demo(client, batches, rows)


# The dashboards' queries.


@dataclass(frozen=True)
class Panel:
    dashboard: str
    title: str
    kind: str
    target: dict[str, Any]
    columns: frozenset[str]
    """Columns the panel names in its field overrides: the query must return them."""

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.title}"


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(datasource: str) -> list[Panel]:
    found = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            names = frozenset(
                o["matcher"]["options"]
                for o in panel["fieldConfig"]["overrides"]
                if o["matcher"]["id"] == "byName"
            )
            for target in panel["targets"]:
                if target["datasource"]["type"] == datasource:
                    found.append(Panel(name, panel["title"], panel["type"], target, names))
    return found


def variables() -> list[Any]:
    return [
        pytest.param(variable, id=f"{name}/{variable['name']}")
        for name, board in dashboards().items()
        for variable in board["templating"]["list"]
        if variable["datasource"]["type"] == CLICKHOUSE
    ]


ALL = Dashboard(START - timedelta(hours=1), START + timedelta(hours=3), 60, (), True)
SOME = Dashboard(ALL.start, ALL.end, 300, GRANTED[:2], False)


def run(client: Client, sql: str, ctx: Dashboard) -> tuple[dict[str, str], list[Any]]:
    """Column names and types (DESCRIBE knows them even when no rows match), and the rows."""
    expanded = expand(sql, ctx)
    columns = {r[0]: r[1] for r in client.query(f"DESCRIBE ({expanded})").result_rows}
    return columns, list(client.query(expanded).result_rows)


@pytest.mark.parametrize("panel", panels(CLICKHOUSE), ids=lambda p: p.id)
def test_clickhouse_panels_return_named_columns(demo: Demo, panel: Panel) -> None:
    for ctx in (ALL, SOME):
        columns, rows = run(demo.client, panel.target["rawSql"], ctx)
        assert all(re.fullmatch(r"[a-z_]+", c) for c in columns), f"unaliased column: {columns}"
        assert panel.columns <= set(columns)
        assert not any("AggregateFunction" in t for t in columns.values()), "plugin can't read it"
        if panel.kind == "timeseries":
            assert next(iter(columns)) == "time" and columns["time"].startswith("DateTime")
            assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        assert rows or ctx is SOME, "no rows over the demo data"


@pytest.mark.parametrize("variable", variables())
def test_customer_variable_lists_the_customers(demo: Demo, variable: dict[str, Any]) -> None:
    assert variable["name"] == "customer" and variable["includeAll"]
    columns, rows = run(demo.client, variable["query"], ALL)
    assert list(columns) == ["customer_id"]
    assert {r[0] for r in rows} >= set(GRANTED)


def test_every_panel_uses_a_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    types = {d["uid"]: d["type"] for d in provisioned}
    assert set(types.values()) == {CLICKHOUSE, PROMETHEUS}
    for board in dashboards().values():
        for panel in board["panels"]:
            for target in panel["targets"]:
                assert types[target["datasource"]["uid"]] == target["datasource"]["type"]
                assert target["datasource"] == panel["datasource"], panel["title"]


# The roll-ups are exact: equal to their source tables, before and after merges, and a
# replay through the sink changes nothing.

MONEY = ("amount", "discount", "credits_applied", "billable_amount", "cost", "margin")
_MONEY_SUMS = ", ".join(f"sum({m})" for m in MONEY)
GRAIN = {
    "usage_minute": (
        "SELECT customer_id, minute, model, meter, sum(events), sumMap(quantities), "
        f"sumMap(amounts), {_MONEY_SUMS} FROM usage_minute GROUP BY ALL ORDER BY 1, 2, 3, 4",
        "SELECT customer_id, toStartOfMinute(timestamp), model, meter, count(), "
        "sumMap(CAST(quantities, 'Map(String, UInt64)')), "
        "sumMap(CAST(amounts, 'Map(String, Decimal(38, 18))')), "
        f"{_MONEY_SUMS} FROM rated_usage GROUP BY ALL ORDER BY 1, 2, 3, 4",
    ),
    "revenue_daily": (
        "SELECT customer_id, day, model, feature, sum(events), sum(revenue), "
        "sum(billable_amount), sum(credits_applied), sum(cost), sum(margin) "
        "FROM revenue_daily GROUP BY ALL ORDER BY ALL",
        "SELECT customer_id, toDate(timestamp), model, ifNull(feature, ''), count(), "
        "sum(amount - discount), sum(billable_amount), sum(credits_applied), sum(cost), "
        "sum(margin) FROM rated_usage GROUP BY ALL ORDER BY ALL",
    ),
    "spend_minute": (
        "SELECT customer_id, minute, period_start, sum(events), sum(revenue), "
        "sum(credits_applied), sum(billable_amount) FROM spend_minute GROUP BY ALL ORDER BY ALL",
        "SELECT customer_id, toStartOfMinute(timestamp), toDateTime(period_start, 'UTC'), "
        "count(), sum(amount - discount), sum(credits_applied), sum(billable_amount) "
        "FROM rated_usage GROUP BY ALL ORDER BY ALL",
    ),
    "customer_balances": (
        "SELECT customer_id, period_start, sum(events), sum(revenue), sum(credits_applied), "
        "sum(billable_amount) FROM customer_balances GROUP BY ALL HAVING sum(events) > 0 "
        "ORDER BY ALL",
        "SELECT customer_id, toDateTime(period_start, 'UTC'), count(), sum(amount - discount), "
        "sum(credits_applied), sum(billable_amount) FROM rated_usage GROUP BY ALL ORDER BY ALL",
    ),
    "alerts_minute": (
        "SELECT customer_id, minute, kind, sum(alerts), max(threshold), max(value) "
        "FROM alerts_minute GROUP BY ALL ORDER BY ALL",
        "SELECT customer_id, toStartOfMinute(at), kind, count(), max(threshold), max(value) "
        "FROM alerts GROUP BY ALL ORDER BY ALL",
    ),
}


def outcome_counts(demo: Demo) -> dict[tuple[str, str], int]:
    """Outcomes counted in Python from the rows the metering produced."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in demo.rows[RATED_USAGE]:
        counts["adjustment" if row["adjustment"] else "late" if row["late"] else "rated", ""] += 1
    counts["duplicate", ""] = len(demo.rows["duplicates"])
    for row in demo.rows["dead_letters"]:
        counts["dead_letter", row["reason"]] += 1
    return dict(counts)


def money_totals(demo: Demo) -> dict[str, Decimal]:
    rows = demo.rows[RATED_USAGE]
    return {m: sum((r[m] for r in rows), Decimal(0)) for m in MONEY}


def assert_exact(demo: Demo) -> None:
    client = demo.client
    for table, (rolled_up, direct) in GRAIN.items():
        expected = client.query(direct).result_rows
        assert expected, table
        assert client.query(rolled_up).result_rows == expected, table
    totals = money_totals(demo)
    [usage] = client.query(f"SELECT {_MONEY_SUMS} FROM usage_minute").result_rows
    assert dict(zip(MONEY, usage, strict=True)) == totals
    [spend] = client.query(
        "SELECT sum(revenue), sum(credits_applied), sum(billable_amount) FROM spend_minute"
    ).result_rows
    revenue = totals["amount"] - totals["discount"]
    assert spend == (revenue, totals["credits_applied"], totals["billable_amount"])
    outcomes = client.query(
        "SELECT outcome, reason, sum(events) FROM outcomes_minute GROUP BY ALL"
    ).result_rows
    assert {(o, r): n for o, r, n in outcomes} == outcome_counts(demo)


def test_rollups_equal_their_sources_before_and_after_merges(demo: Demo) -> None:
    outcomes = {outcome for outcome, _ in outcome_counts(demo)}
    assert outcomes == {"rated", "late", "adjustment", "duplicate", "dead_letter"}
    [(rows, keys)] = demo.client.query(
        "SELECT count(), uniqExact(customer_id, minute, model, meter) FROM usage_minute"
    ).result_rows
    assert rows > keys, "every key in one part: the check before merges would prove nothing"
    assert_exact(demo)
    for table in ROLLUPS:
        demo.client.command(f"SYSTEM START MERGES {table}")
        demo.client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert_exact(demo)


def test_a_replay_through_the_sink_leaves_the_rollups_unchanged(demo: Demo) -> None:
    write(demo.client, demo.batches)
    assert_exact(demo)


def test_spend_panels_show_each_customers_spend_in_its_latest_period(demo: Demo) -> None:
    expected = dict(
        demo.client.query(
            "SELECT customer_id, argMax(billable, period_start) FROM ("
            "  SELECT customer_id, period_start, sum(billable_amount) AS billable"
            "  FROM rated_usage GROUP BY ALL"
            ") GROUP BY customer_id"
        ).result_rows
    )
    running, table = (
        next(p for p in panels(CLICKHOUSE) if p.title.startswith(title))
        for title in ("Billable spend this billing period", "Spend this billing period by")
    )
    _, rows = run(demo.client, running.target["rawSql"], ALL)
    last = {customer: spend for _, customer, spend in rows}
    assert len(last) == 20
    assert {c: expected[c] for c in last} == last
    columns, rows = run(demo.client, table.target["rawSql"], ALL)
    billable = list(columns).index("billable")
    assert {row[0]: row[billable] for row in rows} == expected
