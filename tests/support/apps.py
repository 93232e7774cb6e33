"""Sample apps for the middleware tests: real Starlette, FastAPI, Flask and plain WSGI apps.

Every factory returns a fresh app, so tests never share routing or state.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from flask import Flask, Response, g
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

import apiusage
from apiusage.context import current_record

__all__ = [
    "BASIC",
    "JWT",
    "STREAM_CHUNKS",
    "STREAM_PAUSE",
    "AppError",
    "asgi_client",
    "fastapi_app",
    "flask_app",
    "plain_wsgi_app",
    "starlette_app",
]

#: The streaming endpoints send these chunks, pausing STREAM_PAUSE seconds before each
#: chunk after the first.
STREAM_CHUNKS = [b"alpha-", b"bravo-" * 100, b"charlie-" * 1000, b"delta"]
STREAM_PAUSE = 0.04


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: A well-formed (unsigned) JWT, and a basic-auth header for alice:s3cret.
JWT = ".".join(
    [
        _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
        _b64url(json.dumps({"sub": "user-1", "exp": 4102444800}).encode()),
        _b64url(b"signature-bytes"),
    ]
)
BASIC = "Basic " + base64.b64encode(b"alice:s3cret").decode()


class AppError(Exception):
    """The application's own error: must propagate through the middleware unchanged."""


def asgi_client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    """An httpx client talking to an ASGI app in-process."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# ------------------------------------------------------------------------ Starlette
async def _path_params(request: Request) -> JSONResponse:
    return JSONResponse({"params": dict(request.path_params)})


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"received": len(body)}, status_code=201)


async def _boom(request: Request) -> PlainTextResponse:
    raise AppError("boom")


async def _stream_chunks() -> AsyncIterator[bytes]:
    for index, chunk in enumerate(STREAM_CHUNKS):
        if index:
            await asyncio.sleep(STREAM_PAUSE)
        yield chunk


async def _stream(request: Request) -> StreamingResponse:
    return StreamingResponse(_stream_chunks(), media_type="application/octet-stream")


async def _boom_after_start(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first chunk"
        raise AppError("failed while streaming")

    return StreamingResponse(chunks(), media_type="text/plain")


async def _track(request: Request) -> JSONResponse:
    """Tracks a journey event; the caller is named by the query (see `starlette_app`)."""
    await asyncio.sleep(0)
    apiusage.track("report_viewed", {"n": request.query_params.get("n")})
    await asyncio.sleep(0)
    return JSONResponse({"ok": True})


async def _identify(request: Request) -> JSONResponse:
    query = request.query_params
    properties: dict[str, Any] = {}
    if "plan" in query:
        properties["plan"] = query["plan"]
    apiusage.identify(
        query["user"],
        organisation=query.get("org"),
        organisation_properties=properties or None,
        email=f"{query['user']}@example.com",
    )
    apiusage.track("signed_in")
    return JSONResponse({"ok": True})


async def _login(request: Request) -> JSONResponse:
    """Stands in for the app's auth: attaches a user to request.state."""
    user = request.query_params.get("user")
    if user is not None:
        request.state.user = {"id": user, "org_id": request.query_params.get("org")}
    return JSONResponse({"ok": True})


async def _ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive_text()
        if message == "bye":
            await websocket.close()
            return
        await websocket.send_text(f"echo:{message}")


def starlette_app(lifespan_log: list[str] | None = None) -> Starlette:
    """A Starlette app covering the cases the ASGI middleware must handle."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if lifespan_log is not None:
            lifespan_log.append("startup")
        yield
        if lifespan_log is not None:
            lifespan_log.append("shutdown")

    admin_routes = [
        Route("/users/{user_id}", _path_params),
        Route("/teams/{team_id}/members/{member_id}", _path_params),
    ]
    return Starlette(
        routes=[
            Route("/", _path_params),
            Route("/v1/items/{item_id}", _path_params),
            Route("/api/v2/users/{user_id:int}", _path_params),
            Route("/2024-06-01/orders", _path_params),
            Route("/things", _path_params),
            Route("/echo", _echo, methods=["POST"]),
            Route("/boom", _boom),
            Route("/stream", _stream),
            Route("/boom-after-start", _boom_after_start),
            Route("/track", _track),
            Route("/identify", _identify),
            Route("/login", _login),
            Route("/health", _path_params),
            Route("/metrics", _path_params),
            Route("/internal/status", _path_params),
            Mount("/admin", routes=admin_routes),
            WebSocketRoute("/ws", _ws_echo),
        ],
        lifespan=lifespan,
    )


# -------------------------------------------------------------------------- FastAPI
def fastapi_app() -> FastAPI:
    """A FastAPI app with an include_router prefix, and sync and async endpoints."""
    app = FastAPI()
    widgets = APIRouter(prefix="/v2/widgets")

    @widgets.get("/{widget_id}")
    async def get_widget(widget_id: int) -> dict[str, int]:
        return {"widget_id": widget_id}

    @widgets.post("/{widget_id}/sync-track")
    def sync_track(widget_id: int) -> dict[str, Any]:
        # A sync endpoint: FastAPI runs it in a thread pool.
        apiusage.track("widget_built", {"widget_id": widget_id})
        record = current_record()
        return {"request_id": record.request_id if record else None}

    @widgets.post("/{widget_id}/async-track")
    async def async_track(widget_id: int) -> dict[str, Any]:
        apiusage.track("widget_built", {"widget_id": widget_id})
        record = current_record()
        return {"request_id": record.request_id if record else None}

    @app.get("/users/{user_id}")
    def get_user(user_id: str) -> dict[str, str]:
        return {"user_id": user_id}

    @app.get("/fail")
    async def fail() -> None:
        raise AppError("fastapi boom")

    app.include_router(widgets)
    return app


# ---------------------------------------------------------------------------- Flask
def flask_app(*, propagate_exceptions: bool = True) -> Flask:
    """A Flask app; exceptions propagate (as under a WSGI server with PROPAGATE_EXCEPTIONS)."""
    app = Flask("apiusage_tests")
    app.config["PROPAGATE_EXCEPTIONS"] = propagate_exceptions

    @app.get("/v1/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.post("/v1/items")
    def create_item() -> tuple[dict[str, int], int]:
        from flask import request

        return {"received": len(request.get_data())}, 201

    @app.get("/boom")
    def boom() -> str:
        raise AppError("flask boom")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for index, chunk in enumerate(STREAM_CHUNKS):
                if index:
                    time.sleep(STREAM_PAUSE)
                yield chunk

        return Response(chunks(), mimetype="application/octet-stream")

    @app.get("/track")
    def track() -> dict[str, bool]:
        g.user = "flask-user"
        apiusage.identify("flask-user", organisation="flask-org")
        apiusage.track("flask_tracked", {"where": "handler"})
        return {"ok": True}

    @app.get("/stream-track")
    def stream_track() -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"one"
            apiusage.track("streamed", {"where": "generator"})
            yield b"two"

        return Response(chunks(), mimetype="text/plain")

    return app


# ----------------------------------------------------------------------- plain WSGI
class ClosingBody:
    """A response iterable that remembers whether close() was called."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = list(chunks)
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        self.closed = True


def plain_wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A framework-free WSGI app; behaviour chosen by PATH_INFO."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise AppError("wsgi boom")
    if path == "/teapot":
        start_response("418 I'm a teapot", [("Content-Type", "text/plain")])
        return [b"short and stout"]
    if path.startswith("/orders/"):
        apiusage.annotate(route="/orders/{order_id}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"order"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
