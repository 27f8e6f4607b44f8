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
from decimal import Decimal
from typing import Any, TextIO

from clickhouse_connect.driver.client import Client

from metering.rating.books import Books
from metering.rating.commitments import PeriodLine
from metering.rating.engine import RatingEngine
from metering.rating.money import fmt, to_cents
from metering.rating.totals import Totals
from reports.statement_billing import (
    billing_period,
    known_customer,
    line_items,
    money_totals,
    overages,
)
from reports.statement_model import Adjustment, ChargeUse, Statement
from reports.statement_queries import corrections, period_rows, readings
from reports.text_table import format_table
from schemas.event import to_micros

_SIX_PLACES = Decimal("0.000001")


def statement(client: Client, books: Books, customer: str, period: str) -> Statement:
    """The statement of `customer` for `period` (see `billing_period`)."""
    start, end = billing_period(books, customer, period)
    start_us, end_us = to_micros(start), to_micros(end)
    params = {"customer": customer, "start": start_us, "end": end_us}
    rows = period_rows(client, params)
    engine = RatingEngine(books)
    usage = {row[0]: money_totals(row[1:]) for row in rows.by_version}
    return Statement(
        customer,
        books.currency,
        start,
        end,
        tuple(line_items(rows.uses, rows.money)),
        tuple(overages(known_customer(books, customer), start_us, end_us, rows.uses)),
        tuple(
            Adjustment(row[0], row[1], row[2], money_totals(row[3:])) for row in rows.adjustments
        ),
        tuple(engine.period_fees(customer, start)),
        tuple(ChargeUse(*row) for row in rows.charges),
        tuple(corrections(client, params)),
        tuple(engine.close_period(customer, start, usage, readings(client, engine, params))),
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
