"""What is in force at a time, as lines a person reads (`meterflow catalogue show`)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from metering.catalogue.catalogue import Catalogue
from metering.catalogue.records import BOOK_ID, Kind, MeterSpec, PriceBookHeader
from metering.rating.contracts import CustomerSpec
from metering.rating.costbook import CostVersionSpec
from metering.rating.money import fmt
from metering.rating.pricebook import PriceVersionSpec
from schemas.event import to_micros


def in_force(catalogue: Catalogue, at: datetime) -> list[str]:
    books = catalogue.books()
    header = catalogue.get(Kind.PRICE_BOOK, BOOK_ID)
    tiers = sorted(cast(PriceBookHeader, header.spec).tiers) if header else []
    lines = [f"catalogue at {at.isoformat()}: {len(catalogue)} records"]
    lines.append(f"currency {books.currency}; tiers {', '.join(tiers)}")
    lines.append("meters:")
    for record in sorted(catalogue.of_kind(Kind.METER), key=lambda r: r.id):
        meter = cast(MeterSpec, record.spec)
        counts = "".join(
            f"; {p} in {', '.join(v)}" for p, v in sorted((meter.filter or {}).items())
        )
        by = f"; priced by {', '.join(meter.price_by)}" if meter.price_by else ""
        lines.append(f"  {record.id}: {meter.measures()}{counts}{by}")
    lines += _versions("price versions", catalogue, Kind.PRICE_VERSION, at)
    lines += _versions("cost versions", catalogue, Kind.COST_VERSION, at)
    plans = sorted(r.id for r in catalogue.of_kind(Kind.PLAN))
    lines.append(f"plans: {', '.join(plans) or 'none'}")
    customers = sorted(catalogue.of_kind(Kind.CUSTOMER), key=lambda r: r.id)
    lines.append(f"customers: {len(customers)}")
    at_us = to_micros(at)
    for record in customers:
        spec = cast(CustomerSpec, record.spec)
        terms = books.contracts.customers[spec.id].terms_at(at_us)
        contract = f"contract {terms.id}" if terms.id else "list price"
        discount = f", discount {fmt(terms.discount * 100)}%" if terms.discount else ""
        budget = f", budget {fmt(terms.budget.limit)}" if terms.budget else ""
        name = f" ({spec.name})" if spec.name else ""
        lines.append(f"  {spec.id}{name}: {contract}, tier {terms.tier}{discount}{budget}")
    return lines


def _versions(title: str, catalogue: Catalogue, kind: Kind, at: datetime) -> list[str]:
    versions = sorted(
        (cast(PriceVersionSpec | CostVersionSpec, r.spec) for r in catalogue.of_kind(kind)),
        key=lambda v: v.effective_from,
    )
    started = [v for v in versions if v.effective_from <= at]
    current = started[-1].id if started else None
    out = [f"{title}:"]
    for v in versions:
        mark = " (in force)" if v.id == current else " (later)" if v.effective_from > at else ""
        out.append(f"  {v.id} from {v.effective_from.isoformat()}{mark}")
    return out
