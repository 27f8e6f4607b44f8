"""`meterflow statement`: one customer's usage statement for one billing period, built
from the rated rows in ClickHouse, for the terminal, as CSV or as JSON.

What it shows, and why:

- Line items per meter, model and mode (modes are priced apart): each dimension's
  quantity, amount and effective unit price, amount / quantity, quoted per the unit the
  price book uses (million tokens, GPU-hour, thousand calls, else one). The average, not
  the book's rate, because it is what was charged: tiers, allowances, contract rates and
  a price change inside the period all show in it, and quantity x price = amount.
- Usage is the rated rows of the period (by event time) except late adjustments: a row
  that arrived after its period had closed is billed on the statement of the period
  holding the watermark it arrived at (`late_adjustments`), in a section of its own.
- Overage, per included allowance of each contract version in force: the allowance
  (prorated to that version's share of the period), the pooled quantity used, what is
  beyond it, and its amount. Rating charges pooled usage only for the share beyond the
  allowance, so the amount of the pooled rows is the overage (list price, before discount).
- Charges by kind: the band fees, packages, percentage, transaction and dynamic charges
  inside the usage amounts above (before pooled allowances and discount), per meter and
  model, so a band fee or a package shows as what it is.
- Corrections: each correcting row beside the row it corrects (found by `corrects`),
  with both amounts; the correction's amount is in the usage above.
- Base fees from `RatingEngine.period_fees`, prorated per contract version, and the
  commitment lines of the period (true-up below a minimum, cap above a maximum), settled
  from the period's usage per contract version (`metering.rating.commitments`).
- Money stays exact: the total is the exact sum of the rows and fees, rounded to cents
  (ROUND_HALF_EVEN) once, at statement level. The text shows every figure in cents (so
  shown lines may differ from the total by rounding); CSV and JSON carry exact figures
  and the rounded total due.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from typing import Any, TextIO

from clickhouse_connect.driver.client import Client

from metering.rating.books import Books
from metering.rating.commitments import PeriodLine
from metering.rating.contracts import Customer
from metering.rating.engine import RatingEngine
from metering.rating.lines import Fee
from metering.rating.money import CONTEXT, ZERO, fmt, q18, to_cents
from metering.rating.periods import overlap
from metering.rating.recurring import Reading
from metering.rating.tiers import PER_UNITS
from metering.rating.totals import Totals
from reports.text_table import format_table
from schemas.event import from_micros, to_micros

_QUOTED_PER = {"llm.tokens": "million", "gpu.time": "hour", "api.call": "thousand"}
"""The unit each meter's prices are quoted per in the shipped price book."""
_MONTH = re.compile(r"\d{4}-\d{2}")
_SIX_PLACES = Decimal("0.000001")

_USAGE = (
    "customer_id = %(customer)s AND NOT adjustment "
    "AND period_start = fromUnixTimestamp64Micro(%(start)s, 'UTC')"
)
_MONEY = "count(), sum(amount), sum(discount), sum(credits_applied), sum(billable_amount)"


@dataclass(frozen=True, slots=True)
class DimensionUse:
    dimension: str
    quantity: int
    amount: Decimal
    per: str
    """The unit the price is quoted per: a key of `metering.rating.tiers.PER_UNITS`."""

    @property
    def unit_price(self) -> Decimal | None:
        """The average price per `per` units; None for no quantity."""
        if not self.quantity:
            return None
        with localcontext(CONTEXT):
            return q18(self.amount * PER_UNITS[self.per] / self.quantity)


@dataclass(frozen=True, slots=True)
class LineItem:
    meter: str
    model: str
    mode: str
    dimensions: tuple[DimensionUse, ...]
    charge: Totals


@dataclass(frozen=True, slots=True)
class Overage:
    meter: str
    contract_version: str
    included: Decimal
    """The allowance, prorated to the share of the period this contract version covers."""
    used: int
    amount: Decimal

    @property
    def over(self) -> Decimal:
        return max(ZERO, self.used - self.included)


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Late usage of an earlier period, billed on this statement."""

    original_period_start: datetime
    meter: str
    model: str
    charge: Totals


@dataclass(frozen=True, slots=True)
class ChargeUse:
    """The part of a meter and model's usage amount from one kind of charge."""

    meter: str
    model: str
    kind: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Correction:
    event_id: str
    corrects: str
    meter: str
    model: str
    amount: Decimal
    original_amount: Decimal | None
    """None where the corrected row is not in the table."""


