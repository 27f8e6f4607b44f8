"""Everything rating remembers between events, as plain picklable data.

The dataflow snapshots a `RatingState` (or the `CustomerState` of each key) as it is:
dicts of small slotted dataclasses holding ints, strings and Decimals, no locks, no
callables. Accumulators are keyed by period start (microseconds), so a late event
updates its own period and old periods can be dropped once they are closed.
"""

from __future__ import annotations

import pickle
from collections.abc import ItemsView, Mapping, ValuesView
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from metering.rating.money import ZERO
from metering.rating.versions import END
from schemas.event import PickledByPosition, to_micros


@dataclass(slots=True)
class Tally(PickledByPosition):
    """A cumulative quantity and Q(F(quantity)), the quantized amount it has cost so far."""

    quantity: int = 0
    amount: Decimal = ZERO


@dataclass(slots=True)
class Carried(PickledByPosition):
    """Amounts carried by a period's events (percentage and dynamic charges): their sum,
    how many events, and the charge so far."""

    base: Decimal = ZERO
    events: int = 0
    amount: Decimal = ZERO


@dataclass(slots=True)
class Pool(PickledByPosition):
    """An included allowance: units used, their gross amount, and the billable amount."""

    quantity: int = 0
    gross: Decimal = ZERO
    amount: Decimal = ZERO


@dataclass(slots=True)
class Discount(PickledByPosition):
    """Cumulative list-priced amount and the quantized discount on it."""

    base: Decimal = ZERO
    discount: Decimal = ZERO


@dataclass(slots=True)
class Grant(PickledByPosition):
    """A prepaid credit grant; money in currency, `credit_value` currency per credit."""

    grant_id: str
    granted: Decimal
    remaining: Decimal
    credit_value: Decimal
    start_us: int
    end_us: int
    fired: set[Decimal] = field(default_factory=set)
    expired: bool = False


@dataclass(slots=True)
class Budget(PickledByPosition):
    spent: Decimal = ZERO
    fired: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Aggregate:
    """A period's aggregate of one `max`, `latest` or `unique_count` dimension
    (`metering.rating.aggregation`): the highest or latest quantity (with the latest
    event's time and id), or the 64-bit hashes of the distinct values seen."""

    value: int = 0
    latest: tuple[int, str] | None = None
    seen: set[int] = field(default_factory=set)


PeriodKey = tuple[int, str, str]
K = TypeVar("K", bound=tuple[int, str] | tuple[int, str, str] | tuple[int, str, int])
V = TypeVar("V")


@dataclass(slots=True)
class CustomerState(PickledByPosition):
    usage: dict[PeriodKey, Tally] = field(default_factory=dict)
    """(period, price resolution, dimension) -> list-price tally."""
    quantities: dict[PeriodKey, int] = field(default_factory=dict)
    """(period, price resolution, dimension) -> quantity rated, for a flat schedule whose
    unit price is exact (`Schedule.unit`): no amount to keep, each line's is its own."""
    costs: dict[PeriodKey, Tally] = field(default_factory=dict)
    """(period, cost resolution, dimension) -> cost tally."""
    carried: dict[tuple[int, str], Carried] = field(default_factory=dict)
    """(period, price resolution) -> carried amounts of a percentage or dynamic charge."""
    pools: dict[tuple[int, str, int], Pool] = field(default_factory=dict)
    """(period, contract version, allowance index) -> allowance pool."""
    discounts: dict[tuple[int, str], Discount] = field(default_factory=dict)
    """(period, contract version) -> discount tally."""
    budgets: dict[int, Budget] = field(default_factory=dict)
    """period -> spend against the budget."""
    aggregates: dict[PeriodKey, Aggregate] = field(default_factory=dict)
    """(period, price resolution, dimension) -> aggregate of a dimension not summed."""
    corrected: dict[tuple[int, str], str] = field(default_factory=dict)
    """(period, corrected event id) -> the correction's event id: each applies once."""
    grants: dict[str, Grant] = field(default_factory=dict)
    low_alerts: int = 0
    """How many credit_low alerts have fired: part of the next one's id."""
    low_armed: bool = True

    def rated(self, key: PeriodKey) -> int:
        """The quantity a period has rated under a price resolution, however it is kept."""
        tally = self.usage.get(key)
        return self.quantities.get(key, 0) if tally is None else tally.quantity

    def forget_before(self, period_start_us: int) -> None:
        _forget(self.usage, period_start_us)
        _forget(self.quantities, period_start_us)
        _forget(self.costs, period_start_us)
        _forget(self.aggregates, period_start_us)
        _forget(self.carried, period_start_us)
        _forget(self.corrected, period_start_us)
        _forget(self.pools, period_start_us)
        _forget(self.discounts, period_start_us)
        for period in [p for p in self.budgets if p < period_start_us]:
            del self.budgets[period]


