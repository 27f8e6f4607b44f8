"""The catalogue as records applied in order, and the books rating uses, built from them.

Each record applies from its effective time: a price or cost version from its
`effective_from`, a contract's terms from the beginning and each amendment from its
`effective_from`. Rating state is keyed by version ids (`metering.rating.resolve`), so
what was published must stay as it was or usage already rated would be priced again:
versions and plans are immutable once published, a customer's contract keeps its id,
billing, terms and amendments and may only gain amendments, a price book keeps its
currency and tiers (it may gain tiers). `check` refuses anything else with the reason.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import TypeVar, cast

from pydantic import BaseModel

from metering.catalogue.meter_rules import allowance_problem, pricing_problem
from metering.catalogue.records import (
    APPLY_ORDER,
    BOOK_ID,
    CatalogueRecord,
    CostBookHeader,
    InvalidRecord,
    Kind,
    MeterSpec,
    PriceBookHeader,
)
from metering.rating.books import Books
from metering.rating.contracts import (
    Contracts,
    Customer,
    CustomerSpec,
    SubscriptionSpec,
    TermsSpec,
    customer_of,
)
from metering.rating.costbook import CostBook, CostBookSpec, CostVersionSpec
from metering.rating.pricebook import PriceBook, PriceBookSpec, PriceVersionSpec, PricingSpec

H = TypeVar("H", bound=BaseModel)
V = TypeVar("V", PriceVersionSpec, CostVersionSpec)


class Catalogue:
    """Records by key (`kind/id`), the latest applied of each, and the books they make.

    The books are rebuilt only where a record changed them: price and cost books when a
    version or header arrives, one customer when its record does."""

    def __init__(self, records: Iterable[CatalogueRecord] = ()):
        self.records: dict[str, CatalogueRecord] = {}
        self._kinds: dict[Kind, dict[str, CatalogueRecord]] = {kind: {} for kind in Kind}
        self._customers: dict[str, Customer] = {}
        self._contract_ids: dict[str, str] = {}
        self._plan_terms: dict[str, TermsSpec] | None = None
        self._prices: PriceBook | None = None
        self._costs: CostBook | None = None
        self._books: Books | None = None
        self._pickled: bytes | None = None
        for record in records:
            self.apply(record)

    def __getstate__(self) -> dict[str, bytes]:
        """Only the records: what they make is rebuilt on resume. They are pickled once
        until a record changes them, so a snapshot of a shard holding thousands of
        customers costs nothing while no record arrives."""
        if self._pickled is None:
            self._pickled = pickle.dumps(list(self.records.values()), pickle.HIGHEST_PROTOCOL)
        return {"records": self._pickled}

    def __setstate__(self, state: dict[str, bytes]) -> None:
        """Records were checked when applied; they are restored without checks, in the
        order of what they refer to (a plan before the customers on it)."""
        self.__init__()  # type: ignore[misc]
        records: list[CatalogueRecord] = pickle.loads(state["records"])
        for record in sorted(records, key=lambda r: APPLY_ORDER[r.kind]):
            self._store(record)
        self._pickled = state["records"]

    def copy(self) -> Catalogue:
        out = Catalogue()
        out.records, out._customers = dict(self.records), dict(self._customers)
        out._kinds = {kind: dict(records) for kind, records in self._kinds.items()}
        out._contract_ids = dict(self._contract_ids)
        out._prices, out._costs, out._books = self._prices, self._costs, self._books
        out._pickled = self._pickled
        return out

    def __iter__(self) -> Iterator[CatalogueRecord]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def get(self, kind: Kind, record_id: str) -> CatalogueRecord | None:
        return self.records.get(f"{kind}/{record_id}")

    def of_kind(self, kind: Kind) -> list[CatalogueRecord]:
        return list(self._kinds[kind].values())

    def knows_customer(self, customer_id: str) -> bool:
        return customer_id in self._customers

    def meter_names(self) -> list[str]:
        return sorted(r.id for r in self.of_kind(Kind.METER))

    def meter(self, name: str) -> MeterSpec | None:
        record = self.get(Kind.METER, name)
        return None if record is None else cast(MeterSpec, record.spec)

    def apply(self, record: CatalogueRecord) -> bool:
        """Apply a record after `check`; false when it changes nothing (a re-send)."""
        before = self.records.get(record.key)
        if before is not None and before.same_as(record):
            return False
        self.check(record)
        self._store(record)
        return True

    def _store(self, record: CatalogueRecord) -> None:
        self.records[record.key] = record
        self._kinds[record.kind][record.id] = record
        self._books = None
        self._pickled = None
        if record.kind is Kind.CUSTOMER:
            spec = cast(CustomerSpec, record.spec)
            self._customers[spec.id] = customer_of(spec, self._plans())
            if spec.contract is not None:
                for version in (spec.contract.id, *(a.id for a in spec.contract.amendments)):
                    self._contract_ids[version] = spec.id
        elif record.kind is Kind.PLAN:
            self._plan_terms = None
        elif record.kind in (Kind.PRICE_BOOK, Kind.PRICE_VERSION):
            self._prices = None
        elif record.kind in (Kind.COST_BOOK, Kind.COST_VERSION):
            self._costs = None

    def check(self, record: CatalogueRecord) -> None:
        """Raise `InvalidRecord` if the record cannot follow what is applied already."""
        before = self.records.get(record.key)
        if before is not None and not before.same_as(record):
            _check_change(before, record)
        match record.kind:
            case Kind.PRICE_BOOK:
                self._check_price_book(cast(PriceBookHeader, record.spec))
            case Kind.COST_BOOK:
                self._check_currency(cast(CostBookHeader, record.spec).currency, Kind.PRICE_BOOK)
            case Kind.PRICE_VERSION:
                self._check_price_version(cast(PriceVersionSpec, record.spec))
            case Kind.COST_VERSION:
                version = cast(CostVersionSpec, record.spec)
                self._check_start(Kind.COST_VERSION, version.id, version.effective_from)
                for i, cost in enumerate(version.costs):
                    self._check_meter(f"costs[{i}]", cost.meter, set(cost.rates))
            case Kind.CUSTOMER:
                self._check_customer(cast(CustomerSpec, record.spec))
            case Kind.PLAN:
                for i, rate in enumerate(cast(TermsSpec, record.spec).rates or []):
                    self._check_meter(f"rates[{i}]", rate.meter, rate.dimensions(), rate)

    def books(self) -> Books:
        """The price book, contracts and cost book of everything applied."""
        if self._books is None:
            contracts = Contracts.of(dict(self._customers))
            meters = {
                r.id: found
                for r in self.of_kind(Kind.METER)
                if (found := cast(MeterSpec, r.spec).aggregation(r.id)) is not None
            }
            self._books = Books(self._price_book(), contracts, self._cost_book(), meters)
        return self._books

    def _price_book(self) -> PriceBook:
        if self._prices is None:
            header = self._header(Kind.PRICE_BOOK, PriceBookHeader)
            versions = _by_start(self.of_kind(Kind.PRICE_VERSION), PriceVersionSpec)
            if not versions:
                raise InvalidRecord("the catalogue has no price version")
            spec = PriceBookSpec(currency=header.currency, tiers=header.tiers, versions=versions)
            self._prices = PriceBook(spec)
        return self._prices

    def _cost_book(self) -> CostBook:
        if self._costs is None:
            header = self._header(Kind.COST_BOOK, CostBookHeader)
            versions = _by_start(self.of_kind(Kind.COST_VERSION), CostVersionSpec)
            if not versions:
                raise InvalidRecord("the catalogue has no cost version")
            self._costs = CostBook(CostBookSpec(currency=header.currency, versions=versions))
        return self._costs

    def _header(self, kind: Kind, model: type[H]) -> H:
        record = self.get(kind, BOOK_ID)
        if record is None:
            raise InvalidRecord(f"the catalogue has no {kind} (currency and tiers)")
        return cast(H, record.spec)

    def _plans(self) -> dict[str, TermsSpec]:
        """Kept until a plan record arrives: every customer record needs them."""
        if self._plan_terms is None:
            self._plan_terms = {r.id: cast(TermsSpec, r.spec) for r in self.of_kind(Kind.PLAN)}
        return self._plan_terms

    def _tiers(self) -> set[str] | None:
        record = self.get(Kind.PRICE_BOOK, BOOK_ID)
        return None if record is None else set(cast(PriceBookHeader, record.spec).tiers)

    def _check_currency(self, currency: str, other: Kind) -> None:
        record = self.get(other, BOOK_ID)
        if record is not None:
            theirs = cast(PriceBookHeader | CostBookHeader, record.spec).currency
            if theirs != currency:
                raise InvalidRecord(f"currency {currency} differs from the {other}'s {theirs}")

    def _check_price_book(self, header: PriceBookHeader) -> None:
        self._check_currency(header.currency, Kind.COST_BOOK)
        used = {
            price.customer_tier
            for r in self.of_kind(Kind.PRICE_VERSION)
            for price in cast(PriceVersionSpec, r.spec).prices
        }
        if missing := sorted(used - set(header.tiers)):
            raise InvalidRecord(f"tiers {missing} are used by published prices")

    def _check_price_version(self, version: PriceVersionSpec) -> None:
        self._check_start(Kind.PRICE_VERSION, version.id, version.effective_from)
        tiers = self._tiers()
        for i, price in enumerate(version.prices):
            self._check_meter(f"prices[{i}]", price.meter, price.dimensions(), price)
            if tiers is not None and price.customer_tier not in tiers:
                raise InvalidRecord(
                    f"prices[{i}].customer_tier: {price.customer_tier!r} is not a price book "
                    f"tier ({sorted(tiers)})"
                )

    def _check_meter(
        self, where: str, name: str, dimensions: set[str], pricing: PricingSpec | None = None
    ) -> MeterSpec:
        """A price, cost or allowance names a meter of the catalogue and its dimensions; a
        price or rate is one the meter allows (`metering.catalogue.meter_rules`)."""
        meter = self.meter(name)
        if meter is None:
            known = self.meter_names()
            raise InvalidRecord(f"{where}.meter: {name!r} is not a meter of the catalogue {known}")
        if undefined := sorted(dimensions - set(meter.dimensions)):
            raise InvalidRecord(f"{where}: {undefined} not defined: {meter.describe(name)}")
        if pricing is not None and (problem := pricing_problem(name, meter, pricing)):
            raise InvalidRecord(f"{where}: {problem}")
        return meter

    def _check_start(self, kind: Kind, version_id: str, start: object) -> None:
        for other in self.of_kind(kind):
            spec = cast(PriceVersionSpec | CostVersionSpec, other.spec)
            if other.id != version_id and spec.effective_from == start:
                raise InvalidRecord(f"effective_from {start} is also that of {kind} {other.id!r}")

    def _check_customer(self, customer: CustomerSpec) -> None:
        contract = customer.contract
        if contract is None:
            return
        plans, tiers = self._plans(), self._tiers()
        layers: list[tuple[str, TermsSpec]] = [("contract.terms", contract.terms)]
        layers += [(f"contract.amendments[{i}]", a) for i, a in enumerate(contract.amendments)]
        for where, terms in layers:
            for i, rate in enumerate(terms.rates or []):
                self._check_meter(f"{where}.rates[{i}]", rate.meter, rate.dimensions(), rate)
            for i, allowance in enumerate((terms.subscription or SubscriptionSpec()).included):
                dims = set(allowance.dimensions or ())
                at = f"{where}.subscription.included[{i}]"
                meter = self._check_meter(at, allowance.meter, dims)
                if problem := allowance_problem(allowance.meter, meter, dims):
                    raise InvalidRecord(f"{at}: {problem}")
            if terms.plan is not None and terms.plan not in plans:
                raise InvalidRecord(f"{where}.plan: {terms.plan!r} is not a published plan")
            tier = terms.customer_tier
            if tier is not None and tiers is not None and tier not in tiers:
                raise InvalidRecord(
                    f"{where}.customer_tier: {tier!r} is not a price book tier ({sorted(tiers)})"
                )
        for version in (contract.id, *(a.id for a in contract.amendments)):
            owner = self._contract_ids.get(version, customer.id)
            if owner != customer.id:
                raise InvalidRecord(f"contract or amendment id {version!r} is {owner!r}'s")


def _by_start(records: list[CatalogueRecord], model: type[V]) -> list[V]:
    versions = [cast(V, r.spec) for r in records]
    return sorted(versions, key=lambda v: v.effective_from)


def _check_change(before: CatalogueRecord, after: CatalogueRecord) -> None:
    """What may change in a published record; everything else is refused."""
    if after.kind is Kind.CUSTOMER:
        _check_contract(cast(CustomerSpec, before.spec), cast(CustomerSpec, after.spec))
    elif after.kind is Kind.PRICE_BOOK:
        old, new = cast(PriceBookHeader, before.spec), cast(PriceBookHeader, after.spec)
        if old.currency != new.currency:
            raise InvalidRecord(f"currency: published as {old.currency}; it cannot change")
        for name, tier in old.tiers.items():
            if new.tiers.get(name, tier).credit_value != tier.credit_value or name not in new.tiers:
                raise InvalidRecord(f"tiers.{name}: published tiers cannot change or go")
    elif after.kind is Kind.COST_BOOK:
        raise InvalidRecord("currency: the cost book's currency cannot change")
    else:
        raise InvalidRecord(
            f"{after.key} is published with another definition and versions are immutable: "
            "publish a new one with its own id and effective_from"
        )


def _check_contract(before: CustomerSpec, after: CustomerSpec) -> None:
    old, new = before.contract, after.contract
    if old is None:
        return
    if new is None:
        raise InvalidRecord("contract: a published contract cannot be removed")
    if (new.id, new.billing, new.terms) != (old.id, old.billing, old.terms):
        raise InvalidRecord(
            f"contract: {old.id!r} is published; its id, billing and terms cannot change "
            "(add an amendment)"
        )
    if new.amendments[: len(old.amendments)] != old.amendments:
        raise InvalidRecord(
            "contract.amendments: published amendments cannot change or go; add new ones after "
            f"{old.amendments[-1].id!r}"
        )