@dataclass(frozen=True)
class Statement:
    customer_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: tuple[LineItem, ...]
    overages: tuple[Overage, ...]
    adjustments: tuple[Adjustment, ...]
    fees: tuple[Fee, ...]
    charges: tuple[ChargeUse, ...] = ()
    corrections: tuple[Correction, ...] = ()
    period_lines: tuple[PeriodLine, ...] = ()

    @property
    def usage(self) -> Totals:
        return sum((line.charge for line in self.lines), Totals())

    @property
    def adjusted(self) -> Totals:
        return sum((a.charge for a in self.adjustments), Totals())

    @property
    def base_fees(self) -> Decimal:
        return sum((fee.amount for fee in self.fees), ZERO)

    @property
    def settled(self) -> Decimal:
        return sum((line.amount for line in self.period_lines), ZERO)

    @property
    def total(self) -> Decimal:
        """Exact: usage and late adjustments after discount and credits, plus base fees
        and commitment lines."""
        return self.usage.billable + self.adjusted.billable + self.base_fees + self.settled

    @property
    def total_due(self) -> Decimal:
        return to_cents(self.total)


def billing_period(books: Books, customer_id: str, period: str) -> tuple[datetime, datetime]:
    """The customer's billing period [start, end) for `period`: YYYY-MM names the period
    starting on that month's first day, an ISO date the period holding that day."""
    customer = _customer(books, customer_id)
    month = _MONTH.fullmatch(period) is not None
    day = date.fromisoformat(f"{period}-01" if month else period)
    at = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_us, end_us = customer.billing.period(to_micros(at))
    start, end = from_micros(start_us), from_micros(end_us)
    if month and start.date() != day:
        raise ValueError(
            f"{customer_id}'s billing periods do not start on {day}; the one holding it runs "
            f"{start.date()} to {end.date()}: give a date in the period wanted"
        )
    return start, end


def statement(client: Client, books: Books, customer: str, period: str) -> Statement:
    """The statement of `customer` for `period` (see `billing_period`)."""
    start, end = billing_period(books, customer, period)
    start_us, end_us = to_micros(start), to_micros(end)
    params = {"customer": customer, "start": start_us, "end": end_us}
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
    engine = RatingEngine(books)
    usage = {row[0]: _charge(row[1:]) for row in by_version}
    return Statement(
        customer,
        books.currency,
        start,
        end,
        tuple(_lines(uses, money)),
        tuple(_overages(_customer(books, customer), start_us, end_us, uses)),
        tuple(Adjustment(row[0], row[1], row[2], _charge(row[3:])) for row in adjustments),
        tuple(engine.period_fees(customer, start)),
        tuple(ChargeUse(*row) for row in charges),
        tuple(_corrections(client, params)),
        tuple(engine.close_period(customer, start, usage, _readings(client, engine, params))),
    )


def _readings(client: Client, engine: RatingEngine, params: dict[str, Any]) -> list[Reading]:
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


def _corrections(client: Client, params: dict[str, Any]) -> Iterable[Correction]:
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


def _customer(books: Books, customer_id: str) -> Customer:
    customer = books.contracts.get(customer_id)
    if customer is None:
        raise ValueError(f"customer {customer_id!r} is not in the contracts catalogue")
    return customer


def _charge(row: Sequence[Any]) -> Totals:
    return Totals(int(row[0]), *row[1:5])


def _lines(uses: Sequence[Sequence[Any]], money: Sequence[Sequence[Any]]) -> Iterable[LineItem]:
    """Dimensions summed over contract versions, under their meter, model and mode."""
    for meter, model, mode, *sums in money:
        per = _QUOTED_PER.get(meter, "unit")
        by_dimension: dict[str, tuple[int, Decimal]] = {}
        for u_meter, u_model, u_mode, _, dimension, quantity, amount in uses:
            if (u_meter, u_model, u_mode) == (meter, model, mode):
                q, a = by_dimension.get(dimension, (0, ZERO))
                by_dimension[dimension] = (q + int(quantity), a + amount)
        dimensions = tuple(DimensionUse(d, q, a, per) for d, (q, a) in sorted(by_dimension.items()))
        yield LineItem(meter, model, mode, dimensions, _charge(sums))


def _overages(
    customer: Customer, start_us: int, end_us: int, uses: Sequence[Sequence[Any]]
) -> Iterable[Overage]:
    for version in customer.versions:
        share = overlap(start_us, end_us, version.start_us, version.end_us)
        if not share or version.id is None:
            continue
        for allowance in version.allowances:
            pooled = [
                (int(quantity), amount)
                for meter, model, _, contract, dimension, quantity, amount in uses
                if contract == version.id and allowance.pools(meter, model, dimension)
            ]
            with localcontext(CONTEXT):
                included = q18(allowance.quantity * Decimal(share) / (end_us - start_us))
            yield Overage(
                allowance.meter,
                version.id,
                included,
                sum(q for q, _ in pooled),
                sum((a for _, a in pooled), ZERO),
            )


