"""Prepaid credits: grants, real-time drawdown, expiry and consumption alerts.

A grant is in credits; it is worth `credits x credit_value` in currency, the value of a
credit on the customer's plan at the grant's effective time (1 where the plan does not
sell credits, so credits are then currency). Usage draws down the grants in force at
its event time, soonest expiry first, in the shard's one order (the order records
reached Kafka, `metering.ordering`): a grant covers the usage after it, whichever topic the
flow happens to read first. `credits_applied` of a line never exceeds what remains, and
the rest of the line is billable overage: a balance is never negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from metering.rating.alerts import Alert, AlertKind, alert_id
from metering.rating.contracts import CreditTerms
from metering.rating.money import HUNDRED, ZERO, fmt, q18
from metering.rating.state import CustomerState, Grant
from metering.rating.versions import END
from schemas.event import Rejection, RejectReason, from_micros, to_micros


@dataclass(frozen=True, slots=True)
class CreditGrant:
    grant_id: str
    customer_id: str
    credits: Decimal
    effective_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreditExpiry:
    """The record an expiry leaves: what was still unused when the grant lapsed."""

    grant_id: str
    customer_id: str
    expires_at: datetime
    credits: Decimal
    amount: Decimal
    """The same, in currency."""

    def to_row(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "customer_id": self.customer_id,
            "expires_at": self.expires_at,
            "credits": fmt(self.credits),
            "amount": fmt(self.amount),
        }


def parse_grant(record: Mapping[str, Any]) -> CreditGrant | Rejection:
    """A grant from its JSON form: ids as strings, `credits` as a decimal string or number,
    `effective_at` and optional `expires_at` as RFC 3339 times with an offset."""
    grant_id, customer_id = record.get("grant_id"), record.get("customer_id")
    ids = (grant_id if isinstance(grant_id, str) else None, customer_id)
    for name in ("grant_id", "customer_id", "credits", "effective_at"):
        if record.get(name) is None:
            return Rejection(
                RejectReason.MISSING_FIELD, f"required field '{name}' is missing", *ids
            )
    if not isinstance(grant_id, str) or not isinstance(customer_id, str):
        return Rejection(RejectReason.INVALID_FIELD, "'grant_id' and 'customer_id' must be strings")
    try:
        credits = Decimal(str(record["credits"]))
    except InvalidOperation:
        credits = Decimal("NaN")
    if not credits.is_finite() or credits <= 0:
        detail = f"'credits' must be a positive number, got {record['credits']!r}"
        return Rejection(RejectReason.INVALID_QUANTITY, detail, *ids)
    effective_at, expires_at = _time(record["effective_at"]), _time(record.get("expires_at"))
    if effective_at is None or (expires_at is None and record.get("expires_at") is not None):
        detail = "'effective_at' and 'expires_at' must be RFC 3339 times with a UTC offset"
        return Rejection(RejectReason.INVALID_FIELD, detail, *ids)
    if expires_at is not None and expires_at <= effective_at:
        return Rejection(
            RejectReason.INVALID_FIELD, "'expires_at' must be after 'effective_at'", *ids
        )
    return CreditGrant(grant_id, customer_id, credits, effective_at, expires_at)


def _time(value: Any) -> datetime | None:
    try:
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def draw(customer: CustomerState, amount: Decimal, ts_us: int) -> tuple[Decimal, list[Grant]]:
    """Take up to `amount` from the grants in force at `ts_us`; return what was taken
    and the grants it came from."""
    active = [
        g
        for g in customer.grants.values()
        if g.remaining > 0 and not g.expired and g.start_us <= ts_us < g.end_us
    ]
    active.sort(key=lambda g: (g.end_us, g.start_us, g.grant_id))
    taken, used = ZERO, []
    for grant in active:
        if taken == amount:
            break
        take = min(grant.remaining, amount - taken)
        grant.remaining -= take
        taken += take
        used.append(grant)
    return taken, used


def balance(customer: CustomerState, ts_us: int) -> Decimal:
    return sum(
        (
            g.remaining
            for g in customer.grants.values()
            if not g.expired and g.start_us <= ts_us < g.end_us
        ),
        ZERO,
    )


def credit_alerts(
    customer_id: str,
    customer: CustomerState,
    used: list[Grant],
    terms: CreditTerms,
    credit_value: Decimal,
    ts_us: int,
    period_start: datetime,
    at: datetime,
) -> list[Alert]:
    """Thresholds each drawn grant reached for the first time, and a low balance."""
    alerts = []
    for grant in used:
        consumed = grant.granted - grant.remaining
        for threshold in terms.thresholds:
            if threshold not in grant.fired and consumed * HUNDRED >= threshold * grant.granted:
                grant.fired.add(threshold)
                kind = AlertKind.CREDIT_THRESHOLD
                alerts.append(
                    Alert(
                        alert_id(customer_id, kind, grant.grant_id, threshold),
                        customer_id,
                        kind,
                        threshold,
                        q18(consumed * HUNDRED / grant.granted),
                        period_start,
                        at,
                        grant.grant_id,
                    )
                )
    if used:
        alerts += low_balance_alert(
            customer_id, customer, terms, credit_value, ts_us, period_start, at
        )
    return alerts


def low_balance_alert(
    customer_id: str,
    customer: CustomerState,
    terms: CreditTerms,
    credit_value: Decimal,
    ts_us: int,
    period_start: datetime,
    at: datetime,
) -> list[Alert]:
    """The low-balance alert, once until a grant re-arms it: after a draw, or at the
    expiry that takes the balance under the line."""
    if terms.low_balance is None or not customer.low_armed:
        return []
    left = balance(customer, ts_us)
    if left >= terms.low_balance * credit_value:
        return []
    customer.low_armed = False
    customer.low_alerts += 1
    kind = AlertKind.CREDIT_LOW
    return [
        Alert(
            alert_id(customer_id, kind, customer.low_alerts),
            customer_id,
            kind,
            terms.low_balance,
            q18(left / credit_value),
            period_start,
            at,
        )
    ]


def add_grant(
    customer: CustomerState, grant: CreditGrant, credit_value: Decimal, low: Decimal | None
) -> None:
    """Record a grant once (a replayed grant is ignored) and re-arm the low-balance alert."""
    if grant.grant_id in customer.grants:
        return
    money = grant.credits * credit_value
    end = to_micros(grant.expires_at) if grant.expires_at is not None else END
    customer.grants[grant.grant_id] = Grant(
        grant.grant_id, money, money, credit_value, to_micros(grant.effective_at), end
    )
    if low is None or balance(customer, to_micros(grant.effective_at)) >= low * credit_value:
        customer.low_armed = True


def expire(customer_id: str, customer: CustomerState, now_us: int) -> list[CreditExpiry]:
    """Lapse every grant whose expiry has passed, once, with what it still held."""
    out = []
    for grant in customer.grants.values():
        if grant.expired or grant.end_us > now_us:
            continue
        out.append(
            CreditExpiry(
                grant.grant_id,
                customer_id,
                from_micros(grant.end_us),
                q18(grant.remaining / grant.credit_value),
                grant.remaining,
            )
        )
        grant.remaining, grant.expired = ZERO, True
    return out
