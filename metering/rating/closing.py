"""What is rated when a billing period closes, from the period's rated lines: recurring
meters from their readings, then commitments from the usage per contract version, with
the recurring lines counted as spend (see `metering.rating.recurring` and
`metering.rating.commitments`). Pure: `meterflow rate` and `meterflow statement` call it
through `RatingEngine.close_period` with what they have rated or read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from metering.rating.books import Books
from metering.rating.commitments import PeriodLine, settle
from metering.rating.contracts import ContractVersion, Customer
from metering.rating.money import ZERO, q18
from metering.rating.recurring import Reading, Recurring
from metering.rating.resolve import Resolver
from metering.rating.totals import Totals
from schemas.event import from_micros


def close_period(
    resolver: Resolver,
    customer: Customer,
    start: int,
    end: int,
    usage: Mapping[str | None, Totals],
    readings: Iterable[Reading],
) -> list[PeriodLine]:
    """The period-close lines of [start, end): `readings` are the period's and the last
    before it; `usage` the period's rated totals per contract version."""
    lines = _recurring(resolver, customer, start, end, readings)
    spend = dict(usage)
    for line in lines:
        added = Totals(0, line.amount, ZERO, ZERO, line.amount)
        spend[line.contract_version] = spend.get(line.contract_version, Totals()) + added
    return lines + settle(customer, start, end, spend)


def recurring_models(books: Books) -> frozenset[tuple[str, str]]:
    """(meter, model) pairs some price or custom rate prices as a recurring meter."""
    listed = [(k[0], k[1], e) for version in books.prices.entries() for k, e in version.items()]
    custom = [
        (key[0], key[1], entry)
        for customer in books.contracts.customers.values()
        for terms in customer.versions
        for key, entry in terms.rates.items()
    ]
    return frozenset((m, n) for m, n, e in listed + custom if isinstance(e.charge, Recurring))


def _recurring(
    resolver: Resolver, customer: Customer, start: int, end: int, readings: Iterable[Reading]
) -> list[PeriodLine]:
    groups: dict[tuple[str, str, str], list[Reading]] = {}
    for reading in readings:
        groups.setdefault((reading.meter, reading.model, reading.mode), []).append(reading)
    out = []
    for (meter, model, mode), group in sorted(groups.items()):
        group.sort(key=lambda r: (r.timestamp_us, r.event_id))
        parts = _parts(resolver, customer, meter, model, mode, start, end)
        for part_start, part_end, terms, charge in parts:
            for dim, rate in sorted(charge.rates.items()):
                points = [(r.timestamp_us, r.quantities[dim]) for r in group if dim in r.quantities]
                level = charge.level(points, part_start, part_end)
                if charge.aggregation == "max":
                    basis, amount = level, level * rate * (part_end - part_start) / (end - start)
                else:
                    basis, amount = level / (part_end - part_start), level * rate / (end - start)
                if amount:
                    item = f"{meter} {model} {dim} ({charge.aggregation})"
                    out.append(
                        PeriodLine(
                            customer.id,
                            from_micros(start),
                            terms.id or "",
                            "recurring",
                            item,
                            q18(basis),
                            ZERO,
                            q18(amount),
                        )
                    )
    return out


def _parts(
    resolver: Resolver,
    customer: Customer,
    meter: str,
    model: str,
    mode: str,
    start: int,
    end: int,
) -> Iterable[tuple[int, int, ContractVersion, Recurring]]:
    """Parts of [start, end) with one contract version and one recurring price."""
    at = start
    while at < end:
        terms = customer.terms_at(at)
        res = resolver.price(terms, meter, model, mode, at)
        part_end = min(end, terms.end_us if res is None else res.end_us)
        if res is not None and isinstance(res.charge, Recurring):
            yield at, part_end, terms, res.charge
        at = part_end
