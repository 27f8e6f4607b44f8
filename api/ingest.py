"""`POST /v1/events`: one event or a batch of up to 1,000 in the contract's JSON form.

Each event is checked with the flow's own validation (`schemas.validation`) and the
valid ones are produced as Confluent-framed Avro by the idempotent producer. The answer
is 202 with a status per event, `accepted` only once Kafka acknowledged it; 503 with
`Retry-After` when Kafka or the registry cannot take them, where events that were
acknowledged still say `accepted` and the rest `unavailable` (re-sending the whole batch
is safe: the flow drops re-sent `event_id`s as duplicates).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.access import Caller, State, require_reader
from api.sender import Unavailable
from schemas.event import Rejection, RejectReason
from schemas.jsonform import parse_record, to_record
from schemas.validation import utc_now, validate

MAX_BATCH = 1000
RETRY_AFTER = "5"

router = APIRouter()


@router.post("/v1/events", status_code=202)
async def ingest(request: Request, key: Caller, state: State) -> JSONResponse:
    """Validate, produce and report every event; see the module docstring."""
    body = await _bounded_body(request, state.settings.api_body_limit)
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"{RejectReason.MALFORMED_JSON.value}: {exc}") from exc
    items = payload if isinstance(payload, list) else [payload]
    if not 1 <= len(items) <= MAX_BATCH:
        raise HTTPException(400, f"a batch holds 1 to {MAX_BATCH} events, got {len(items)}")
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("customer_id"), str):
            require_reader(key, item["customer_id"])
    now = utc_now()
    statuses: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        parsed = parse_record(item)
        outcome = parsed if isinstance(parsed, Rejection) else validate(parsed, now, state.bounds)
        if isinstance(outcome, Rejection):
            statuses.append(_rejected(index, outcome))
        else:
            statuses.append({"index": index, "event_id": outcome.event_id, "status": "sent"})
            records.append(to_record(outcome))
    sent = [s for s in statuses if s["status"] == "sent"]
    try:
        outcomes = await run_in_threadpool(state.sender.send, records) if records else []
    except Unavailable as exc:
        outcomes = [str(exc)] * len(records)
    for status, failure in zip(sent, outcomes, strict=True):
        status.update(
            {"status": "accepted"}
            if failure is None
            else {"status": "unavailable", "detail": failure}
        )
    accepted = sum(1 for s in statuses if s["status"] == "accepted")
    unavailable = len(sent) - accepted
    body_out = {
        "accepted": accepted,
        "rejected": len(statuses) - len(sent),
        "unavailable": unavailable,
        "events": statuses,
    }
    if unavailable:
        return JSONResponse(body_out, status_code=503, headers={"Retry-After": RETRY_AFTER})
    return JSONResponse(body_out, status_code=202)


def _rejected(index: int, rejection: Rejection) -> dict[str, Any]:
    return {
        "index": index,
        "event_id": rejection.event_id,
        "status": "rejected",
        "reason": rejection.reason.value,
        "detail": rejection.detail,
    }


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
