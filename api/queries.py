"""Reads and grants: usage per window, balance, entitlement, statements, credit grants.

Money is exact: `Decimal` strings, never floats. Times are UTC, the time zone billing
periods are defined in (`metering.rating.periods`).
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from api.access import Caller, State, require_operator, require_reader
from api.state import ApiState
from flows.grants import grant_record, send_grants
from metering.rating.credits import parse_grant
from metering.rating.money import fmt
from reports.balance import Balance, balance, standing
from reports.statement import statement, to_json, write_csv
from reports.windows import UsageQuery, totals, usage_windows
from schemas.event import Rejection, from_micros, to_micros
from schemas.validation import utc_now

router = APIRouter(prefix="/v1/customers/{customer_id}")


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(400, f"'{name}' {value!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise HTTPException(400, f"'{name}' must carry a UTC offset")
    return parsed


def usage_json(
    state: ApiState,
    customer_id: str,
    start: datetime | None,
    end: datetime | None,
    window: str,
    group_by: tuple[str, ...],
    meter: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Usage per window and group; from the start of the current period to now by default."""
    customer = state.customer(customer_id)
    now = utc_now()
    start = start or from_micros(customer.billing.period(to_micros(now))[0])
    end = end or now
    try:
        query = UsageQuery(customer, start, end, window, group_by, meter, model)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    with state.clickhouse() as client:
        windows = usage_windows(client, query)
    return {
        "customer_id": customer_id,
        "currency": state.books.currency,
        "time_zone": "UTC",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "window": window,
        "group_by": list(group_by),
        "windows": [w.to_json() for w in windows],
        "totals": totals(windows),
    }


def balance_of(state: ApiState, customer_id: str) -> Balance:
    customer = state.customer(customer_id)
    with state.clickhouse() as client:
        return balance(client, state.books, customer, utc_now())


@router.get("/usage")
def get_usage(
    customer_id: str,
    key: Caller,
    state: State,
    start: Annotated[str | None, Query(alias="from", description="RFC 3339")] = None,
    end: Annotated[str | None, Query(alias="to", description="RFC 3339")] = None,
    window: Annotated[str, Query(description="minute, hour, day or month")] = "day",
    group_by: Annotated[str, Query(description="meter,model,feature,project")] = "",
    meter: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Quantities and exact money per window and group, from the ClickHouse roll-ups."""
    require_reader(key, customer_id)
    groups = tuple(g for g in group_by.split(",") if g)
    return usage_json(
        state,
        customer_id,
        _time(start, "from"),
        _time(end, "to"),
        window,
        groups,
        meter,
        model,
    )


@router.get("/balance")
def get_balance(customer_id: str, key: Caller, state: State) -> dict[str, Any]:
    """Spend this period against budget, prepaid credits left, and every alert's state."""
    require_reader(key, customer_id)
    return balance_of(state, customer_id).to_json()


@router.get("/entitlement", responses={402: {"description": "hard cap or credits exhausted"}})
def get_entitlement(customer_id: str, key: Caller, state: State) -> JSONResponse:
    """200 `allowed: true`, or 402 with the reason a gateway passes on (`hard_cap_reached`,
    `credits_exhausted`): one read of the customer's row of `customer_balances`."""
    require_reader(key, customer_id)
    customer = state.customer(customer_id)
    with state.clickhouse() as client:
        now = standing(client, state.books, customer, utc_now())
    refusal = now.refusal
    budget = customer.terms_at(to_micros(utc_now())).budget
    body = {
        "customer_id": customer_id,
        "allowed": refusal is None,
        "reason": refusal,
        "spent": fmt(now.spent),
        "budget": None if budget is None else fmt(budget.limit),
        "credits_remaining": fmt(now.remaining),
    }
    return JSONResponse(body, status_code=200 if refusal is None else 402)


@router.get(
    "/statements/{period}",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def get_statement(
    customer_id: str, period: str, request: Request, key: Caller, state: State
) -> Response:
    """`meterflow statement` as JSON, or as CSV with `Accept: text/csv` (or `?format=csv`)."""
    require_reader(key, customer_id)
    state.customer(customer_id)
    try:
        with state.clickhouse() as client:
            result = statement(client, state.books, customer_id, period)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    wants_csv = request.query_params.get("format") == "csv" or "text/csv" in request.headers.get(
        "accept", ""
    )
    if wants_csv:
        out = io.StringIO()
        write_csv(result, out)
        name = f"statement-{customer_id}-{period}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSONResponse(to_json(result))


@router.post("/grants", status_code=202)
async def post_grant(
    customer_id: str,
    key: Caller,
    state: State,
    grant: Annotated[
        dict[str, Any],
        Body(examples=[{"credits": "500", "expires_at": "2026-12-31T00:00:00Z"}]),
    ],
) -> dict[str, Any]:
    """A prepaid credit grant (operator keys only), sent to the grants topic and
    acknowledged by Kafka before the answer; `grant_id` defaults to a new UUID and
    `effective_at` to now, and re-sending a `grant_id` changes nothing."""
    require_operator(key)
    state.customer(customer_id)
    record = {
        "grant_id": f"grant-{uuid.uuid4()}",
        "effective_at": utc_now().isoformat(),
        **grant,
        "customer_id": customer_id,
    }
    parsed = parse_grant(record)
    if isinstance(parsed, Rejection):
        raise HTTPException(400, f"{parsed.reason.value}: {parsed.detail}")
    try:
        await run_in_threadpool(send_grants, state.settings, [parsed])
    except RuntimeError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from exc
    return {"status": "accepted", **grant_record(parsed)}
