"""The list price book: effective-dated versions of prices per meter, model, mode and tier.

A price states rates per dimension (`rates`), or bands of them (`graduated`, `volume`),
per `per` base units (unit, thousand, million, or hour of a millisecond dimension). The
amount of an event is the formula sum(quantity[d] x rate[d]) over its dimensions, each
dimension tiered on its own cumulative quantity in the period. Dimensions are disjoint
counts (cached input tokens are not also counted in input tokens). A meter dimension
without a rate is free, except `reasoning_tokens`, which is billed at the `output_tokens`
rate unless it has its own, as model providers bill reasoning as output. Bands may add
flat fees and packages, and a price may give free units (`metering.rating.tiers`); the
forms `percentage`, `dynamic` and `matrix` price what the event carries
(`metering.rating.charges`), and `recurring` a level settled at period close
(`metering.rating.recurring`).

A customer tier whose `credit_value` is set sells credits: its rates are in credits
(1 image = 5 credits) and become currency at that value when the book is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    PositiveInt,
    ValidationInfo,
    model_validator,
)

from metering.rating.charges import Charge, DynamicSpec, MatrixSpec, PercentageSpec, matrix
from metering.rating.loading import Rate, Spec, load_model
from metering.rating.money import ZERO
from metering.rating.property_prices import UNLISTED, PropertyPrices, Values, where_values
from metering.rating.recurring import RecurringSpec
from metering.rating.tiers import PER_UNITS, Kind, Schedule
from metering.rating.versions import Span, Versions
from schemas.event import to_micros
from schemas.meters import METER_DIMENSIONS

CATALOGUE_METERS = {"catalogue_meters": True}
"""Validation context of live catalogue records: their meters are checked against the
catalogue's meters (`metering.catalogue`), not only the built-in ones."""


def _known_meter(meter: str, info: ValidationInfo) -> str:
    if meter not in METER_DIMENSIONS and not (info.context or {}).get("catalogue_meters"):
        raise ValueError(f"meter {meter!r} is not one of {sorted(METER_DIMENSIONS)}")
    return meter


Meter = Annotated[str, AfterValidator(_known_meter)]
Mode = Literal["realtime", "batch"]
Per = Literal["unit", "thousand", "million", "hour"] | PositiveInt
DEFAULT_TIER = "default"


class BandSpec(Spec):
    up_to: PositiveInt | None = None
    """Inclusive upper bound in base units; omitted on the last, unbounded band."""
    rates: dict[str, Rate]
    flat_fees: dict[str, Rate] | None = None
    """Per dimension: charged once when usage enters the band (graduated), or as the
    fee of the band reached (volume)."""
    package: PositiveInt | None = None
    """The band's rates are per started package of this many units (overrides the price's)."""


