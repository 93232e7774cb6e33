"""A Starlette app behind ``apiusage.ASGIMiddleware``, for the process tests (run by uvicorn).

Configured only through the environment (POSTHOG_API_KEY, POSTHOG_HOST,
APIUSAGE_IDENTITY_SECRET, APIUSAGE_FLUSH_INTERVAL …), as a deployed app would be.
Each request names its caller from the ``caller`` query parameter, so a test can tell
exactly which requests' events arrived.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import apiusage


async def item(request: Request) -> JSONResponse:
    caller = request.query_params.get("caller")
    if caller:
        apiusage.identify(caller)
    return JSONResponse({"item_id": request.path_params["item_id"], "pid": os.getpid()})


async def slow(request: Request) -> JSONResponse:
    """Still being served when a test sends SIGTERM."""
    await asyncio.sleep(float(request.query_params.get("seconds", "1")))
    return await item(request)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = apiusage.ASGIMiddleware(
    Starlette(
        routes=[
            Route("/v1/items/{item_id:int}", item),
            Route("/v1/slow/{item_id:int}", slow),
            Route("/health", health),
        ]
    )
)
