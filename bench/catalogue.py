"""A generated catalogue of many customers, for load and benchmarks at scale.

Customers `cust-000001`..: four in five pay list price, the rest are on the example
plans (each with a contract of its own, so every one resolves its own prices).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from metering.catalogue.records import CatalogueRecord, Kind, make_record
from metering.rating.contracts import ContractSpec, CustomerSpec, TermsSpec

PLANS = ("starter-49", "enterprise", "credits-pack")


def customer_id(n: int) -> str:
    return f"cust-{n:06d}"


def plan_of(n: int) -> str | None:
    """The plan of customer n, None for list price."""
    return None if n % 5 else PLANS[(n // 5) % len(PLANS)]


def customer_spec(n: int) -> CustomerSpec:
    plan = plan_of(n)
    if plan is None:
        return CustomerSpec(id=customer_id(n))
    terms = TermsSpec(plan=plan)
    return CustomerSpec(id=customer_id(n), contract=ContractSpec(id=f"C-{n:06d}", terms=terms))


def customer_records(count: int) -> Iterator[CatalogueRecord]:
    for n in range(1, count + 1):
        yield make_record(Kind.CUSTOMER, customer_id(n), customer_spec(n))


def write_customers(count: int, path: Path) -> Path:
    """The customers as a contracts file for `meterflow catalogue apply`."""
    customers = [
        customer_spec(n).model_dump(mode="json", exclude_defaults=True) for n in range(1, count + 1)
    ]
    path.write_text(yaml.safe_dump({"customers": customers}, sort_keys=False))
    return path
