"""A complete small Starlette API instrumented with apiusage.

Callers authenticate with an ``X-API-Key`` header through Starlette's own
``AuthenticationMiddleware``, which puts the user on ``request.user`` (``scope["user"]``);
apiusage reads the caller (its ``id``) and organisation (its ``organisation_id``) from
there after the response is sent.

Run it with ``python docs/examples/starlette_app.py`` (uvicorn on port 8000), or with
``uvicorn --factory --app-dir docs/examples starlette_app:create_app``, then::

    curl -H 'X-API-Key: key-alice' localhost:8000/v1/items/42

``create_app(**apiusage_options)`` builds a fresh app; the options go to ``ApiUsage``
(e.g. ``sink=MemorySink()`` in tests, ``event_name="api_call"``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route

import apiusage
from starlette_apiusage import ApiUsage

STREAM_PAUSE = 0.05  # seconds between the chunks of /v1/stream


@dataclass(frozen=True)
class User(BaseUser):
    id: str
    organisation_id: str

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.id


USERS_BY_KEY = {
    "key-alice": User("usr_alice", "org_acme"),
    "key-bob": User("usr_bob", "org_globex"),
}


class ApiKeyBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, User] | None:
        user = USERS_BY_KEY.get(conn.headers.get("x-api-key", ""))
        return None if user is None else (AuthCredentials(["authenticated"]), user)


@requires("authenticated", status_code=401)
async def get_item(request: Request) -> JSONResponse:
    item_id = request.path_params["item_id"]
    return JSONResponse({"id": item_id, "name": f"Item {item_id}", "owner": request.user.id})


@requires("authenticated", status_code=401)
async def get_item_v2(request: Request) -> JSONResponse:
    item_id = request.path_params["item_id"]
    item = {"id": item_id, "name": f"Item {item_id}"}
    return JSONResponse({"item": item, "owner": {"id": request.user.id}})


@requires("authenticated", status_code=401)
async def create_project(request: Request) -> JSONResponse:
    body = await request.json()
    project_id = f"prj_{secrets.token_hex(4)}"
    apiusage.track("project_create", project_id=project_id)
    project = {
        "id": project_id,
        "name": body["name"],
        "organisation_id": request.user.organisation_id,
    }
    return JSONResponse(project, status_code=201)


async def signup(request: Request) -> JSONResponse:
    body = await request.json()
    plan = body.get("plan", "free")
    user = User(f"usr_{secrets.token_hex(4)}", body["organisation"])
    api_key = f"key-{secrets.token_urlsafe(12)}"
    USERS_BY_KEY[api_key] = user
    apiusage.identify(
        user.id, organisation=user.organisation_id, organisation_properties={"plan": plan}
    )
    apiusage.track("signup", plan=plan)
    created = {"id": user.id, "organisation_id": user.organisation_id, "api_key": api_key}
    return JSONResponse(created, status_code=201)


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for number in range(3):
            if number:
                await asyncio.sleep(STREAM_PAUSE)
            yield f"chunk {number}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("something broke")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})  # not recorded: /health is excluded by default


routes = [
    Mount(
        "/v1",
        routes=[
            Route("/items/{item_id:int}", get_item),
            Route("/projects", create_project, methods=["POST"]),
            Route("/signup", signup, methods=["POST"]),
            Route("/stream", stream),
            Route("/boom", boom),
        ],
    ),
    Mount("/v2", routes=[Route("/items/{item_id:int}", get_item_v2)]),
    Route("/health", health),
]


def create_app(**apiusage_options: Any) -> Starlette:
    app = Starlette(
        routes=routes, middleware=[Middleware(AuthenticationMiddleware, backend=ApiKeyBackend())]
    )
    ApiUsage(app, **apiusage_options)
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), port=8000)
