"""Customers and their contracts: the terms that turn list prices into what they pay.

`customers:` lists every known customer; one not listed is unknown and its usage is
rejected. A customer without `contract` pays list price on the default tier, billed by
calendar month. A contract has billing (period and anchor, fixed for its life), initial
`terms` and effective-dated `amendments`. Terms may start from a named plan in `plans:`.
An amendment restates in full each term it changes (a tier, a discount, the custom
rates, the subscription, credit alerts, a budget); the rest carry over, unless it names
a plan, which starts over from that plan's terms. Usage is rated on the terms in force
at its event time.

Semantics a contract author needs:
- `discount_percent` applies to amounts at list price; custom `rates` are net prices,
  in currency (also on a tier that sells credits).
- A custom rate for `model: "*"` prices every model of its meter that the price book knows
  (a plan's overage rate); a model missing from the price book is still unknown.
- `subscription.included` is an allowance pooled over its dimensions and models per
  period: the billable share of the pool's amount is (used - included) / used, so the
  result is the same whichever events used the allowance.
- Where an amendment (or a list price change) takes effect inside a period, the period
  is split: each part is rated on its own, with allowances, tier bounds, the base fee
  and commitments prorated by the part's share of the period's duration.
- `commitment` is a minimum and/or maximum spend per period, settled at period close:
  a true-up line for a shortfall, a negative cap line for spend above the maximum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, PositiveInt, model_validator

from metering.rating.loading import Spec, load_model
from metering.rating.money import CONTEXT, HUNDRED, ZERO
from metering.rating.periods import CALENDAR_ANCHOR, MONTHLY, Billing
from metering.rating.pricebook import DEFAULT_TIER, Meter, PriceEntry, PricingSpec, check_dimension
from metering.rating.versions import BEGINNING, END
from schemas.event import to_micros
from schemas.meters import METER_DIMENSIONS

Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[Decimal, Field(gt=0, le=100, allow_inf_nan=False)]
PERIOD_MONTHS = {"monthly": 1, "quarterly": 3, "annual": 12}
CREDIT_THRESHOLDS = (Decimal(50), Decimal(80), Decimal(100))


class AllowanceSpec(Spec):
    meter: Meter
    quantity: PositiveInt
    dimensions: list[str] | None = None
    """Omitted: every dimension of the meter."""
    models: list[str] | None = None
    """Omitted: every model of the meter."""

    @model_validator(mode="after")
    def _dimensions(self) -> Self:
        for dimension in self.dimensions or []:
            check_dimension(self.meter, dimension, "unit")
        return self


class SubscriptionSpec(Spec):
    base_fee: Money = ZERO
    included: list[AllowanceSpec] = Field(default_factory=list)


class CreditsSpec(Spec):
    thresholds: list[Percent] = Field(default_factory=lambda: list(CREDIT_THRESHOLDS))
    """Alert once per grant when its consumption reaches each percentage."""
    low_balance: Money | None = None
    """Alert when the remaining balance, in credits, falls below this."""


class BudgetSpec(Spec):
    limit: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    """Spend limit per billing period, on billable amounts."""
    soft_thresholds: list[Percent] = Field(default_factory=lambda: [Decimal(50), Decimal(80)])
    hard_cap: bool = True
    """Signal `budget_hard_cap` when spend reaches the limit."""


class CommitmentSpec(Spec):
    """Spend per billing period, settled at period close (see `metering.rating.commitments`)."""

    minimum: Money | None = None
    maximum: Money | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.minimum is None and self.maximum is None:
            raise ValueError("give a 'minimum', a 'maximum' or both")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self


class TermsSpec(Spec):
    plan: str | None = None
    customer_tier: str | None = None
    discount_percent: Annotated[Decimal, Field(ge=0, le=100)] | None = None
    rates: list[PricingSpec] | None = None
    subscription: SubscriptionSpec | None = None
    credits: CreditsSpec | None = None
    budget: BudgetSpec | None = None
    commitment: CommitmentSpec | None = None

    @model_validator(mode="after")
    def _unique_rates(self) -> Self:
        keys = [(r.meter, r.model, r.mode) for r in self.rates or []]
        if dupes := sorted({str(k) for k in keys if keys.count(k) > 1}):
            raise ValueError(f"more than one custom rate for {', '.join(dupes)}")
        return self


class AmendmentSpec(TermsSpec):
    id: str = Field(min_length=1)
    effective_from: AwareDatetime


class BillingSpec(Spec):
    period: Literal["monthly", "quarterly", "annual"] = "monthly"
    anchor: date = CALENDAR_ANCHOR

    @model_validator(mode="after")
    def _day(self) -> Self:
        if self.anchor.day > 28:
            raise ValueError("anchor day must be 1..28 so that every month has it")
        return self


class ContractSpec(Spec):
    id: str = Field(min_length=1)
    billing: BillingSpec = BillingSpec()
    terms: TermsSpec = TermsSpec()
    amendments: list[AmendmentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        starts = [a.effective_from for a in self.amendments]
        if starts != sorted(set(starts)):
            raise ValueError("amendments must be in strictly increasing 'effective_from' order")
        return self


class CustomerSpec(Spec):
    id: str = Field(min_length=1)
    name: str | None = None
    contract: ContractSpec | None = None


class ContractsSpec(Spec):
    plans: dict[str, TermsSpec] = Field(default_factory=dict)
    customers: list[CustomerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [c.id for c in self.customers]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"customers listed more than once: {dupes}")
        if nested := sorted(name for name, plan in self.plans.items() if plan.plan):
            raise ValueError(f"a plan cannot name another plan: {nested}")
        versions = []
        for customer in self.customers:
            if customer.contract is None:
                continue
            contract = customer.contract
            versions += [contract.id, *(a.id for a in contract.amendments)]
            for terms in (contract.terms, *contract.amendments):
                if terms.plan is not None and terms.plan not in self.plans:
                    raise ValueError(
                        f"customer {customer.id!r}: plan {terms.plan!r} is not in plans"
                    )
        if dupes := sorted({v for v in versions if versions.count(v) > 1}):
            raise ValueError(f"contract and amendment ids must be unique: {dupes}")
        return self


@dataclass(frozen=True, slots=True)
class Allowance:
    meter: str
    quantity: int
    dimensions: frozenset[str]
    models: frozenset[str] | None

    def pools(self, meter: str, model: str, dimension: str) -> bool:
        return (
            meter == self.meter
            and dimension in self.dimensions
            and (self.models is None or model in self.models)
        )


@dataclass(frozen=True, slots=True)
class CreditTerms:
    thresholds: tuple[Decimal, ...] = CREDIT_THRESHOLDS
    low_balance: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BudgetTerms:
    limit: Decimal
    soft_thresholds: tuple[Decimal, ...]
    hard_cap: bool


@dataclass(frozen=True, slots=True)
class ContractVersion:
    """The terms in force over [start_us, end_us); `id` None means list price, no contract."""

    id: str | None
    start_us: int
    end_us: int
    tier: str = DEFAULT_TIER
    discount: Decimal = ZERO
    """A fraction of the list-priced amount."""
    rates: Mapping[tuple[str, str, str | None], PriceEntry] = field(default_factory=dict)
    base_fee: Decimal = ZERO
    allowances: tuple[Allowance, ...] = ()
    credits: CreditTerms = CreditTerms()
    budget: BudgetTerms | None = None
    commitment: CommitmentSpec | None = None

    def custom_rate(self, meter: str, model: str, mode: str) -> PriceEntry | None:
        for key in ((meter, model, mode), (meter, model, None), (meter, "*", mode)):
            if key in self.rates:
                return self.rates[key]
        return self.rates.get((meter, "*", None))


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    billing: Billing
    versions: tuple[ContractVersion, ...]

    def terms_at(self, ts_us: int) -> ContractVersion:
        versions = self.versions
        if len(versions) == 1:
            return versions[0]
        return next(v for v in reversed(versions) if v.start_us <= ts_us)


LIST_PRICE = ContractVersion(None, BEGINNING, END)


class Contracts:
    def __init__(self, spec: ContractsSpec):
        self.customers = {c.id: customer_of(c, spec.plans) for c in spec.customers}

    @classmethod
    def of(cls, customers: dict[str, Customer]) -> Contracts:
        """Customers built one at a time (the live catalogue adds them as they appear)."""
        contracts = cls.__new__(cls)
        contracts.customers = customers
        return contracts

    def get(self, customer_id: str) -> Customer | None:
        return self.customers.get(customer_id)


def customer_of(spec: CustomerSpec, plans: Mapping[str, TermsSpec]) -> Customer:
    contract = spec.contract
    if contract is None:
        return Customer(spec.id, MONTHLY, (LIST_PRICE,))
    billing = Billing(PERIOD_MONTHS[contract.billing.period], contract.billing.anchor)
    layers: list[tuple[str, int, TermsSpec]] = [(contract.id, BEGINNING, contract.terms)]
    layers += [(a.id, to_micros(a.effective_from), a) for a in contract.amendments]
    ends = [start for _, start, _ in layers[1:]] + [END]
    versions, terms = [], TermsSpec()
    for (version_id, start, layer), end in zip(layers, ends, strict=True):
        terms = _merge(terms, layer, plans)
        versions.append(_version(version_id, start, end, terms))
    return Customer(spec.id, billing, tuple(versions))


_TERMS = (
    "customer_tier",
    "discount_percent",
    "rates",
    "subscription",
    "credits",
    "budget",
    "commitment",
)


def _merge(previous: TermsSpec, layer: TermsSpec, plans: Mapping[str, TermsSpec]) -> TermsSpec:
    """The previous terms (or the named plan's) overlaid with the terms this layer states."""
    base = previous if layer.plan is None else plans[layer.plan]
    stated = {name: getattr(layer, name) for name in _TERMS if getattr(layer, name) is not None}
    return base.model_copy(update=stated)


def _version(version_id: str, start: int, end: int, terms: TermsSpec) -> ContractVersion:
    subscription = terms.subscription or SubscriptionSpec()
    credits = terms.credits or CreditsSpec()
    budget = terms.budget
    entry_id = f"contract:{version_id}"
    return ContractVersion(
        id=version_id,
        start_us=start,
        end_us=end,
        tier=terms.customer_tier or DEFAULT_TIER,
        discount=CONTEXT.divide(terms.discount_percent or ZERO, HUNDRED),
        rates={
            (r.meter, r.model, r.mode): PriceEntry(entry_id, r.schedules(), r.charge())
            for r in terms.rates or []
        },
        base_fee=subscription.base_fee,
        allowances=tuple(_allowance(a) for a in subscription.included),
        credits=CreditTerms(tuple(credits.thresholds), credits.low_balance),
        budget=None
        if budget is None
        else BudgetTerms(budget.limit, tuple(budget.soft_thresholds), budget.hard_cap),
        commitment=terms.commitment,
    )


def _allowance(spec: AllowanceSpec) -> Allowance:
    dimensions = frozenset(spec.dimensions or METER_DIMENSIONS.get(spec.meter, frozenset()))
    return Allowance(
        spec.meter,
        spec.quantity,
        dimensions,
        None if spec.models is None else frozenset(spec.models),
    )


def load_contracts(path: Path | str) -> Contracts:
    return Contracts(load_model(path, ContractsSpec))
