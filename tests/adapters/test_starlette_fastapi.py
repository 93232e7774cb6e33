"""What only the Starlette and FastAPI integrations do: dependencies, mounts, installation."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import apiusage
from apiusage import Event, UsageClient
from apiusage.sinks.memory import MemorySink
from fastapi_apiusage import ApiUsage as FastAPIUsage
from starlette_apiusage import ApiUsage as StarletteUsage
from tests.adapters.drivers import IDENTITY_SECRET, load_example

pytestmark = pytest.mark.anyio


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def requests_of(app: Any, sink: MemorySink) -> list[Event]:
    client: UsageClient = app._apiusage.client
    assert client.flush(timeout=10)
    return sink.named("api_request")


# Dependencies live at module level: FastAPI resolves these (string) annotations here.
def caller(x_caller: Annotated[str, Header()]) -> str:
    apiusage.identify(x_caller, organisation=f"org_of_{x_caller}", role="admin")
    return x_caller


async def async_caller(x_caller: Annotated[str, Header()]) -> str:
    apiusage.identify(x_caller, organisation="org_async")
    return x_caller


async def test_identify_in_a_dependency(sink: MemorySink) -> None:
    """``apiusage.identify()`` in ``Depends``: sync dependencies run in the thread pool."""
    app = FastAPI()

    @app.get("/reports/{report_id}")
    async def report(report_id: int, who: Annotated[str, Depends(caller)]) -> dict[str, Any]:
        return {"id": report_id, "for": who}

    @app.get("/exports/{export_id}")
    def export(export_id: int, who: Annotated[str, Depends(async_caller)]) -> dict[str, Any]:
        apiusage.track("export_download", export_id=export_id)  # sync endpoint: thread pool
        return {"id": export_id, "for": who}

    FastAPIUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    async with http(app) as client:
        first = await client.get("/reports/1", headers={"x-caller": "usr_1"})
        second = await client.get("/exports/2", headers={"x-caller": "usr_2"})

    assert (first.json(), second.json()) == ({"id": 1, "for": "usr_1"}, {"id": 2, "for": "usr_2"})
    report_event, export_event = requests_of(app, sink)
    assert report_event.distinct_id == "usr_1"
    assert report_event.groups == {"organisation": "org_of_usr_1"}
    assert report_event.person_properties == {"role": "admin"}
    assert report_event.properties["route"] == "/reports/{report_id}"
    assert report_event.properties["framework"] == "fastapi"
    assert export_event.distinct_id == "usr_2"
    assert export_event.groups == {"organisation": "org_async"}
    (download,) = sink.named("export_download")
    assert download.distinct_id == "usr_2"
    assert download.properties["request_id"] == export_event.uuid


@pytest.mark.parametrize(
    ("make_app", "install", "framework"),
    [(FastAPI, FastAPIUsage, "fastapi"), (Starlette, StarletteUsage, "starlette")],
)
async def test_installing_after_the_app_started_serving_fails_clearly(
    make_app: Any, install: Any, framework: str
) -> None:
    app = make_app()
    async with http(app) as client:
        assert (await client.get("/")).status_code == 404  # the app built its middleware stack

    with pytest.raises(RuntimeError, match=f"after the {framework} app started serving") as info:
        install(app, sink=MemorySink(), identity_secret=IDENTITY_SECRET)
    assert "Call it where the app is created" in str(info.value)
    assert getattr(app, "_apiusage", None) is None


@pytest.mark.parametrize("example", ["fastapi_app", "starlette_app"])
async def test_installing_twice_fails(example: str, sink: MemorySink) -> None:
    app = load_example(example).create_app(sink=sink, identity_secret=IDENTITY_SECRET)
    install = FastAPIUsage if example == "fastapi_app" else StarletteUsage
    with pytest.raises(RuntimeError, match="already installed"):
        install(app, sink=MemorySink(), identity_secret=IDENTITY_SECRET)
    async with http(app) as client:
        reply = await client.get("/v1/items/1", headers={"x-api-key": "key-bob"})
    assert reply.status_code == 200
    assert [event.distinct_id for event in requests_of(app, sink)] == ["usr_bob"]  # once


async def test_fastapi_sub_app_mounted_under_a_prefix(sink: MemorySink) -> None:
    reports = APIRouter(prefix="/reports")

    @reports.get("/{report_id}")
    async def report(report_id: int) -> dict[str, int]:
        return {"id": report_id}

    internal = FastAPI()
    internal.include_router(reports, prefix="/v2")
    app = FastAPI()
    app.mount("/internal", internal)
    FastAPIUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)

    async with http(app) as client:
        found = await client.get("/internal/v2/reports/5")
        missing = await client.get("/internal/v2/nothing")

    assert (found.status_code, missing.status_code) == (200, 404)
    assert found.json() == {"id": 5}
    routes = [event.properties["route"] for event in requests_of(app, sink)]
    assert routes == ["/internal/v2/reports/{report_id}", None]


async def test_starlette_nested_mounts_and_a_mounted_app(sink: MemorySink) -> None:
    async def thing(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.path_params["thing_id"]))

    inner = Starlette(routes=[Route("/things/{thing_id:int}", thing)])
    app = Starlette(
        routes=[
            Mount("/api", routes=[Mount("/v3", routes=[Route("/things/{thing_id:int}", thing)])]),
            Mount("/legacy", app=inner),
        ]
    )
    StarletteUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)

    async with http(app) as client:
        nested = await client.get("/api/v3/things/7")
        mounted = await client.get("/legacy/things/8")
        missing = await client.get("/legacy/nothing")

    assert (nested.text, mounted.text, missing.status_code) == ("7", "8", 404)
    events = requests_of(app, sink)
    assert [event.properties["route"] for event in events] == [
        "/api/v3/things/{thing_id}",
        "/legacy/things/{thing_id}",
        None,
    ]
    assert [event.properties["api_version"] for event in events] == ["v3", None, None]
