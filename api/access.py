"""Who is calling: the key from `Authorization: Bearer`, `X-API-Key` or, for reads only
(no cross-site writes with a browser's cookie), the portal's cookie; 401 without a valid
one, 429 past its rate, 403 for another customer's data."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.auth import ApiKey
from api.state import ApiState, state_of

COOKIE = "meterflow_key"


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie = request.cookies.get(COOKIE) if request.method == "GET" else None
    return request.headers.get("x-api-key") or cookie


def authenticate(state: ApiState, presented: str | None) -> ApiKey:
    key = state.keys.match(presented) if presented else None
    if key is None:
        raise HTTPException(
            401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    wait = state.limiter.wait_for(key)
    if wait:
        raise HTTPException(
            429, "rate limit exceeded for this key", headers={"Retry-After": str(math.ceil(wait))}
        )
    return key


def caller(request: Request, state: Annotated[ApiState, Depends(state_of)]) -> ApiKey:
    return authenticate(state, presented_key(request))


def require_reader(key: ApiKey, customer_id: str) -> None:
    if not key.may_read(customer_id):
        raise HTTPException(403, f"this key may not read or write for customer {customer_id!r}")


def require_operator(key: ApiKey) -> None:
    if not key.operator:
        raise HTTPException(403, "only an operator key may do this")


Caller = Annotated[ApiKey, Depends(caller)]
State = Annotated[ApiState, Depends(state_of)]
