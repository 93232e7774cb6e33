"""What only the Django integration does: system checks, DRF, ASGI, the project's handlers.

Django settings are configured once per process, by the example project (django_app.py);
tests change them with ``override_settings``.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.checks import ERROR, WARNING, run_checks
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import AsyncClient, override_settings
from werkzeug.test import Client

import apiusage
from apiusage.sinks.memory import MemorySink
from django_apiusage import conf
from tests.adapters.drivers import (
    IDENTITY_SECRET,
    USER_AGENT,
    DjangoDriver,
    counting_resolvers,
    load_example,
    make_driver,
)

ALICE = {"x-api-key": "key-alice"}
MIDDLEWARE = "django_apiusage.middleware.ApiUsageMiddleware"


@pytest.fixture
def project() -> ModuleType:
    """The example project (configures Django's settings on first use)."""
    return load_example("django_app")


def apiusage_checks() -> list[Any]:
    return [message for message in run_checks() if message.id.startswith("django_apiusage.")]


def new_user() -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user(f"user_{secrets.token_hex(4)}", password=None)


@pytest.fixture(params=["django", "django-asgi"])
def driver(request: pytest.FixtureRequest, project: ModuleType) -> Iterator[DjangoDriver]:
    driver = make_driver(request.param)
    assert isinstance(driver, DjangoDriver)
    driver.start()
    yield driver
    driver.close()


# ------------------------------------------------------------------------- system checks
def test_the_example_project_passes_the_checks(project: ModuleType) -> None:
    assert apiusage_checks() == []


@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        ({"SAMPLE_RATE": 5}, "sample_rate (APIUSAGE_SAMPLE_RATE)"),
        ({"IDENTIFY": "no_such_module.resolver"}, "APIUSAGE['IDENTIFY']: cannot import"),
        ({"EVENT_NAMES": "api_call"}, "unknown apiusage setting(s): event_names"),
        ({"IDENTITY_SECRET": "short"}, "identity_secret (APIUSAGE_IDENTITY_SECRET)"),
    ],
)
def test_a_bad_value_is_reported_as_an_error_with_a_hint(
    project: ModuleType, config: dict[str, Any], mentions: str
) -> None:
    with override_settings(APIUSAGE=config):
        (message,) = apiusage_checks()
        assert message.id == "django_apiusage.E001"
        assert message.level == ERROR
        assert mentions in message.msg
        assert "settings.APIUSAGE" in message.hint
        with pytest.raises(SystemCheckError, match=r"django_apiusage\.E001"):
            call_command("check")


def test_serving_with_a_bad_value_fails_at_start_up_naming_it(project: ModuleType) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_apiusage.asgi import get_asgi_application
    from django_apiusage.middleware import ApiUsageMiddleware

    with override_settings(APIUSAGE={"SAMPLE_RATE": 5}):
        with pytest.raises(ImproperlyConfigured, match=r"sample_rate \(APIUSAGE_SAMPLE_RATE\)"):
            get_asgi_application()
        with pytest.raises(ImproperlyConfigured, match=r"sample_rate \(APIUSAGE_SAMPLE_RATE\)"):
            ApiUsageMiddleware(lambda request: None)


def test_a_missing_or_misplaced_middleware_is_a_warning(project: ModuleType) -> None:
    others = [name for name in settings.MIDDLEWARE if name != MIDDLEWARE]
    with override_settings(MIDDLEWARE=others):
        (missing,) = apiusage_checks()
    with override_settings(MIDDLEWARE=[*others, MIDDLEWARE]):
        (misplaced,) = apiusage_checks()

    assert (missing.id, missing.level) == ("django_apiusage.W001", WARNING)
    assert MIDDLEWARE in missing.hint
    assert (misplaced.id, misplaced.level) == ("django_apiusage.W002", WARNING)
    assert "top of MIDDLEWARE" in misplaced.hint


# ---------------------------------------------------------------- Django REST Framework
def test_drf_token_authentication(driver: DjangoDriver) -> None:
    from rest_framework.authtoken.models import Token

    user = new_user()
    token = Token.objects.create(user=user)

    reply = driver.request("GET", "/v1/me", headers={"authorization": f"Token {token.key}"})

    assert reply.status == 200
    assert reply.json() == {"id": user.pk, "username": user.username}
    (event,) = driver.events()
    assert event.properties["route"] == "/v1/me"
    assert event.properties["auth_method"] == "api_key"
    # DRF's user, not a hash of the token: Django's request.user is anonymous here.
    assert event.distinct_id == str(user.pk)
    assert event.groups == {}


def test_drf_session_authentication(driver: DjangoDriver) -> None:
    user = new_user()
    # A session cookie apiusage cannot recognise by name: the method comes from DRF.
    with override_settings(SESSION_COOKIE_NAME="example_session"):
        driver.http.force_login(user)
        reply = driver.request("GET", "/v1/me")

    assert reply.status == 200
    (event,) = driver.events()
    assert event.properties["auth_method"] == "session"
    assert event.distinct_id == str(user.pk)


