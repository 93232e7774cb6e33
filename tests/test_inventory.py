"""The route inventory: every endpoint an app serves, listed per framework, sent once.

Real apps of each framework; the inventory arrives as an ``api_route_inventory`` event
through a memory sink, listed on the delivery worker after the first request.
"""

from __future__ import annotations

import sys
import threading
import types
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from litestar.params import Parameter
from werkzeug.test import Client

import apiusage
from apiusage import ConfigurationError, Route, UsageClient
from apiusage.inventory import RouteInventory
from apiusage.sinks.memory import MemorySink
from tests.adapters.drivers import IDENTITY_SECRET, load_example

pytestmark = pytest.mark.anyio


def inventory_of(sink: MemorySink) -> dict[str, Any]:
    [event] = sink.named("api_route_inventory")
    assert event.personless
    return event.as_dict()


def listed(inventory: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(route["method"], route["route"]): route for route in inventory["properties"]["routes"]}


async def test_fastapi_routes_with_router_prefixes_mounts_and_deprecations() -> None:
    from fastapi import APIRouter, FastAPI
    from starlette.applications import Starlette
    from starlette.routing import Route as StarletteRoute

    from fastapi_apiusage import ApiUsage

    app = FastAPI()
    v1 = APIRouter(prefix="/v1")

    @v1.get("/items/{item_id}", operation_id="get_item")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @v1.get("/legacy", deprecated=True)
    def legacy() -> dict[str, str]:
        return {}

    @v1.get("/both")
    def read_both() -> dict[str, str]:
        return {}

    @v1.post("/both")
    def write_both() -> dict[str, str]:
        return {}

    app.include_router(v1)

    @apiusage.deprecated
    def old_hello(request: Any) -> Any:
        raise NotImplementedError

    app.mount("/sub", Starlette(routes=[StarletteRoute("/hello/{name:str}", old_hello)]))
    sink = MemorySink()
    ApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    client = app._apiusage.client
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/v1/items/3")).status_code == 200
        assert (await http.get("/v1/legacy")).status_code == 200
    assert client.flush(10)

    routes = listed(inventory_of(sink))
    # Listing changed nothing about the app: no OpenAPI schema generated and cached (a
    # route added later would be missing from /openapi.json).
    assert app.openapi_schema is None
    assert set(routes) == {
        ("GET", "/v1/items/{item_id}"),
        ("GET", "/v1/legacy"),
        ("GET", "/v1/both"),
        ("POST", "/v1/both"),
        ("GET", "/sub/hello/{name}"),
    }  # /docs, /openapi.json, /docs/oauth2-redirect are FastAPI's: never recorded or listed
    assert routes["GET", "/v1/items/{item_id}"]["operation_id"] == "get_item"
    assert routes["GET", "/v1/legacy"]["deprecated"] is True
    assert routes["GET", "/sub/hello/{name}"]["deprecated"] is True  # the marker
    assert routes["GET", "/sub/hello/{name}"]["route_template"] == "/sub/hello/{name:str}"
    assert routes["GET", "/v1/both"]["deprecated"] is False
    # Requests say whether their route is deprecated.
    deprecated = {
        event.properties["route"]: event.properties["deprecated"]
        for event in sink.named("api_request")
    }
    assert deprecated == {"/v1/items/{item_id}": False, "/v1/legacy": True}


def test_flask_rules_with_blueprints_markers_and_no_static_files() -> None:
    from flask import Blueprint, Flask
    from flask.views import MethodView

    from flask_apiusage import ApiUsage

    app = Flask(__name__, static_folder=".")
    v2 = Blueprint("v2", __name__, url_prefix="/v2")

    @v2.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @v2.route("/reports", methods=["GET", "POST"])
    @apiusage.deprecated
    def reports() -> dict[str, str]:
        return {}

    @apiusage.deprecated
    class Widgets(MethodView):
        def get(self) -> dict[str, str]:
            return {}

        def delete(self) -> dict[str, str]:
            return {}

    v2.add_url_rule("/widgets", view_func=Widgets.as_view("widgets"))
    sink = MemorySink()
    ApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    app.register_blueprint(v2)  # after init_app: the inventory still sees it
    http = Client(app)
    assert http.get("/v2/items/1", buffered=True).status_code == 200
    assert ApiUsage.client_for(app).flush(10)

    routes = listed(inventory_of(sink))
    assert set(routes) == {
        ("GET", "/v2/items/{item_id}"),
        ("GET", "/v2/reports"),
        ("POST", "/v2/reports"),
        ("GET", "/v2/widgets"),
        ("DELETE", "/v2/widgets"),
    }  # no HEAD or OPTIONS, no static files
    assert routes["GET", "/v2/items/{item_id}"]["route_template"] == "/v2/items/<int:item_id>"
    assert routes["GET", "/v2/items/{item_id}"]["deprecated"] is False
    assert routes["POST", "/v2/reports"]["deprecated"] is True
    assert routes["DELETE", "/v2/widgets"]["deprecated"] is True


