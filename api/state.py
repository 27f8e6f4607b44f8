"""What every request shares: settings, books, keys, the sender, the ClickHouse client.

ClickHouse is opened on the first query, not at start: with embedded chDB only one
process may open a data path, so an API that has only taken events yet leaves the path
to a flow run, and requests take turns on the one chDB connection (a server DSN has
no such limit and is not serialised).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime

from clickhouse_connect.driver.client import Client
from fastapi import HTTPException, Request

from api.auth import ApiKey, KeyRing, RateLimiter, load_keys
from api.sender import Sender
from flows.settings import Settings
from metering.rating.books import Books, load_books
from metering.rating.contracts import Customer
from schemas.event import from_micros, to_micros
from schemas.validation import TimeBounds
from sinks.clickhouse import connect


class ApiState:
    def __init__(self, settings: Settings, keys: list[ApiKey] | None = None):
        self.settings = settings
        self.books: Books = load_books(
            settings.prices_file, settings.contracts_file, settings.costs_file
        )
        self.keys = KeyRing(keys or load_keys(settings.api_keys, settings.api_keys_file))
        self.limiter = RateLimiter(settings.api_rate_limit)
        self.sender = Sender(settings)
        self.bounds = TimeBounds(settings.max_future, settings.max_age)
        self._serial = settings.clickhouse_dsn.startswith("chdb://")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def clickhouse(self) -> Iterator[Client]:
        with self._lock if self._serial else contextlib.nullcontext():
            yield connect(self.settings.clickhouse_dsn, self.settings.clickhouse_database)

    def customer(self, customer_id: str) -> Customer:
        customer = self.books.contracts.get(customer_id)
        if customer is None:
            raise HTTPException(404, f"customer {customer_id!r} is not in the contracts catalogue")
        return customer

    def current_period(self, customer: Customer, now: datetime) -> str:
        """How `meterflow statement` names the period holding now: `YYYY-MM` where periods
        start on the first of the month, else the date they start on."""
        start = from_micros(customer.billing.period(to_micros(now))[0])
        return start.strftime("%Y-%m") if start.day == 1 else start.date().isoformat()


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state
