"""Issue 14's pricing cases through `meterflow rate` (`rate_file`) on the shipped price
book: the same amounts, rejections and period-close lines as through the flow."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pricing_cases import (
    AMOUNTS,
    COMMITTED,
    LIST,
    T0,
    USAGE,
    D,
    month_of,
    record,
    seats_amount,
    write_contracts,
)

from commands.rate import rate_file
from metering.rating.books import CATALOGUE
from schemas.jsonform import dump_line


def test_every_model_rates_offline_as_worked_by_hand(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(dump_line(record(row)) + "\n" for row in USAGE))
    out, err = io.StringIO(), io.StringIO()
    contracts = write_contracts(tmp_path)
    code = rate_file(events, CATALOGUE / "prices.yaml", contracts, out=out, err=err)
    assert code == 1
    rated = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {r["event_id"]: D(r["amount"]) for r in rated} == {
        event_id: D(amount) for event_id, amount in AMOUNTS.items()
    }
    lines = err.getvalue().splitlines()
    numbers = {row[0]: n for n, row in enumerate(USAGE, start=1)}
    assert [line for line in lines if line.startswith("line ")] == [
        f"line {numbers['pt-bad']}: invalid_field: "
        "properties.provider_cost must be a finite amount, not negative, got '-1'",
        f"line {numbers['st-fix']}: invalid_correction: "
        "it would take images of the period below zero (120 rated, correction -500)",
    ]
    settled = [
        json.loads(line.removeprefix("period: ")) for line in lines if line.startswith("period: ")
    ]
    by_customer = {p["customer_id"]: (p["kind"], D(p["amount"])) for p in settled}
    assert by_customer == {
        LIST: ("recurring", seats_amount(*month_of(T0))),
        COMMITTED: ("true_up", D(498)),
    }
