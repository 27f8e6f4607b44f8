"""The cost book: what the provider charges us per model and dimension, effective-dated,
so every rated line carries its cost and margin. Costs are flat rates; versions overlay
like the price book's. Reasoning tokens cost the output rate unless listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import AwareDatetime, Field, model_validator

from metering.rating.loading import Rate, Spec, load_model
from metering.rating.pricebook import Meter, Mode, Per, check_dimension, with_reasoning
from metering.rating.tiers import PER_UNITS, Kind, Schedule
from metering.rating.versions import Span, Versions
from schemas.event import to_micros


class CostSpec(Spec):
    meter: Meter
    model: str
    mode: Mode | None = None
    per: Per = "unit"
    rates: dict[str, Rate]

    @model_validator(mode="after")
    def _dimensions(self) -> Self:
        for dimension in self.rates:
            check_dimension(self.meter, dimension, self.per)
        return self


class CostVersionSpec(Spec):
    id: str = Field(min_length=1)
    effective_from: AwareDatetime
    costs: list[CostSpec]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [(c.meter, c.model, c.mode) for c in self.costs]
        if dupes := sorted({str(k) for k in keys if keys.count(k) > 1}):
            raise ValueError(f"more than one cost for {', '.join(dupes)}")
        return self


class CostBookSpec(Spec):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    versions: list[CostVersionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        starts = [v.effective_from for v in self.versions]
        if starts != sorted(set(starts)):
            raise ValueError("versions must be in strictly increasing 'effective_from' order")
        if len({v.id for v in self.versions}) != len(self.versions):
            raise ValueError("version ids must be unique")
        return self


@dataclass(frozen=True, slots=True)
class CostEntry:
    version: str
    schedules: Mapping[str, Schedule]


_Key = tuple[str, str, str | None]


class CostBook:
    def __init__(self, spec: CostBookSpec):
        self.currency = spec.currency
        versions = []
        for version in spec.versions:
            entries: dict[_Key, CostEntry] = {}
            for c in version.costs:
                per = c.per if isinstance(c.per, int) else PER_UNITS[c.per]
                flat = {d: Schedule(Kind.FLAT, per, (None,), (r,)) for d, r in c.rates.items()}
                entries[c.meter, c.model, c.mode] = CostEntry(
                    version.id, with_reasoning(c.meter, flat)
                )
            versions.append((to_micros(version.effective_from), entries))
        self._versions = Versions(versions)

    def spans(self, meter: str, model: str, mode: str) -> list[Span[CostEntry]]:
        keys = [(meter, model, mode), (meter, model, None)]

        def pick(entries: Mapping[_Key, CostEntry]) -> CostEntry | None:
            return next((entries[k] for k in keys if k in entries), None)

        return self._versions.spans(pick)


def load_costs(path: Path | str) -> CostBook:
    return CostBook(load_model(path, CostBookSpec))
