"""A complete small Litestar API instrumented with apiusage's generic ASGI middleware.

Callers authenticate with an ``X-API-Key`` header through a Litestar authentication
middleware, which puts the user on ``request.user`` (``scope["user"]``); apiusage reads the
caller (its ``id``) and organisation (its ``organisation_id``) from there. Litestar's route
template (``scope["path_template"]``) is picked up as is.

Litestar turns unhandled errors into 500 responses itself, so the middleware only sees the
status; the ``after_exception`` hook adds the exception class to the request's record.

Run it with ``python docs/examples/litestar_app.py`` (uvicorn on port 8000), or with
``uvicorn --factory --app-dir docs/examples litestar_app:create_app``, then::

    curl -H 'X-API-Key: key-alice' localhost:8000/v1/items/42

``create_app(**apiusage_options)`` builds a fresh, instrumented ASGI app; the options go to
``apiusage.ASGIMiddleware`` (e.g. ``sink=MemorySink()`` in tests).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.response import Stream

import apiusage

STREAM_PAUSE = 0.05  # seconds between the chunks of /v1/stream


@dataclass(frozen=True)
class User:
    id: str
    organisation_id: str


USERS_BY_KEY = {
    "key-alice": User("usr_alice", "org_acme"),
    "key-bob": User("usr_bob", "org_globex"),
}


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
        user = USERS_BY_KEY.get(connection.headers.get("x-api-key", ""))
        return AuthenticationResult(user=user, auth=None)


def user_required(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.user is None:
        raise NotAuthorizedException("a valid X-API-Key header is required")


@get("/items/{item_id:int}", guards=[user_required])
async def get_item(request: Request[User, None, Any]) -> dict[str, Any]:
    item_id = request.path_params["item_id"]
    return {"id": item_id, "name": f"Item {item_id}", "owner": request.user.id}


@get("/items/{item_id:int}", guards=[user_required])
async def get_item_v2(request: Request[User, None, Any]) -> dict[str, Any]:
    item_id = request.path_params["item_id"]
    return {"item": {"id": item_id, "name": f"Item {item_id}"}, "owner": {"id": request.user.id}}


@post("/projects", guards=[user_required])
async def create_project(request: Request[User, None, Any]) -> dict[str, str]:
    data = await request.json()
    project_id = f"prj_{secrets.token_hex(4)}"
    apiusage.track("project_create", project_id=project_id)
    return {"id": project_id, "name": data["name"], "organisation_id": request.user.organisation_id}


@post("/signup")
async def signup(request: Request[Any, None, Any]) -> dict[str, str]:
    data = await request.json()
    plan = data.get("plan", "free")
    user = User(f"usr_{secrets.token_hex(4)}", data["organisation"])
    api_key = f"key-{secrets.token_urlsafe(12)}"
    USERS_BY_KEY[api_key] = user
    apiusage.identify(
        user.id, organisation=user.organisation_id, organisation_properties={"plan": plan}
    )
    apiusage.track("signup", plan=plan)
    return {"id": user.id, "organisation_id": user.organisation_id, "api_key": api_key}


@get("/stream")
async def stream() -> Stream:
    async def chunks() -> AsyncIterator[bytes]:
        for number in range(3):
            if number:
                await asyncio.sleep(STREAM_PAUSE)
            yield f"chunk {number}\n".encode()

    return Stream(chunks(), media_type="text/plain")


@get("/boom")
async def boom() -> None:
    raise RuntimeError("something broke")


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}  # not recorded: /health is excluded by default


async def note_exception(exc: Exception, scope: Any) -> None:
    """Litestar's ``after_exception`` hook: put an unhandled error's class on the record."""
    if not isinstance(exc, HTTPException):
        apiusage.annotate(exception=exc)


v1 = Router("/v1", route_handlers=[get_item, create_project, signup, stream, boom])
v2 = Router("/v2", route_handlers=[get_item_v2])


def create_app(**apiusage_options: Any) -> apiusage.ASGIMiddleware:
    app = Litestar(
        route_handlers=[v1, v2, health],
        middleware=[ApiKeyAuthentication],
        after_exception=[note_exception],
    )
    return apiusage.ASGIMiddleware(app, framework="litestar", **apiusage_options)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), port=8000)
