"""`meterflow rate`: rate a JSON-lines file with the same engine the dataflow runs.

Each line is a usage event (the contract's JSON form) or a credit grant (a line with
`grant_id`: customer_id, credits, effective_at, expires_at), applied in file order. Rated
lines go to `out` as JSON, one per event; a bad line is reported on `err` as
`line N: reason: detail` and the rest are still rated. The per-customer summary on `err`
is the statement level, where amounts are rounded to cents; base fees are included for
every period in which the customer had usage.

Exit code: 0 all lines rated, 1 some lines rejected, 2 books or file unusable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from flows.rating.alerts import Alert
from flows.rating.books import CATALOGUE, load_books
from flows.rating.credits import parse_grant
from flows.rating.engine import RatingEngine
from flows.rating.lines import RatedLine
from flows.rating.loading import CatalogueError
from flows.rating.money import ZERO, to_cents
from flows.rating.state import RatingState
from schemas.event import Rejection
from schemas.jsonform import line_problem, parse_line
from schemas.validation import TimeBounds, utc_now, validate

_COLUMNS = ("lines", "amount", "discount", "credits", "billable", "fees", "due", "cost", "margin")


@dataclass(slots=True)
class _Totals:
    lines: int = 0
    amount: Decimal = ZERO
    discount: Decimal = ZERO
    credits: Decimal = ZERO
    billable: Decimal = ZERO
    fees: Decimal = ZERO
    cost: Decimal = ZERO
    margin: Decimal = ZERO

    def add(self, line: RatedLine) -> None:
        self.lines += 1
        self.amount += line.amount
        self.discount += line.discount
        self.credits += line.credits_applied
        self.billable += line.billable_amount
        self.cost += line.cost
        self.margin += line.margin

    def cells(self) -> list[str]:
        money = (self.amount, self.discount, self.credits, self.billable, self.fees)
        due = self.billable + self.fees
        rest = (due, self.cost, self.margin)
        return [str(self.lines), *(str(to_cents(m)) for m in (*money, *rest))]


def rate_file(
    events_path: Path | str,
    prices: Path | str = CATALOGUE / "prices.yaml",
    contracts: Path | str = CATALOGUE / "contracts.yaml",
    costs: Path | str = CATALOGUE / "costs.yaml",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    try:
        engine = RatingEngine(load_books(prices, contracts, costs))
    except CatalogueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    try:
        with Path(events_path).open(encoding="utf-8") as source:
            totals, alerts, bad = _rate_lines(engine, source, out, err)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        print(f"error: {events_path}: cannot read: {reason or exc}", file=err)
        return 2
    _summary(engine, totals, alerts, bad, err)
    return 1 if bad else 0


def _rate_lines(
    engine: RatingEngine, source: Iterable[str], out: TextIO, err: TextIO
) -> tuple[dict[str, _Totals], list[Alert], int]:
    state, now, bounds = RatingState(), utc_now(), TimeBounds(max_age=None)
    totals: dict[str, _Totals] = {}
    periods: set[tuple[str, datetime]] = set()
    alerts: list[Alert] = []
    bad = 0
    for number, text in enumerate(source, start=1):
        if not text.strip():
            continue
        problem: Rejection | None
        record = parse_line(text)
        if isinstance(record, Rejection):
            problem = record
        elif "grant_id" in record:
            grant = parse_grant(json.loads(text, parse_float=Decimal))
            problem = grant if isinstance(grant, Rejection) else engine.apply_grant(state, grant)
        else:
            event = validate(record, now, bounds)
            if isinstance(event, Rejection):
                problem = event
            else:
                result = engine.rate_batch(state, [event])
                problem = result.rejections[0] if result.rejections else None
                alerts += result.alerts
                for line in result.lines:
                    out.write(line.to_json() + "\n")
                    totals.setdefault(line.customer_id, _Totals()).add(line)
                    periods.add((line.customer_id, line.period_start))
        if problem is not None:
            bad += 1
            print(line_problem(number, problem), file=err)
    for customer_id, period_start in sorted(periods):
        for fee in engine.period_fees(customer_id, period_start):
            totals[customer_id].fees += fee.amount
    return totals, alerts, bad


def _summary(
    engine: RatingEngine, totals: dict[str, _Totals], alerts: list[Alert], bad: int, err: TextIO
) -> None:
    for alert in alerts:
        print(
            f"alert: {alert.customer_id} {alert.kind.value} threshold {alert.threshold} "
            f"value {to_cents(alert.value)} at {alert.at.isoformat()}",
            file=err,
        )
    rows = [["customer", *_COLUMNS]]
    rows += [[customer, *t.cells()] for customer, t in sorted(totals.items())]
    overall = _Totals()
    for t in totals.values():
        for name in (
            "lines",
            "amount",
            "discount",
            "credits",
            "billable",
            "fees",
            "cost",
            "margin",
        ):
            setattr(overall, name, getattr(overall, name) + getattr(t, name))
    rows.append(["total", *overall.cells()])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"summary ({engine.currency}, rounded to cents):", file=err)
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        print("  ".join(cells), file=err)
    print(f"{overall.lines} lines rated, {bad} lines rejected, {len(alerts)} alerts", file=err)
