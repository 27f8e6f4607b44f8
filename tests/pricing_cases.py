"""Issue 14's pricing cases, shared by the offline run (`meterflow rate`) and the real
flow: events of every model for cust-0024 (list price) and a committed customer added to
a copy of the shipped contracts, with every amount worked by hand from the shipped
price book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metering.rating.books import CATALOGUE
from metering.rating.money import CONTEXT, q18

D = Decimal
LIST = "cust-0024"
COMMITTED = "cust-0900"


def _start() -> datetime:
    """Three days back, on the hour, with the next three hours in the same month."""
    t0 = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    return t0 if (t0 + timedelta(hours=3)).month == t0.month else t0 - timedelta(hours=3)


T0 = _start()
USAGE: list[tuple[str, str, str, str, dict[str, int], dict[str, str], str | None, str | None]] = [
    # (event id, customer, meter, model, quantities, properties, region, corrects)
    ("rr-1", LIST, "api.call", "rerank-api", {"calls": 60_000}, {}, None, None),
    ("rr-2", LIST, "api.call", "rerank-api", {"calls": 50_000}, {}, None, None),
    ("wh-1", LIST, "api.call", "webhooks", {"calls": 1_500}, {}, None, None),
    ("vs-1", LIST, "api.call", "vector-search", {"calls": 25_000}, {}, None, None),
    ("up-1", LIST, "image.generation", "upscaler", {"images": 500}, {}, None, None),
    ("st-1", LIST, "image.generation", "sdxl-turbo", {"images": 120}, {}, None, None),
    ("pay-1", LIST, "api.call", "payments-api", {"calls": 1}, {"amount": "100.00"}, None, None),
    ("pay-2", LIST, "api.call", "payments-api", {"calls": 1}, {"amount": "5.00"}, None, None),
    ("pay-3", LIST, "api.call", "payments-api", {"calls": 1}, {"amount": "1000.00"}, None, None),
    ("po-1", LIST, "api.call", "payouts-api", {"calls": 1}, {"amount": "12000.00"}, None, None),
    (
        "pt-1",
        LIST,
        "llm.tokens",
        "passthrough",
        {"input_tokens": 900},
        {"provider_cost": "0.004"},
        None,
        None,
    ),
    (
        "im-1",
        LIST,
        "image.generation",
        "imagen-3",
        {"images": 4},
        {"quality": "hd"},
        "eu-west-1",
        None,
    ),
    ("im-2", LIST, "image.generation", "imagen-3", {"images": 2}, {}, None, None),
    ("rr-fix", LIST, "api.call", "rerank-api", {"calls": -10_000}, {}, None, "rr-1"),
    (
        "pt-bad",
        LIST,
        "llm.tokens",
        "passthrough",
        {"input_tokens": 1},
        {"provider_cost": "-1"},
        None,
        None,
    ),
    ("st-fix", LIST, "image.generation", "sdxl-turbo", {"images": -500}, {}, None, "st-1"),
    ("cm-1", COMMITTED, "image.generation", "sdxl-turbo", {"images": 200}, {}, None, None),
    ("seats-1", LIST, "capacity", "team-seats", {"seats": 3}, {}, None, None),
]
AMOUNTS = {
    "rr-1": "130",  # 60,000 x 0.002 + 10 on entering band 1
    "rr-2": "140",  # 40,000 x 0.002 + 10,000 x 0.001 + 50 on entering band 2
    "wh-1": "1",  # 1,000 free, 500 more start one package of 1,000 at 1.00
    "vs-1": "6",  # 25,000 calls: 3 started packages of 10,000 at 2.00
    "up-1": "7",  # volume band 1: 500 x 0.01 + 2.00
    "st-1": "0.4",  # 100 free, 20 x 0.02
    "pay-1": "3.2",  # 2.9 % of 100 + 0.30
    "pay-2": "0.5",  # 0.145 + 0.30 = 0.445, raised to the 0.50 minimum
    "pay-3": "10",  # 29.00 + 0.30, lowered to the 10.00 maximum
    "po-1": "115",  # 1 % of 10,000 + 5.00 on entering, 0.5 % of 2,000
    "pt-1": "0.0046",  # 0.004 + 15 %
    "im-1": "0.24",  # eu-west-1 x hd: 4 x 0.06
    "im-2": "0.06",  # default: 2 x 0.03
    "rr-fix": "-60",  # 100,000 calls: 100,000 x 0.002 + 10 = 210, was 270; band 2's fee back
    "cm-1": "2",  # 100 free, 100 x 0.02
    "seats-1": "0",  # a level: settled at period close
}
CHARGES = {
    "band_fee": "17",  # 10 + 50 (rr-1, rr-2) - 50 (rr-fix) + 2 (up-1) + 5 (po-1)
    "package": "7",  # 1 (wh-1) + 6 (vs-1)
    "percentage": "122.80",  # 2.90 + 0.20 + 9.70 (pay-1..3) + 100 + 10 (po-1)
    "transaction_fee": "0.9",  # 3 x 0.30
    "dynamic": "0.0046",
}
"""cust-0024's charges by kind, summed over its rows."""


def record(row: tuple[Any, ...]) -> dict[str, Any]:
    event_id, customer, meter, model, quantities, properties, region, corrects = row
    return {
        "event_id": event_id,
        "timestamp": T0 + timedelta(minutes=USAGE.index(row) + 1),
        "customer_id": customer,
        "project_id": None,
        "feature": None,
        "meter": meter,
        "model": model,
        "provider": "test",
        "mode": "realtime",
        "quantities": quantities,
        "properties": properties,
        "region": region,
        "corrects": corrects,
    }


def write_contracts(folder: Path) -> Path:
    """The shipped contracts plus COMMITTED on the `committed-growth` plan."""
    contracts = folder / "contracts.yaml"
    committed = (
        f"  - id: {COMMITTED}\n    contract: {{id: C-0900, terms: {{plan: committed-growth}}}}"
    )
    contracts.write_text(f"{(CATALOGUE / 'contracts.yaml').read_text()}\n{committed}\n")
    return contracts


def seats_amount(start: datetime, end: datetime) -> Decimal:
    """3 seats at 20.00 a seat-month, held from the reading to the end of the period."""
    held = end - record(USAGE[-1])["timestamp"]
    held_us, period_us = (t // timedelta(microseconds=1) for t in (held, end - start))
    return q18(CONTEXT.divide(3 * 20 * held_us, period_us))


def month_of(at: datetime) -> tuple[datetime, datetime]:
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)