def test_drf_basic_login_refused_names_no_caller(driver: DjangoDriver) -> None:
    """A wrong password for a real user, and an unknown user: DRF answers 401, and
    neither becomes a caller (no keyed hash of the user name); the right one does."""
    from django.contrib.auth.models import User

    user = User.objects.create_user(f"alice_{secrets.token_hex(4)}", password="right")

    def basic(password: str, name: str = user.username) -> dict[str, str]:
        encoded = base64.b64encode(f"{name}:{password}".encode()).decode()
        return {"authorization": f"Basic {encoded}"}

    statuses = [
        driver.request("GET", "/v1/me", headers=basic("wrong")).status,
        driver.request("GET", "/v1/me", headers=basic("x", name="nobody")).status,
        driver.request("GET", "/v1/me", headers=basic("right")).status,
    ]

    assert statuses == [401, 401, 200]
    refused_1, refused_2, accepted = driver.events()
    for refused in (refused_1, refused_2):
        assert refused.personless
        assert refused.distinct_id == refused.uuid
        assert refused.properties["auth_failed"] is True
        assert refused.properties["auth_method"] == "basic"
    assert accepted.distinct_id == str(user.pk)
    assert accepted.properties["auth_failed"] is False
    assert accepted.properties["auth_method"] == "basic"


def test_session_user_read_lazily_after_the_response(driver: DjangoDriver) -> None:
    """A view that never touches request.user: apiusage loads the user itself, afterwards,
    off the event loop under ASGI (no SynchronousOnlyOperation)."""
    user = new_user()
    driver.http.force_login(user)

    reply = driver.request("GET", "/v1/stream")

    assert reply.body == b"chunk 0\nchunk 1\nchunk 2\n"
    (event,) = driver.events()
    assert event.properties["transport"] == driver.transport
    assert event.properties["auth_method"] == "session"
    assert event.distinct_id == str(user.pk)
    assert driver.client is not None
    stats = driver.client.stats.snapshot()
    assert (stats["resolver_errors"], stats["internal_errors"]) == (0, 0)


@pytest.mark.anyio
async def test_async_client_on_a_running_event_loop(project: ModuleType) -> None:
    """AsyncClient awaited on the test's own event loop, as an ASGI server runs Django."""
    sink = MemorySink()
    await sync_to_async(project.create_app)(sink=sink, identity_secret=IDENTITY_SECRET)
    client = conf.client()
    try:
        user = await sync_to_async(new_user)()
        http = AsyncClient(raise_request_exception=False)
        await sync_to_async(http.force_login)(user)

        streamed = await http.get("/v1/stream")
        body = b"".join([chunk async for chunk in _iterate(streamed.streaming_content)])
        item = await http.get("/v1/items/3", headers={"user-agent": USER_AGENT})
        assert (body, item.status_code) == (b"chunk 0\nchunk 1\nchunk 2\n", 200)
        assert item.json()["owner"] == user.pk

        assert await anyio.to_thread.run_sync(client.flush)
        events = sink.named("api_request")
        assert [event.distinct_id for event in events] == [str(user.pk)] * 2
        assert [event.properties["transport"] for event in events] == ["asgi", "asgi"]
        assert client.stats.snapshot()["resolver_errors"] == 0
    finally:
        client.close(timeout=5)


async def _iterate(content: Any) -> Any:
    """A streamed test response's content, whether its iterator is sync or async."""
    if hasattr(content, "__aiter__"):
        async for chunk in content:
            yield chunk
    else:
        for chunk in await sync_to_async(list)(content):
            yield chunk


# ------------------------------------------------------------- the project's handlers
def test_create_app_gives_a_wsgi_handler(project: ModuleType) -> None:
    sink = MemorySink()
    app = project.create_app(sink=sink, identity_secret=IDENTITY_SECRET)
    assert isinstance(app, WSGIHandler)
    assert isinstance(project.application, WSGIHandler)
    response = Client(app).get("/v2/items/5", headers=ALICE)
    try:
        assert response.status_code == 200
    finally:
        response.close()

    client = conf.client()
    assert client.flush(timeout=10)
    (event,) = sink.named("api_request")
    assert event.properties["route"] == "/v2/items/{item_id}"
    assert event.properties["route_template"] == "/v2/items/<int:item_id>"
    assert event.properties["transport"] == "wsgi"
    assert event.distinct_id == "usr_alice"
    client.close(timeout=5)


@pytest.mark.anyio
async def test_create_app_gives_an_asgi_handler(project: ModuleType) -> None:
    sink = MemorySink()
    app = await sync_to_async(project.create_app)(
        asgi=True, sink=sink, identity_secret=IDENTITY_SECRET
    )
    assert isinstance(app, apiusage.ASGIMiddleware)
    assert isinstance(app.app, ASGIHandler)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        reply = await http.post("/v1/projects", json={"name": "Apollo"}, headers=ALICE)
    assert reply.status_code == 201

    client = conf.client()
    try:
        assert await anyio.to_thread.run_sync(client.flush)
        request_event = sink.named("api_request")[0]
        (journey,) = sink.named("project_create")
        assert request_event.properties["route"] == "/v1/projects"
        assert request_event.properties["transport"] == "asgi"
        assert request_event.properties["status_code"] == 201
        assert journey.distinct_id == request_event.distinct_id == "usr_alice"
        assert journey.properties["request_id"] == request_event.uuid
    finally:
        client.close(timeout=5)