@pytest.fixture
def django_urls() -> Iterator[types.ModuleType]:
    """A URLconf with include(), a function view, a class-based view and a DRF viewset."""
    load_example("django_app")  # configures Django
    from django.http import HttpResponse
    from django.test import override_settings
    from django.urls import include, path, re_path
    from django.views import View
    from rest_framework import routers, viewsets
    from rest_framework.response import Response

    def function_view(request: Any, pk: int) -> HttpResponse:
        return HttpResponse("ok")

    class Things(View):
        def get(self, request: Any) -> HttpResponse:
            return HttpResponse("ok")

        @apiusage.deprecated
        def put(self, request: Any) -> HttpResponse:
            return HttpResponse("ok")

    class Users(viewsets.ViewSet):
        def list(self, request: Any) -> Response:
            return Response([])

        def retrieve(self, request: Any, pk: str) -> Response:
            return Response({})

    router = routers.SimpleRouter()
    router.register("users", Users, basename="user")
    module = types.ModuleType("inventory_urls")
    module.urlpatterns = [  # type: ignore[attr-defined]
        path(
            "api/",
            include([path("items/<int:pk>", function_view), path("things", Things.as_view())]),
        ),
        re_path(r"^legacy/(?P<year>[0-9]{4})/$", function_view),
        path("drf/", include(router.urls)),
    ]
    sys.modules[module.__name__] = module
    with override_settings(ROOT_URLCONF=module.__name__):
        yield module
    del sys.modules[module.__name__]


def test_django_patterns_through_includes_views_and_viewsets(
    django_urls: types.ModuleType,
) -> None:
    from django_apiusage.routes import django_routes

    routes = {(route.method, route.route): route for route in django_routes()}
    assert set(routes) == {
        ("*", "/api/items/{pk}"),  # a function view answers any method
        ("GET", "/api/things"),
        ("PUT", "/api/things"),
        ("*", "/legacy/{year}/"),
        ("GET", "/drf/users/"),
        ("GET", "/drf/users/{pk}/"),
    }
    assert routes["*", "/api/items/{pk}"].template == "/api/items/<int:pk>"
    assert routes["*", "/legacy/{year}/"].template == "/legacy/<year>/"
    assert routes["PUT", "/api/things"].deprecated  # the handler's marker