def render_text(s: Statement) -> str:
    """The statement for a person: every amount in cents, unit prices to six places."""
    out = [
        f"Usage statement for {s.customer_id}, {s.period_start.date()} to {s.period_end.date()}"
        f" ({s.currency})",
        "Amounts rounded to cents; unit price = amount / quantity, per the unit shown.",
        "",
        *(format_table(_usage_rows(s), left=2) if s.lines else ["No rated usage in this period."]),
    ]
    if s.overages:
        out += ["", "Included allowances (overage is billed at the rates above)"]
        out += format_table(_overage_rows(s), left=2)
    if s.charges:
        out += ["", "Charges by kind (inside the usage amounts above)"]
        out += format_table(
            [["meter", "model", "kind", "amount"]]
            + [[c.meter, c.model, c.kind, _cents(c.amount)] for c in s.charges],
            left=3,
        )
    if s.corrections:
        out += ["", "Corrections (inside the usage amounts above)"]
        out += format_table(_correction_rows(s), left=4)
    if s.adjustments:
        out += ["", "Late adjustments: usage of earlier periods that arrived after they closed"]
        out += format_table(_adjustment_rows(s), left=3)
    usage = s.usage
    summary = [
        ["Usage", _cents(usage.amount)],
        ["Discount", _cents(-usage.discount)],
        ["Credits applied", _cents(-usage.credits)],
        ["Late adjustments", _cents(s.adjusted.billable)],
        *([f"Base fee {fee.contract_version}", _cents(fee.amount)] for fee in s.fees),
        *([_period_label(line), _cents(line.amount)] for line in s.period_lines),
        ["Total due", _cents(s.total_due)],
    ]
    return "\n".join([*out, "", *format_table(summary)]) + "\n"


def _usage_rows(s: Statement) -> list[list[str]]:
    rows = [["item", "dimension", "quantity", "unit price", "per", "amount"]]
    for line in s.lines:
        name = f"{line.meter} {line.model} {line.mode}"
        for d in line.dimensions:
            price = "-" if d.unit_price is None else str(d.unit_price.quantize(_SIX_PLACES))
            rows.append([name, d.dimension, f"{d.quantity:,}", price, d.per, _cents(d.amount)])
            name = ""
        events = f"{line.charge.events:,} event{'' if line.charge.events == 1 else 's'}"
        rows.append(["", events, "", "", "", _cents(line.charge.amount)])
    return rows


def _overage_rows(s: Statement) -> list[list[str]]:
    rows = [["meter", "contract", "included", "used", "over", "amount"]]
    for o in s.overages:
        quantities = [_quantity(o.included), f"{o.used:,}", _quantity(o.over)]
        rows.append([o.meter, o.contract_version, *quantities, _cents(o.amount)])
    return rows


def _period_label(line: PeriodLine) -> str:
    version = f" {line.contract_version}" if line.contract_version else ""
    if line.kind == "recurring":
        return f"Recurring {line.item}{version} (level {line.basis.quantize(_SIX_PLACES)})"
    name = {"true_up": "Minimum commitment true-up", "cap": "Maximum commitment cap"}[line.kind]
    return f"{name}{version} ({_cents(line.basis)}, spent {_cents(line.spend)})"


def _correction_rows(s: Statement) -> list[list[str]]:
    rows = [["event", "corrects", "meter", "model", "original", "correction"]]
    for c in s.corrections:
        original = "not found" if c.original_amount is None else _cents(c.original_amount)
        rows.append([c.event_id, c.corrects, c.meter, c.model, original, _cents(c.amount)])
    return rows


def _adjustment_rows(s: Statement) -> list[list[str]]:
    rows = [["period", "meter", "model", "events", "amount", "discount", "credits", "billable"]]
    for a in s.adjustments:
        c = a.charge
        money = [_cents(m) for m in (c.amount, c.discount, c.credits, c.billable)]
        rows.append(
            [str(a.original_period_start.date()), a.meter, a.model, f"{c.events:,}", *money]
        )
    return rows