@pytest.mark.anyio
async def test_asgi_lifespan_shutdown_flushes(project: ModuleType) -> None:
    """Django refuses lifespan; our handler answers it, so uvicorn's shutdown flushes."""
    sink = MemorySink()
    app = await sync_to_async(project.create_app)(
        asgi=True, sink=sink, identity_secret=IDENTITY_SECRET, flush_interval=3600
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/v1/items/3", headers=ALICE)).status_code == 200
    assert sink.events == []  # still queued: only the shutdown can deliver it

    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [message["type"] for message in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    (event,) = sink.named("api_request")
    assert event.properties["route"] == "/v1/items/{item_id}"
    conf.client().close(timeout=5)


@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("api/v1/items/<int:pk>", "/api/v1/items/<int:pk>"),
        ("^api/users/(?P<pk>[^/.]+)/$", "/api/users/<pk>/"),  # a DRF router
        (r"^legacy/(?P<year>[0-9]{4})/(?P<slug>[\w-]+)\.json$", "/legacy/<year>/<slug>.json"),
        ("", "/"),
    ],
)
def test_route_templates_are_readable(route: str, template: str) -> None:
    from django_apiusage.reading import route_template

    assert route_template(route) == template


def test_a_replaced_user_wins_over_a_cached_anonymous_one(project: ModuleType) -> None:
    """A middleware read request.user (caching AnonymousUser), then authenticated the caller."""
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory
    from django.utils.functional import SimpleLazyObject

    from django_apiusage.reading import RequestState

    request = RequestFactory().get("/v1/items/1")
    request._cached_user = AnonymousUser()  # type: ignore[attr-defined]
    request.user = SimpleLazyObject(lambda: request._cached_user)  # type: ignore[attr-defined]
    assert RequestState(request, None).user.is_anonymous
    real = new_user()
    request.user = real
    assert RequestState(request, None).user == real


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_async_and_sync_resolvers_each_run_once_and_are_awaited(
    project: ModuleType, asgi: bool, recwarn: pytest.WarningsRecorder
) -> None:
    import gc

    calls, resolvers = counting_resolvers()

    sink = MemorySink()
    app = project.create_app(
        asgi=asgi,
        sink=sink,
        identity_secret=IDENTITY_SECRET,
        identify=resolvers,
    )
    for _ in range(3):
        if asgi:

            async def get() -> int:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://testserver"
                ) as http:
                    return (await http.get("/v2/items/5", headers=ALICE)).status_code

            assert anyio.run(get) == 200
        else:
            response = Client(app).get("/v2/items/5", headers=ALICE)
            assert response.status_code == 200
            response.close()
    client = conf.client()
    try:
        assert client.flush(timeout=10)
        assert [event.distinct_id for event in sink.named("api_request")] == ["usr_from_db"] * 3
        gc.collect()
        assert calls == {"sync": 3, "async": 3}
        assert not [w for w in recwarn if "never awaited" in str(w.message)]
        assert client.stats.snapshot()["internal_errors"] == 0
    finally:
        client.close(timeout=5)


def test_static_and_media_urls_are_not_recorded(driver: DjangoDriver) -> None:
    from django_apiusage.conf import django_served_paths

    with override_settings(STATIC_URL="static/", MEDIA_URL="/uploads"):
        assert django_served_paths() == ["/static/", "/uploads/"]
    with override_settings(STATIC_URL="https://cdn.example.com/static/", MEDIA_URL=""):
        assert django_served_paths() == []  # served by another host

    # The example project has STATIC_URL = "static/", as startproject writes it.
    driver.request("GET", "/static/app.css")
    driver.request("GET", "/v1/items/1", headers=ALICE)
    assert [event.properties["route"] for event in driver.events()] == ["/v1/items/{item_id}"]


def _flagged(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"beta": apiusage.flag("beta")})


urlpatterns: list[Any] = []  # filled by the test below (a ROOT_URLCONF of its own)


@pytest.mark.parametrize("transport", ["django", "django-asgi"])
def test_flags_in_a_view_and_the_flags_header(project: ModuleType, transport: str) -> None:
    from django.urls import path

    urlpatterns[:] = [path("v1/flagged", _flagged), *project.urlpatterns]
    driver = make_driver(transport)
    assert isinstance(driver, DjangoDriver)
    driver.start(flags={"beta": {"callers": ["usr_alice"]}}, flags_header=True)
    try:
        with override_settings(ROOT_URLCONF=__name__):
            if transport == "django":
                response = driver.http.get("/v1/flagged", headers=ALICE)
            else:

                async def get() -> Any:
                    return await driver.http.get("/v1/flagged", headers=ALICE)

                response = async_to_sync(get)()
        assert response.json() == {"beta": True}
        assert response.headers["X-Feature-Flags"] == "beta=true"
        (event,) = driver.events()
        assert event.distinct_id == "usr_alice"
        assert event.properties["$feature/beta"] is True
    finally:
        driver.close()