def _forget(table: dict[K, V], before_us: int) -> None:
    for key in [k for k in table if k[0] < before_us]:
        del table[key]


class Customers(dict[str, CustomerState]):
    """Customers' states, each kept as it was pickled at the last snapshot until it is
    reached again: a snapshot pickles only the customers reached since the one before,
    so it costs the customers active in an epoch, not every customer the shard has seen.
    Every way to a state counts as reaching it (reading one included: the caller may
    change it), so a snapshot is never stale, at worst re-pickled needlessly."""

    def __init__(self, states: Mapping[str, CustomerState] | None = None):
        super().__init__(states or {})
        self._pickled: dict[str, bytes] = {}

    def __getitem__(self, customer_id: str) -> CustomerState:
        self._pickled.pop(customer_id, None)
        return super().__getitem__(customer_id)

    def get(  # type: ignore[override]
        self, customer_id: str, default: CustomerState | None = None
    ) -> CustomerState | None:
        self._pickled.pop(customer_id, None)
        return super().get(customer_id, default)

    def __setitem__(self, customer_id: str, state: CustomerState) -> None:
        self._pickled.pop(customer_id, None)
        super().__setitem__(customer_id, state)

    def reach(self, customer_id: str) -> CustomerState:
        """A customer's state, made if new: the engine's way in, once an event."""
        self._pickled.pop(customer_id, None)
        found = dict.get(self, customer_id)
        if found is None:
            found = CustomerState()
            dict.__setitem__(self, customer_id, found)
        return found

    def __delitem__(self, customer_id: str) -> None:
        self._pickled.pop(customer_id, None)
        super().__delitem__(customer_id)

    def setdefault(self, customer_id: str, default: CustomerState) -> CustomerState:
        self._pickled.pop(customer_id, None)
        return super().setdefault(customer_id, default)

    def pop(self, customer_id: str, *default: Any) -> Any:
        self._pickled.pop(customer_id, None)
        return super().pop(customer_id, *default)

    def values(self) -> ValuesView[CustomerState]:  # type: ignore[override]
        self._pickled.clear()
        return super().values()

    def items(self) -> ItemsView[str, CustomerState]:  # type: ignore[override]
        self._pickled.clear()
        return super().items()

    def __reduce__(self) -> tuple[Any, tuple[dict[str, bytes]]]:
        pickled = self._pickled
        for customer_id, state in super().items():
            if customer_id not in pickled:
                pickled[customer_id] = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
        return _restore, (dict(pickled),)


def _restore(pickled: dict[str, bytes]) -> Customers:
    customers = Customers({c: pickle.loads(state) for c, state in pickled.items()})
    customers._pickled = pickled
    return customers


@dataclass(slots=True)
class RatingState:
    """Rating state for any number of customers."""

    customers: Customers = field(default_factory=Customers)
    lapse_us: int = END
    """When the first grant not yet lapsed expires: kept, not searched for every event."""

    def customer(self, customer_id: str) -> CustomerState:
        return self.customers.reach(customer_id)

    def next_expiry_us(self) -> int:
        """When the first grant not yet lapsed expires (END when none will)."""
        return min(
            (
                g.end_us
                for customer in self.customers.values()
                for g in customer.grants.values()
                if not g.expired
            ),
            default=END,
        )

    def forget_before(self, cutoff: datetime) -> None:
        """Drop the accumulators of periods that started before `cutoff` (closed periods)."""
        for customer in self.customers.values():
            customer.forget_before(to_micros(cutoff))