class PricingSpec(Spec):
    """How one meter/model (optionally one mode) is priced: exactly one of the three forms."""

    meter: Meter
    model: str
    mode: Mode | None = None
    """Omitted: the same price in every mode."""
    per: Per = "unit"
    rates: dict[str, Rate] | None = None
    graduated: list[BandSpec] | None = None
    volume: list[BandSpec] | None = None
    package: PositiveInt | None = None
    """Rates are per started package of this many units, not per `per` units."""
    free: dict[str, PositiveInt] | None = None
    """Free units of a dimension per period: the first ones to arrive cost nothing."""
    percentage: PercentageSpec | None = None
    dynamic: DynamicSpec | None = None
    matrix: MatrixSpec | None = None
    recurring: RecurringSpec | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        forms = [f for f in _FORMS if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError(f"give exactly one of {', '.join(repr(f) for f in _FORMS)}")
        carried = self.percentage or self.dynamic
        if carried is not None and carried.amount.dimension is not None:
            check_dimension(self.meter, carried.amount.dimension, "unit")
        if self.graduated is not None or self.volume is not None:
            _check_bands(self.graduated or self.volume or [])
        packaged = self.package or any(b.package for b in self.graduated or self.volume or [])
        if packaged and self.per != "unit":
            raise ValueError("a package price is per package: give 'package' or 'per', not both")
        for dimension in self.dimensions() | set(self.free or {}):
            check_dimension(self.meter, dimension, self.per)
        if unpriced := sorted(set(self.free or {}) - self.dimensions()):
            raise ValueError(f"free units of {unpriced}, which this price does not rate")
        return self

    def dimensions(self) -> set[str]:
        if self.rates is not None:
            return set(self.rates)
        if self.matrix is not None:
            return self.matrix.dimensions()
        if self.recurring is not None:
            return set(self.recurring.rates)
        return {d for band in self.graduated or self.volume or [] for d in band.rates}

    def charge(self) -> Charge | None:
        """The price of a form computed from what the event carries, if it is one."""
        if self.matrix is not None:
            return matrix(self.matrix, self._per())
        if self.recurring is not None:
            return self.recurring.build()
        carried = self.percentage or self.dynamic
        return None if carried is None else carried.build()

    def _per(self) -> int:
        return self.per if isinstance(self.per, int) else PER_UNITS[self.per]

    def schedules(self) -> dict[str, Schedule]:
        """Per-dimension schedules; none for a form priced on what the event carries."""
        if self.charge_form:
            return {}
        per = self._per()
        free = self.free or {}
        if self.rates is not None and self.package is None and not free:
            out = {d: Schedule(Kind.FLAT, per, (None,), (r,)) for d, r in self.rates.items()}
        else:
            kind = Kind.VOLUME if self.volume is not None else Kind.GRADUATED
            bands = self.graduated or self.volume or [BandSpec(rates=self.rates or {})]
            bounds = tuple(None if b.up_to is None else Decimal(b.up_to) for b in bands)
            packages = tuple(b.package or self.package for b in bands)
            out = {
                d: Schedule(
                    kind,
                    per,
                    bounds,
                    tuple(b.rates[d] for b in bands),
                    tuple((b.flat_fees or {}).get(d, ZERO) for b in bands),
                    packages if any(packages) else (),
                    free.get(d, 0),
                )
                for d in bands[0].rates
            }
        return with_reasoning(self.meter, out)

    @property
    def charge_form(self) -> bool:
        return any(getattr(self, f) is not None for f in _FORMS[3:])


_FORMS = ("rates", "graduated", "volume", "percentage", "dynamic", "matrix", "recurring")


def check_dimension(meter: str, dimension: str, per: Per) -> None:
    """Built-in meters' dimensions; a catalogue meter's are checked by the catalogue."""
    if meter in METER_DIMENSIONS and dimension not in METER_DIMENSIONS[meter]:
        allowed = sorted(METER_DIMENSIONS[meter])
        raise ValueError(f"dimension {dimension!r} is not measured by {meter!r} ({allowed})")
    if per == "hour" and not dimension.endswith("_ms"):
        raise ValueError(f"'per: hour' needs a millisecond dimension, not {dimension!r}")


def with_reasoning(meter: str, schedules: dict[str, Schedule]) -> dict[str, Schedule]:
    """Reasoning tokens at the output rate unless they have their own."""
    if meter == "llm.tokens" and "output_tokens" in schedules:
        schedules.setdefault("reasoning_tokens", schedules["output_tokens"])
    return schedules


def _check_bands(bands: list[BandSpec]) -> None:
    if not bands:
        raise ValueError("a tiered price needs at least one band")
    if bands[-1].up_to is not None or any(b.up_to is None for b in bands[:-1]):
        raise ValueError("every band but the last needs 'up_to'; the last has none")
    bounds = [b.up_to or 0 for b in bands[:-1]]
    if any(lo >= hi for lo, hi in pairwise(bounds)):
        raise ValueError(f"band bounds must increase, got {bounds}")
    if any(set(b.rates) != set(bands[0].rates) for b in bands):
        raise ValueError("every band must rate the same dimensions")
    if stray := sorted({d for b in bands for d in b.flat_fees or {}} - set(bands[0].rates)):
        raise ValueError(f"flat fees for {stray}, which the bands do not rate")


class PriceSpec(PricingSpec):
    customer_tier: str = DEFAULT_TIER
    where: dict[str, Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    """The event property values this price is for (`metering.rating.property_prices`);
    without it, the price of every other value."""


class TierSpec(Spec):
    description: str | None = None
    credit_value: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    """Currency per credit, for a tier that sells credits; its rates are then in credits."""


class PriceVersionSpec(Spec):
    id: str = Field(min_length=1)
    effective_from: AwareDatetime
    prices: list[PriceSpec]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [
            (p.meter, p.model, p.mode, p.customer_tier, where_values(p.where)) for p in self.prices
        ]
        if dupes := sorted({str(k) for k in keys if keys.count(k) > 1}):
            raise ValueError(f"more than one price for {', '.join(dupes)}")
        return self


class PriceBookSpec(Spec):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    tiers: dict[str, TierSpec] = Field(default_factory=lambda: {DEFAULT_TIER: TierSpec()})
    versions: list[PriceVersionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if DEFAULT_TIER not in self.tiers:
            raise ValueError(f"tiers must include {DEFAULT_TIER!r}, the list price")
        starts = [v.effective_from for v in self.versions]
        if starts != sorted(set(starts)):
            raise ValueError("versions must be in strictly increasing 'effective_from' order")
        ids = [v.id for v in self.versions]
        if len(set(ids)) != len(ids):
            raise ValueError("version ids must be unique")
        names: dict[str, list[str]] = {}
        for version in self.versions:
            for price in version.prices:
                if price.where is not None:
                    named = names.setdefault(price.meter, sorted(price.where))
                    if sorted(price.where) != named:
                        raise ValueError(
                            f"version {version.id!r}: a price of {price.meter!r} is where "
                            f"{sorted(price.where)}, another where {named}: name the same "
                            "properties"
                        )
                if price.customer_tier not in self.tiers:
                    raise ValueError(
                        f"version {version.id!r}: customer_tier {price.customer_tier!r} "
                        f"is not one of the tiers {sorted(self.tiers)}"
                    )
        return self


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One price as loaded: what a rated line traces back to by `version`."""

    version: str
    schedules: Mapping[str, Schedule]
    charge: Charge | None = None
    where: Mapping[str, str] | None = None


_Key = tuple[str, str, str | None, str, Values]


class PriceBook:
    def __init__(self, spec: PriceBookSpec):
        self.currency = spec.currency
        self.credit_values = {name: t.credit_value for name, t in spec.tiers.items()}
        with_versions = []
        for version in spec.versions:
            entries: dict[_Key, PriceEntry] = {}
            for p in version.prices:
                schedules, charge = p.schedules(), p.charge()
                value = self.credit_values[p.customer_tier]
                if value is not None:
                    schedules = {d: s.scaled(value) for d, s in schedules.items()}
                    charge = None if charge is None else charge.scaled(value)
                entries[p.meter, p.model, p.mode, p.customer_tier, where_values(p.where)] = (
                    PriceEntry(version.id, schedules, charge, p.where)
                )
            with_versions.append((to_micros(version.effective_from), entries))
        self._versions = Versions(with_versions)
        self._entries = [entries for _, entries in with_versions]
        self.models = frozenset((p.meter, p.model) for v in spec.versions for p in v.prices)
        """(meter, model) pairs the book has ever priced: the catalogue of known models."""
        self.by_property = PropertyPrices.of(
            (p.meter, p.where) for v in spec.versions for p in v.prices if p.where is not None
        )

    def entries(self) -> Sequence[Mapping[_Key, PriceEntry]]:
        """The prices each version states, oldest first."""
        return self._entries

    def spans(
        self, meter: str, model: str, mode: str, tier: str, values: Values = UNLISTED
    ) -> list[Span[PriceEntry]]:
        """The list price over time for a customer tier, falling back to the default tier;
        within a tier, the price where the event's property values are, then the default."""
        wheres = (values, UNLISTED) if values else (UNLISTED,)
        keys: list[_Key] = [
            (meter, model, m, t, w)
            for t in (tier, DEFAULT_TIER)
            for w in wheres
            for m in (mode, None)
        ]

        def pick(entries: Mapping[_Key, PriceEntry]) -> PriceEntry | None:
            return next((entries[k] for k in keys if k in entries), None)

        return self._versions.spans(pick)


def load_prices(path: Path | str) -> PriceBook:
    return PriceBook(load_model(path, PriceBookSpec))