def test_the_inventory_is_listed_once_on_the_worker_and_its_uuid_is_its_content(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask import Flask

    import flask_apiusage

    threads: list[str] = []
    list_routes = flask_apiusage.flask_routes

    def watched(app: Flask) -> list[Route]:
        threads.append(threading.current_thread().name)
        return list_routes(app)

    monkeypatch.setattr(flask_apiusage, "flask_routes", watched)
    inventories = []
    for extra_route in (False, False, True):
        app = Flask(__name__)
        app.add_url_rule("/a", "a", lambda: "a")
        if extra_route:
            app.add_url_rule("/b", "b", lambda: "b")
        sink = MemorySink()
        flask_apiusage.ApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
        http = Client(app)
        for _ in range(3):
            assert http.get("/a", buffered=True).status_code == 200
        assert flask_apiusage.ApiUsage.client_for(app).flush(10)
        inventories.append(inventory_of(sink))  # one, for three requests
    assert threads == ["apiusage-delivery"] * 3  # never on the request's thread
    first, same, other = (uuid.UUID(inventory["uuid"]) for inventory in inventories)
    assert first == same  # same routes: the same event, which PostHog keeps once
    assert first != other


def test_configured_deprecations_mark_requests_without_an_adapter() -> None:
    sink = MemorySink()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        apiusage.annotate(route=environ["PATH_INFO"])
        return [b"ok"]

    wrapped = apiusage.WSGIMiddleware(
        app,
        sink=sink,
        identity_secret=IDENTITY_SECRET,
        deprecated_routes=["GET /v1/old", "/v1/gone/<int:id>"],
    )
    http = Client(wrapped)
    for path in ("/v1/old", "/v1/new", "/v1/gone/<int:id>"):
        assert http.get(path, buffered=True).status_code == 200
    assert http.post("/v1/old", buffered=True).status_code == 200
    assert wrapped.client.flush(10)
    marked = {
        (event.properties["method"], event.properties["route"]): event.properties["deprecated"]
        for event in sink.named("api_request")
    }
    assert marked == {
        ("GET", "/v1/old"): True,
        ("GET", "/v1/new"): False,
        ("GET", "/v1/gone/{id}"): True,  # either syntax names it
        ("POST", "/v1/old"): False,  # only GET was named
    }
    # No adapter lists routes, yet the configured ones are on record.
    routes = listed(inventory_of(sink))
    assert set(routes) == set()
    assert inventory_of(sink)["properties"]["deprecated_count"] == 0


@pytest.mark.parametrize("entry", ["v1/old", "GET", "GET  v1/old", "1 /x"])
def test_a_malformed_deprecated_route_fails_at_start_up(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="deprecated_routes"):
        UsageClient(sink=MemorySink(), identity_secret=IDENTITY_SECRET, deprecated_routes=[entry])


def test_a_failing_route_source_is_counted_and_requests_still_arrive() -> None:
    from flask import Flask

    from flask_apiusage import ApiUsage

    app = Flask(__name__)
    app.add_url_rule("/a", "a", lambda: "a")
    sink = MemorySink()
    ApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    client = ApiUsage.client_for(app)

    def broken() -> list[Route]:
        raise RuntimeError("router exploded")

    client.add_route_source(broken)
    http = Client(app)
    assert http.get("/a", buffered=True).status_code == 200
    assert client.flush(10)
    assert [event.properties["route"] for event in sink.named("api_request")] == ["/a"]
    assert set(listed(inventory_of(sink))) == {("GET", "/a")}  # the other source's routes
    assert client.stats.snapshot()["internal_errors"] == 1


def test_inventories_of_equal_routes_are_equal_whatever_their_order() -> None:
    a = Route.of("GET", "/x/<int:id>")
    b = Route.of("post", "/y")
    one = RouteInventory.of([a, b, a], "flask")
    other = RouteInventory.of([b, a], "flask")
    assert one == other
    assert [route.method for route in one.routes] == ["GET", "POST"]
    assert one.uuid == other.uuid
    assert RouteInventory.of([a], "flask").uuid != one.uuid


async def test_litestar_routes_through_the_documented_route_source() -> None:
    from litestar import Litestar, Router, get, post

    from apiusage.inventory import litestar_routes, routes_of_live_app

    # Annotations are strings here (from __future__): Litestar resolves them in this
    # module's globals, so Parameter is imported at the top.

    @get("/items/{item_id:int}", deprecated=True)
    async def item(item_id: Annotated[int, Parameter()]) -> dict[str, int]:
        return {"id": item_id}

    @post("/items")
    @apiusage.deprecated
    async def create() -> dict[str, str]:
        return {}

    app = Litestar(route_handlers=[Router(path="/v1", route_handlers=[item, create])])
    sink = MemorySink()
    wrapped = apiusage.ASGIMiddleware(app, sink=sink, identity_secret=IDENTITY_SECRET)
    wrapped.client.add_route_source(routes_of_live_app(app, litestar_routes), name="litestar")
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/v1/items/1")).status_code == 200
    assert wrapped.client.flush(10)
    routes = listed(inventory_of(sink))
    assert routes["GET", "/v1/items/{item_id}"]["deprecated"] is True
    assert routes["GET", "/v1/items/{item_id}"]["route_template"] == "/v1/items/{item_id:int}"
    assert routes["POST", "/v1/items"]["deprecated"] is True
    # Litestar's schema: an excluded name (openapi.json) under any prefix, so not listed.
    assert ("GET", "/schema/openapi.json") not in routes
