"""The ground truth of a load-generator run: what the pipeline must end up with.

A manifest is a pure function of the run's parameters, so it holds no wall-clock
reading: two runs with the same parameters write byte-identical files, and a
verifier can compare ClickHouse against it without knowing how it was made.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Total:
    """The summed quantity of one dimension that must be rated for one customer and model."""

    customer_id: str
    meter: str
    model: str
    dimension: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Manifest:
    spec: dict[str, Any]
    """The generator's parameters in JSON form; enough to regenerate every send."""
    sent_total: int
    unique_events: int
    duplicates: int
    late: int
    out_of_order: int
    malformed: dict[str, int]
    """Sends that must be rejected, by reason; every reason the generator produces is listed."""
    totals: tuple[Total, ...]
    """Sorted by customer, meter, model and dimension; unique valid events only."""
    events_per_customer: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["totals"] = tuple(Total(**total) for total in data["totals"])
        return cls(**data)


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    Path(path).write_text(manifest.to_json(), encoding="utf-8")


def load_manifest(path: str | Path) -> Manifest:
    return Manifest.from_json(Path(path).read_text(encoding="utf-8"))


def totals_of(records: Iterable[Mapping[str, Any]]) -> tuple[Total, ...]:
    """Quantities summed per customer, meter, model and dimension, in sorted order."""
    totals: Counter[tuple[str, str, str, str]] = Counter()
    for record in records:
        for dimension, quantity in record["quantities"].items():
            totals[record["customer_id"], record["meter"], record["model"], dimension] += quantity
    return tuple(Total(*key, quantity) for key, quantity in sorted(totals.items()))