def to_json(s: Statement) -> dict[str, Any]:
    """Exact amounts as decimal strings, and the total due in cents."""
    return {
        "customer_id": s.customer_id,
        "currency": s.currency,
        "period_start": s.period_start.isoformat(),
        "period_end": s.period_end.isoformat(),
        "lines": [
            {
                "meter": line.meter,
                "model": line.model,
                "mode": line.mode,
                "dimensions": [
                    {
                        "dimension": d.dimension,
                        "quantity": d.quantity,
                        "amount": fmt(d.amount),
                        "unit_price": None if d.unit_price is None else fmt(d.unit_price),
                        "per": d.per,
                    }
                    for d in line.dimensions
                ],
                **_charge_json(line.charge),
            }
            for line in s.lines
        ],
        "overages": [
            {
                "meter": o.meter,
                "contract_version": o.contract_version,
                "included": fmt(o.included),
                "used": o.used,
                "over": fmt(o.over),
                "amount": fmt(o.amount),
            }
            for o in s.overages
        ],
        "late_adjustments": [
            {
                "original_period_start": a.original_period_start.isoformat(),
                "meter": a.meter,
                "model": a.model,
                **_charge_json(a.charge),
            }
            for a in s.adjustments
        ],
        "base_fees": [
            {"contract_version": fee.contract_version, "amount": fmt(fee.amount)} for fee in s.fees
        ],
        "charges": [
            {"meter": c.meter, "model": c.model, "kind": c.kind, "amount": fmt(c.amount)}
            for c in s.charges
        ],
        "corrections": [
            {
                "event_id": c.event_id,
                "corrects": c.corrects,
                "meter": c.meter,
                "model": c.model,
                "amount": fmt(c.amount),
                "original_amount": None if c.original_amount is None else fmt(c.original_amount),
            }
            for c in s.corrections
        ],
        "period_lines": [
            {
                "kind": line.kind,
                "item": line.item,
                "contract_version": line.contract_version,
                "basis": fmt(line.basis),
                "spend": fmt(line.spend),
                "amount": fmt(line.amount),
            }
            for line in s.period_lines
        ],
        "usage": _charge_json(s.usage),
        "late_adjustments_total": _charge_json(s.adjusted),
        "base_fees_total": fmt(s.base_fees),
        "total": fmt(s.total),
        "total_due": str(s.total_due),
    }


def write_json(s: Statement, out: TextIO) -> None:
    json.dump(to_json(s), out, indent=2)
    out.write("\n")


CSV_COLUMNS = (
    "section",
    "period_start",
    "meter",
    "model",
    "mode",
    "dimension",
    "contract_version",
    "events",
    "quantity",
    "included",
    "over",
    "unit_price",
    "per",
    "amount",
    "discount",
    "credits_applied",
    "billable_amount",
)


def write_csv(s: Statement, out: TextIO) -> None:
    """One row per dimension (`usage`), line item (`item`), allowance (`overage`), late
    adjustment, base fee, then the exact `total` and the `total_due` in cents."""
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for line in s.lines:
        item = {"meter": line.meter, "model": line.model, "mode": line.mode}
        for d in line.dimensions:
            price = None if d.unit_price is None else fmt(d.unit_price)
            writer.writerow(
                {"section": "usage", **item, "dimension": d.dimension, "quantity": d.quantity}
                | {"unit_price": price, "per": d.per, "amount": fmt(d.amount)}
            )
        writer.writerow({"section": "item", **item, **_charge_json(line.charge)})
    for o in s.overages:
        writer.writerow(
            {"section": "overage", "meter": o.meter, "contract_version": o.contract_version}
            | {"quantity": o.used, "included": fmt(o.included), "over": fmt(o.over)}
            | {"amount": fmt(o.amount)}
        )
    for a in s.adjustments:
        writer.writerow(
            {"section": "late_adjustment", "period_start": a.original_period_start.isoformat()}
            | {"meter": a.meter, "model": a.model, **_charge_json(a.charge)}
        )
    for c in s.charges:
        writer.writerow(
            {"section": "charge", "meter": c.meter, "model": c.model, "dimension": c.kind}
            | {"amount": fmt(c.amount)}
        )
    for correction in s.corrections:
        writer.writerow(
            {"section": "correction", "meter": correction.meter, "model": correction.model}
            | {"dimension": f"{correction.event_id} corrects {correction.corrects}"}
            | {"amount": fmt(correction.amount)}
        )
    for fee in s.fees:
        amount = fmt(fee.amount)
        writer.writerow(
            {"section": "base_fee", "contract_version": fee.contract_version}
            | {"amount": amount, "billable_amount": amount}
        )
    for settled in s.period_lines:
        amount = fmt(settled.amount)
        writer.writerow(
            {"section": settled.kind, "contract_version": settled.contract_version}
            | {"dimension": settled.item}
            | {"amount": amount, "billable_amount": amount}
        )
    writer.writerow({"section": "total", "billable_amount": fmt(s.total)})
    writer.writerow({"section": "total_due", "billable_amount": str(s.total_due)})


def _charge_json(c: Totals) -> dict[str, Any]:
    return {
        "events": c.events,
        "amount": fmt(c.amount),
        "discount": fmt(c.discount),
        "credits_applied": fmt(c.credits),
        "billable_amount": fmt(c.billable),
    }


def _quantity(value: Decimal) -> str:
    return f"{Decimal(fmt(value)):,}"


def _cents(value: Decimal) -> str:
    return f"{to_cents(value):,}"
