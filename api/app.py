"""The app factory and `meterflow serve`: FastAPI on uvicorn.

FastAPI for its request validation and generated OpenAPI (`/openapi.json`, `/docs`),
uvicorn as its well-kept ASGI server. Handlers that wait on Kafka or ClickHouse run in
the thread pool, so one slow call does not hold the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from api import ingest, portal, queries
from api.auth import ApiKey
from api.state import ApiState
from flows.settings import Settings


def create_app(settings: Settings, keys: list[ApiKey] | None = None) -> FastAPI:
    state = ApiState(settings, keys)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.sender.close()

    app = FastAPI(
        title="meterflow",
        summary="Usage ingest, usage and balance queries, entitlement checks and statements",
        version="1",
        lifespan=lifespan,
    )
    app.state.api = state
    app.include_router(ingest.router)
    app.include_router(queries.router)
    app.include_router(portal.router)
    return app


def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    keys: list[ApiKey] | None = None,
) -> None:
    """Blocks serving the API until interrupted."""
    uvicorn.run(
        create_app(settings, keys),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="warning",
    )
