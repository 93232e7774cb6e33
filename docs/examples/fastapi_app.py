"""A complete small FastAPI API instrumented with apiusage.

Callers authenticate with an ``X-API-Key`` header; the ``current_user`` dependency puts
the user on ``request.state.user``, where apiusage finds the caller (its ``id``) and the
organisation (its ``organisation_id``) after the response is sent.

Run it with ``python docs/examples/fastapi_app.py`` (uvicorn on port 8000), or with
``uvicorn --factory --app-dir docs/examples fastapi_app:create_app``, then::

    curl -H 'X-API-Key: key-alice' localhost:8000/v1/items/42

``create_app(**apiusage_options)`` builds a fresh app; the options go to ``ApiUsage``
(e.g. ``sink=MemorySink()`` in tests, ``event_name="api_call"``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import apiusage
from fastapi_apiusage import ApiUsage

STREAM_PAUSE = 0.05  # seconds between the chunks of /v1/stream


@dataclass(frozen=True)
class User:
    id: str
    organisation_id: str


USERS_BY_KEY = {
    "key-alice": User("usr_alice", "org_acme"),
    "key-bob": User("usr_bob", "org_globex"),
}


async def current_user(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> User:
    user = USERS_BY_KEY.get(x_api_key or "")
    if user is None:
        raise HTTPException(401, "a valid X-API-Key header is required")
    request.state.user = user  # where apiusage looks for the caller
    return user


CurrentUser = Annotated[User, Depends(current_user)]


class ProjectIn(BaseModel):
    name: str


class SignupIn(BaseModel):
    email: str
    organisation: str
    plan: str = "free"


items_v1 = APIRouter(prefix="/items")
items_v2 = APIRouter(prefix="/items")


@items_v1.get("/{item_id}")
async def get_item(item_id: int, user: CurrentUser) -> dict[str, Any]:
    return {"id": item_id, "name": f"Item {item_id}", "owner": user.id}


@items_v2.get("/{item_id}")
async def get_item_v2(item_id: int, user: CurrentUser) -> dict[str, Any]:
    return {"item": {"id": item_id, "name": f"Item {item_id}"}, "owner": {"id": user.id}}


v1 = APIRouter(prefix="/v1")
v1.include_router(items_v1)


@v1.post("/projects", status_code=201)
def create_project(project: ProjectIn, user: CurrentUser) -> dict[str, str]:
    # A sync endpoint: FastAPI runs it in a thread pool, and track() still finds the request.
    project_id = f"prj_{secrets.token_hex(4)}"
    apiusage.track("project_create", project_id=project_id)
    return {"id": project_id, "name": project.name, "organisation_id": user.organisation_id}


@v1.post("/signup", status_code=201)
async def signup(body: SignupIn) -> dict[str, str]:
    user = User(f"usr_{secrets.token_hex(4)}", body.organisation)
    api_key = f"key-{secrets.token_urlsafe(12)}"
    USERS_BY_KEY[api_key] = user
    apiusage.identify(
        user.id, organisation=user.organisation_id, organisation_properties={"plan": body.plan}
    )
    apiusage.track("signup", plan=body.plan)
    return {"id": user.id, "organisation_id": user.organisation_id, "api_key": api_key}


@v1.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for number in range(3):
            if number:
                await asyncio.sleep(STREAM_PAUSE)
            yield f"chunk {number}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


@v1.get("/boom")
async def boom() -> None:
    raise RuntimeError("something broke")


v2 = APIRouter(prefix="/v2")
v2.include_router(items_v2)


def create_app(**apiusage_options: Any) -> FastAPI:
    app = FastAPI(title="Items API")
    app.include_router(v1)
    app.include_router(v2)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}  # not recorded: /health is excluded by default

    ApiUsage(app, **apiusage_options)
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), port=8000)
