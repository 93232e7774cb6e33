"""One driver per framework: builds its example app (docs/examples/) and sends requests to it.

Every example app has the same surface, so one behaviour suite fits all of them; a driver
knows only how to build and call its app in-process, and the few facts that are native to
its framework (route template syntax, transport, whether an unhandled error reaches the
server).

* ASGI apps are called through ``httpx.ASGITransport`` on an event loop in a background
  thread (an anyio blocking portal), behind a small stand-in for the server that records
  what escapes the app, as uvicorn would log it.
* WSGI apps are called with werkzeug's test client, and every response is closed, as a WSGI
  server does, so the middleware's ``close()`` finishes the record.
* Django is called with its test ``Client``, and with ``AsyncClient`` for ASGI.
"""

from __future__ import annotations

import importlib.util
import json as jsonlib
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from anyio.from_thread import start_blocking_portal

from apiusage import Event, UsageClient
from apiusage.sinks.memory import MemorySink

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
IDENTITY_SECRET = "adapter-tests-identity-secret"
USER_AGENT = "acme-sdk/2.1.0"


def load_example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` as the module ``name`` (once per process)."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)


# Route templates in each framework's own syntax; the other routes have no parameters.
_BRACES = {"item_v1": "/v1/items/{item_id}", "item_v2": "/v2/items/{item_id}"}
_ANGLE = {"item_v1": "/v1/items/<int:item_id>", "item_v2": "/v2/items/<int:item_id>"}
_FALCON = {"item_v1": "/v1/items/{item_id:int}", "item_v2": "/v2/items/{item_id:int}"}


@dataclass
class Driver:
    """Builds one example app and calls it; subclasses know the transport."""

    name: str
    example: str
    framework: str
    transport: str
    item_templates: Mapping[str, str]
    #: True when the app lets an unhandled error reach the server (after sending its 500).
    errors_reach_server: bool = False
    sink: MemorySink = field(default_factory=MemorySink)
    server_errors: list[BaseException] = field(default_factory=list)
    client: UsageClient | None = None

    def framework_template(self, route: str) -> str:
        """The framework's own template of a route of the example (``item_v1``,
        ``/v1/stream`` …): the expected ``route_template``."""
        return self.item_templates.get(route, route)

    def template(self, route: str) -> str:
        """The expected ``route``: the framework's template in OpenAPI's syntax (written
        out by hand for the example apps' templates, not with apiusage's own function)."""
        template = self.framework_template(route)
        for framework_syntax in ("<int:item_id>", "<item_id>", "{item_id:int}"):
            template = template.replace(framework_syntax, "{item_id}")
        return template if template.startswith("/") else "/" + template

    @property
    def module(self) -> ModuleType:
        return load_example(self.example)

    def start(self, **apiusage_options: Any) -> None:
        options = {"sink": self.sink, "identity_secret": IDENTITY_SECRET, **apiusage_options}
        self.client = self._start(options)

    def _start(self, options: dict[str, Any]) -> UsageClient:
        raise NotImplementedError

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        sent = {"user-agent": USER_AGENT, **(headers or {})}
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent["content-type"] = "application/json"
        return self._request(method, path, sent, body)

    def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def events(self, name: str | None = "api_request") -> list[Event]:
        """Everything recorded so far (delivered first), or only the events called ``name``."""
        assert self.client is not None
        assert self.client.flush(timeout=10)
        return list(self.sink.events) if name is None else self.sink.named(name)

    def close(self) -> None:
        if self.client is not None:
            self.client.close(timeout=5)


class AsgiDriver(Driver):
    def _start(self, options: dict[str, Any]) -> UsageClient:
        app = self.module.create_app(**options)
        self._stack = ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal())
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._server(app)), base_url="http://testserver"
        )
        self._stack.callback(self._portal.call, self._http.aclose)
        # starlette_apiusage / fastapi_apiusage keep their instance on the app; the generic
        # middleware (Litestar) is the app.
        usage = getattr(app, "_apiusage", app)
        client: UsageClient = usage.client
        return client

    def _server(self, app: Any) -> Callable[..., Any]:
        """The app as a server runs it: an error that escapes is logged, after a 500."""

        async def serve(scope: Any, receive: Any, send: Any) -> None:
            started = False

            async def send_tracking(message: Any) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send(message)

            try:
                await app(scope, receive, send_tracking)
            except Exception as exc:
                self.server_errors.append(exc)
                if not started:
                    await send({"type": "http.response.start", "status": 500, "headers": []})
                    await send({"type": "http.response.body", "body": b""})

        return serve

    def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        async def call() -> Reply:
            response = await self._http.request(method, path, headers=headers, content=body)
            return Reply(response.status_code, response.content)

        return self._portal.call(call)

    def close(self) -> None:
        self._stack.close()
        super().close()


class WsgiDriver(Driver):
    def _start(self, options: dict[str, Any]) -> UsageClient:
        from werkzeug.test import Client

        app = self.module.create_app(**options)
        self._http = Client(app)
        if self.framework == "flask":
            from flask_apiusage import ApiUsage

            return ApiUsage.client_for(app)
        client: UsageClient = app.client  # the generic WSGIMiddleware is the app (Falcon)
        return client

    def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        try:
            response = self._http.open(path, method=method, headers=headers, data=body)
        except Exception as exc:  # what a WSGI server would log, answering 500
            self.server_errors.append(exc)
            return Reply(500, b"")
        try:
            return Reply(response.status_code, response.get_data())
        finally:
            response.close()  # as a WSGI server does: finishes apiusage's record


class DjangoDriver(Driver):
    def _start(self, options: dict[str, Any]) -> UsageClient:
        from django.test import AsyncClient, Client

        from django_apiusage import conf

        self.module.create_app(asgi=self.transport == "asgi", **options)
        if self.transport == "asgi":
            self._http: Any = AsyncClient(raise_request_exception=False)
        else:
            self._http = Client(raise_request_exception=False)
        return conf.client()

    @property
    def http(self) -> Any:
        """Django's test ``Client`` (``AsyncClient`` for ASGI), e.g. to ``force_login()``."""
        return self._http

    def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        from asgiref.sync import async_to_sync

        content_type = headers.pop("content-type", "application/octet-stream")
        if self.transport == "asgi":

            async def send() -> Any:
                return await self._http.generic(method, path, body, content_type, headers=headers)

            response = async_to_sync(send)()
        else:
            response = self._http.generic(method, path, body, content_type, headers=headers)
        if response.streaming:  # iterating to the end closes it, as a server would
            return Reply(response.status_code, b"".join(response.streaming_content))
        return Reply(response.status_code, response.content)  # closed by the test client


DRIVERS: dict[str, Callable[[], Driver]] = {
    "fastapi": lambda: AsgiDriver(
        "fastapi", "fastapi_app", "fastapi", "asgi", _BRACES, errors_reach_server=True
    ),
    "starlette": lambda: AsgiDriver(
        "starlette", "starlette_app", "starlette", "asgi", _BRACES, errors_reach_server=True
    ),
    "litestar": lambda: AsgiDriver("litestar", "litestar_app", "litestar", "asgi", _BRACES),
    "flask": lambda: WsgiDriver("flask", "flask_app", "flask", "wsgi", _ANGLE),
    "falcon": lambda: WsgiDriver("falcon", "falcon_app", "falcon", "wsgi", _FALCON),
    "django": lambda: DjangoDriver("django", "django_app", "django", "wsgi", _ANGLE),
    "django-asgi": lambda: DjangoDriver("django-asgi", "django_app", "django", "asgi", _ANGLE),
}


def make_driver(name: str) -> Driver:
    return DRIVERS[name]()


def counting_resolvers() -> tuple[Counter[str], list[Any]]:
    """A sync resolver that finds nothing, an async one that finds ``usr_from_db``, and one
    that must never be asked; with the count of calls to each."""
    calls: Counter[str] = Counter()

    def from_header_sync(view: Any) -> str | None:
        calls["sync"] += 1
        return None

    async def from_database(view: Any) -> str | None:
        calls["async"] += 1
        return "usr_from_db"

    def never_needed(view: Any) -> str | None:
        calls["after"] += 1
        return "usr_fallback"

    return calls, [from_header_sync, from_database, never_needed]
