"""A complete small Django project in one file, instrumented with apiusage.

Callers authenticate with an ``X-API-Key`` header: ``api_key_middleware`` sets
``request.user``, where apiusage finds the caller (its ``id``) and organisation (its
``organisation_id``). ``/v1/me`` is a Django REST Framework view with token, session and
basic authentication: apiusage records DRF's authenticator as the auth method and DRF's
user as the caller (a login DRF refused names no caller).

The settings are configured here unless Django is already configured; the database is an
in-memory SQLite one, created at import by ``prepare_database()``. Run it with::

    python docs/examples/django_app.py                  # runserver on port 8000
    gunicorn --chdir docs/examples django_app:application
    uvicorn --app-dir docs/examples django_app:asgi_application
    uvicorn --app-dir docs/examples django_app:stock_asgi_application

Under ASGI it uses ``django_apiusage.asgi.get_asgi_application()``: Django's handler, plus
the ASGI lifespan protocol. ``stock_asgi_application`` is Django's own handler, as
``startproject`` writes ``asgi.py``: apiusage's middleware records it just the same, and
delivers what it holds when the server stops (it catches the server's SIGTERM).

``create_app(asgi=False, **apiusage_options)`` returns a new WSGI (or ASGI) handler with
apiusage options (``sink=...``, ``identity_secret=...``) merged over ``APIUSAGE``. Django
settings belong to the process, so it applies them to the process, as
``override_settings(APIUSAGE=...)`` does (apiusage's middleware then gets a fresh client),
replacing those of any earlier call. In tests, Django's test ``Client`` serves whatever
was configured last.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Any

import django
from asgiref.sync import iscoroutinefunction
from django.conf import settings

APIUSAGE: dict[str, Any] = {}  # PostHog key etc. from the environment (POSTHOG_API_KEY …)

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-example-not-a-secret",
        ALLOWED_HOSTS=["localhost", "127.0.0.1", "testserver"],  # testserver: Django's tests
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "rest_framework",
            "rest_framework.authtoken",
            "django_apiusage",
        ],
        MIDDLEWARE=[
            "django_apiusage.middleware.ApiUsageMiddleware",  # first: it sees every request
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            f"{__name__}.api_key_middleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": "file:django_app?mode=memory&cache=shared",
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        REST_FRAMEWORK={"DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]},
        USE_TZ=True,
        STATIC_URL="static/",
        APIUSAGE=APIUSAGE,
    )
    django.setup()

# Imports that need configured settings.
from django.core.asgi import get_asgi_application as django_asgi_application  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.utils.decorators import sync_and_async_middleware  # noqa: E402
from django.views.decorators.http import require_GET, require_POST  # noqa: E402
from rest_framework.authentication import (  # noqa: E402
    BasicAuthentication,
    SessionAuthentication,
    TokenAuthentication,
)
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

import apiusage  # noqa: E402
from django_apiusage.asgi import get_asgi_application  # noqa: E402

STREAM_PAUSE = 0.05  # seconds between the chunks of /v1/stream


@dataclass(frozen=True)
class ApiUser:
    id: str
    organisation_id: str
    is_authenticated = True


USERS_BY_KEY = {
    "key-alice": ApiUser("usr_alice", "org_acme"),
    "key-bob": ApiUser("usr_bob", "org_globex"),
}


@sync_and_async_middleware
def api_key_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """``X-API-Key`` callers: ``request.user`` becomes their :class:`ApiUser`."""

    def authenticate(request: HttpRequest) -> None:
        user = USERS_BY_KEY.get(request.headers.get("X-API-Key", ""))
        if user is not None:
            request.user = user  # type: ignore[assignment]

    if iscoroutinefunction(get_response):  # under ASGI: stay async, no thread hop

        async def async_middleware(request: HttpRequest) -> Any:
            authenticate(request)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        authenticate(request)
        return get_response(request)

    return middleware


def authenticated(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def authenticated_view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "a valid X-API-Key header is required"}, status=401)
        return view(request, **kwargs)

    return authenticated_view


@require_GET
@authenticated
def get_item(request: HttpRequest, item_id: int) -> HttpResponse:
    return JsonResponse({"id": item_id, "name": f"Item {item_id}", "owner": request.user.id})


@require_GET
@authenticated
def get_item_v2(request: HttpRequest, item_id: int) -> HttpResponse:
    item = {"id": item_id, "name": f"Item {item_id}"}
    return JsonResponse({"item": item, "owner": {"id": request.user.id}})


@require_POST
@authenticated
def create_project(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    project_id = f"prj_{secrets.token_hex(4)}"
    apiusage.track("project_create", project_id=project_id)
    organisation_id = getattr(request.user, "organisation_id", None)
    project = {"id": project_id, "name": body["name"], "organisation_id": organisation_id}
    return JsonResponse(project, status=201)


@require_POST
def signup(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    plan = body.get("plan", "free")
    user = ApiUser(f"usr_{secrets.token_hex(4)}", body["organisation"])
    api_key = f"key-{secrets.token_urlsafe(12)}"
    USERS_BY_KEY[api_key] = user
    apiusage.identify(
        user.id, organisation=user.organisation_id, organisation_properties={"plan": plan}
    )
    apiusage.track("signup", plan=plan)
    created = {"id": user.id, "organisation_id": user.organisation_id, "api_key": api_key}
    return JsonResponse(created, status=201)


@require_GET
def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for number in range(3):
            if number:
                time.sleep(STREAM_PAUSE)
            yield f"chunk {number}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("something broke")


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})  # not recorded: /health is excluded by default


class Me(APIView):
    """The Django user behind a DRF token (``Authorization: Token …``), a session or a
    user name and password (``Authorization: Basic …``)."""

    authentication_classes = (TokenAuthentication, SessionAuthentication, BasicAuthentication)
    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        return Response({"id": request.user.pk, "username": request.user.get_username()})


v1 = [
    path("items/<int:item_id>", get_item),
    path("projects", create_project),
    path("signup", signup),
    path("stream", stream),
    path("boom", boom),
    path("me", Me.as_view()),
]
urlpatterns = [
    path("v1/", include(v1)),
    path("v2/", include([path("items/<int:item_id>", get_item_v2)])),
    path("health", health),
]


def prepare_database() -> None:
    """Create the tables (auth, sessions, DRF tokens) in the in-memory database.

    Some ASGI servers import the app inside their event loop, where Django refuses
    database work, so then the migration runs in a thread of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        call_command("migrate", run_syncdb=True, verbosity=0)
        return
    migration = threading.Thread(
        target=call_command, args=("migrate",), kwargs={"run_syncdb": True, "verbosity": 0}
    )
    migration.start()
    migration.join()


def apiusage_settings(**apiusage_options: Any) -> dict[str, Any]:
    """``APIUSAGE`` with apiusage's keyword options (``sink=...`` → ``"SINK"``) on top."""
    return {**APIUSAGE, **{name.upper(): value for name, value in apiusage_options.items()}}


_applied: override_settings | None = None


def create_app(*, asgi: bool = False, **apiusage_options: Any) -> Any:
    """A new WSGI (``asgi=True``: ASGI) handler, apiusage configured with ``apiusage_options``."""
    global _applied
    if _applied is not None:
        _applied.disable()
        _applied = None
    if apiusage_options:
        _applied = override_settings(APIUSAGE=apiusage_settings(**apiusage_options))
        _applied.enable()
    return get_asgi_application() if asgi else get_wsgi_application()


prepare_database()  # in memory: each process creates its own
application = get_wsgi_application()
asgi_application = get_asgi_application()
stock_asgi_application = django_asgi_application()


if __name__ == "__main__":
    import sys

    from django.core.management import execute_from_command_line

    execute_from_command_line([sys.argv[0], "runserver", "--noreload", *sys.argv[1:]])
