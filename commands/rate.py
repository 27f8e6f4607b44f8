"""`meterflow rate`: rate a JSON-lines file with the same engine the dataflow runs.

Each line is a usage event (the contract's JSON form) or a credit grant (a line with
`grant_id`: customer_id, credits, effective_at, expires_at), applied in file order, the
order the flow meters a shard in; a grant lapses where the watermark (the newest event
time less the allowed lateness) passes its expiry, as in the flow. Rated
lines go to `out` as JSON, one per event; a bad line is reported on `err` as
`line N: reason: detail` and the rest are still rated. The per-customer summary on `err`
is the statement level, where amounts are rounded to cents; base fees and period-close
lines (recurring meters' levels, a true-up below a minimum spend, a negative cap above
a maximum: `metering.rating.recurring`, `metering.rating.commitments`) are included for
every period in which the customer had usage, settled at the end of the file as at
period close, and each period-close line is reported on `err` as `period: {...}`.

Exit code: 0 all lines rated, 1 some lines rejected, 2 books or file unusable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from metering.rating.alerts import Alert
from metering.rating.books import CATALOGUE, load_books
from metering.rating.credits import parse_grant
from metering.rating.engine import RatingEngine
from metering.rating.lines import RatedLine
from metering.rating.loading import CatalogueError
from metering.rating.money import ZERO, to_cents
from metering.rating.recurring import Reading
from metering.rating.state import RatingState
from metering.rating.totals import Totals
from reports.text_table import format_table
from schemas.event import Rejection, from_micros, to_micros
from schemas.jsonform import line_problem, parse_line
from schemas.validation import TimeBounds, utc_now, validate

_COLUMNS = ("lines", "amount", "discount", "credits", "billable", "fees", "due", "cost", "margin")


def _cells(totals: Totals, fees: Decimal) -> list[str]:
    money = (totals.amount, totals.discount, totals.credits, totals.billable, fees)
    rest = (totals.billable + fees, totals.cost, totals.margin)
    return [str(totals.events), *(str(to_cents(m)) for m in (*money, *rest))]


def rate_file(
    events_path: Path | str,
    prices: Path | str = CATALOGUE / "prices.yaml",
    contracts: Path | str = CATALOGUE / "contracts.yaml",
    costs: Path | str = CATALOGUE / "costs.yaml",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    allowed_lateness: timedelta = timedelta(minutes=10),
) -> int:
    try:
        engine = RatingEngine(load_books(prices, contracts, costs))
    except CatalogueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    try:
        with Path(events_path).open(encoding="utf-8") as source:
            lateness_us = allowed_lateness // timedelta(microseconds=1)
            totals, fees, alerts, bad = _rate_lines(engine, source, out, err, lateness_us)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        print(f"error: {events_path}: cannot read: {reason or exc}", file=err)
        return 2
    _summary(engine, totals, fees, alerts, bad, err)
    return 1 if bad else 0


def _rate_lines(
    engine: RatingEngine, source: Iterable[str], out: TextIO, err: TextIO, lateness_us: int
) -> tuple[dict[str, Totals], dict[str, Decimal], list[Alert], int]:
    state, now, bounds = RatingState(), utc_now(), TimeBounds(max_age=None)
    totals: dict[str, Totals] = {}
    fees: dict[str, Decimal] = {}
    periods: dict[tuple[str, datetime], dict[str | None, Totals]] = {}
    readings: dict[str, list[Reading]] = {}
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
                alerts += _lapse(engine, state, to_micros(event.timestamp) - lateness_us, err)
                result = engine.rate_batch(state, [event])
                problem = result.rejections[0] if result.rejections else None
                alerts += result.alerts
                for line in result.lines:
                    out.write(line.to_json() + "\n")
                    so_far = totals.get(line.customer_id, Totals())
                    totals[line.customer_id] = so_far + Totals.of(line)
                    usage = periods.setdefault((line.customer_id, line.period_start), {})
                    version = line.contract_version
                    usage[version] = usage.get(version, Totals()) + Totals.of(line)
                    if engine.reads_level(line.meter, line.model):
                        readings.setdefault(line.customer_id, []).append(_reading(line))
        if problem is not None:
            bad += 1
            print(line_problem(number, problem), file=err)
    for (customer_id, period_start), usage in sorted(periods.items()):
        charged = [fee.amount for fee in engine.period_fees(customer_id, period_start)]
        levels = readings.get(customer_id, [])
        for period_line in engine.close_period(customer_id, period_start, usage, levels):
            charged.append(period_line.amount)
            print(f"period: {json.dumps(period_line.to_row(), default=str)}", file=err)
        fees[customer_id] = fees.get(customer_id, ZERO) + sum(charged, ZERO)
    return totals, fees, alerts, bad


def _reading(line: RatedLine) -> Reading:
    at = to_micros(line.timestamp)
    return Reading(at, line.event_id, line.meter, line.model, line.mode, line.quantities)


def _lapse(engine: RatingEngine, state: RatingState, watermark_us: int, err: TextIO) -> list[Alert]:
    """Grants whose expiry the watermark passes lapse here, as in the flow."""
    if not engine.lapse_due(state, watermark_us):
        return []
    expiries, alerts = engine.expire(state, from_micros(watermark_us))
    for expiry in expiries:
        print(f"lapsed: {json.dumps(expiry.to_row(), default=str)}", file=err)
    return alerts


def _summary(
    engine: RatingEngine,
    totals: dict[str, Totals],
    fees: dict[str, Decimal],
    alerts: list[Alert],
    bad: int,
    err: TextIO,
) -> None:
    for alert in alerts:
        print(
            f"alert: {alert.customer_id} {alert.kind.value} threshold {alert.threshold} "
            f"value {to_cents(alert.value)} at {alert.at.isoformat()}",
            file=err,
        )
    overall = sum(totals.values(), Totals())
    rows = [["customer", *_COLUMNS]]
    rows += [[c, *_cells(t, fees.get(c, ZERO))] for c, t in sorted(totals.items())]
    rows.append(["total", *_cells(overall, sum(fees.values(), ZERO))])
    print(f"summary ({engine.currency}, rounded to cents):", file=err)
    for line in format_table(rows):
        print(line, file=err)
    print(f"{overall.events} lines rated, {bad} lines rejected, {len(alerts)} alerts", file=err)
