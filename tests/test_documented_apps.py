"""Apps built the ways the frameworks document behave wrapped exactly as bare.

Each test here failed before the fix it names: a class-based ASGI app called as ASGI2,
``bool()`` of a WSGI response raising, ``track()`` rejected in a streamed excluded body,
an undecodable cookie dropping the event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from werkzeug.test import Client, EnvironBuilder

import apiusage
from tests.conftest import MakeClient
from tests.support.apps import asgi_client

pytestmark = pytest.mark.anyio


class Hello(HTTPEndpoint):
    async def get(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello from a class")


class ThreeArgumentApp:
    """A class whose instances are ASGI 3 apps: ``Class(scope, receive, send)`` is awaitable."""

    def __init__(self, scope: Any, receive: Any, send: Any) -> None:
        self.send = send

    def __await__(self) -> Any:
        return self.respond().__await__()

    async def respond(self) -> None:
        await self.send({"type": "http.response.start", "status": 204, "headers": []})
        await self.send({"type": "http.response.body", "body": b""})


class ASGI2App:
    """The old double-callable style: still called correctly."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})


@pytest.mark.parametrize(
    ("app", "status", "body"),
    [(Hello, 200, b"hello from a class"), (ThreeArgumentApp, 204, b""), (ASGI2App, 200, b"asgi2")],
)
async def test_class_based_asgi_apps(
    make_client: MakeClient, app: Any, status: int, body: bytes
) -> None:
    client, sink = make_client()
    async with asgi_client(apiusage.ASGIMiddleware(app, client=client)) as http:
        response = await http.get("/hello")
    assert (response.status_code, response.content) == (status, body)
    client.flush()
    assert [event.properties["status_code"] for event in sink.events] == [status]


def _generator_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"streamed"


def _list_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"one chunk"]


def test_wsgi_response_truthiness_and_length_follow_the_apps(make_client: MakeClient) -> None:
    client, _ = make_client()
    environ = EnvironBuilder(path="/").get_environ()
    streamed = apiusage.WSGIMiddleware(_generator_app, client=client)(environ, lambda *a: None)
    assert bool(streamed) is True  # a generator is true; bool() raised TypeError before
    assert not hasattr(streamed, "__len__")
    assert b"".join(streamed) == b"streamed"
    streamed.close()  # type: ignore[attr-defined]
    listed = apiusage.WSGIMiddleware(_list_app, client=client)(environ, lambda *a: None)
    assert len(listed) == 1  # type: ignore[arg-type]  # servers set Content-Length from it
    assert b"".join(listed) == b"one chunk"
    listed.close()  # type: ignore[attr-defined]


def test_track_in_a_streamed_body_of_an_excluded_route_is_ignored(
    make_client: MakeClient,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        apiusage.track("before_body")
        yield b"a"
        apiusage.track("in_body")
        yield b"b"

    client, sink = make_client(exclude_paths=["/health"])
    response = Client(apiusage.WSGIMiddleware(app, client=client)).get("/health")
    assert response.data == b"ab"
    response.close()
    client.flush()
    assert sink.events == []
    assert client.stats.snapshot()["calls_rejected"] == 0


@pytest.mark.parametrize(
    "cookie",
    [b"sessionid=\xff\xfe; theme=dark", b"\xc3\x28=\xa0\xa1", b"session=" + b"\xe9" * 5000],
)
def test_undecodable_cookies_still_give_an_event(make_client: MakeClient, cookie: bytes) -> None:
    client, sink = make_client()
    app = apiusage.WSGIMiddleware(_list_app, client=client)
    environ = EnvironBuilder(path="/").get_environ()
    environ["HTTP_COOKIE"] = cookie.decode("latin-1")  # PEP 3333: bytes as latin-1 text
    body = app(environ, lambda *a: None)
    list(body)
    body.close()  # type: ignore[attr-defined]
    client.flush()
    assert len(sink.events) == 1
    assert client.stats.snapshot()["dropped"] == 0


async def test_undecodable_asgi_cookie_still_gives_an_event(make_client: MakeClient) -> None:
    client, sink = make_client()
    async with asgi_client(apiusage.ASGIMiddleware(Hello, client=client)) as http:
        response = await http.get("/", headers=[(b"cookie", b"sessionid=\xff\xfe; a=\x80")])
    assert response.status_code == 200
    client.flush()
    assert len(sink.events) == 1
    assert sink.events[0].properties["auth_method"] == "session"


# A raw ASGI request, for servers driven by hand (under trio).
_GET_ROOT = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def _ignore(message: Any) -> None:
    pass


async def _no_body() -> Any:
    return {"type": "http.request", "body": b""}


def test_lifespan_shutdown_flushes_under_trio(make_client: MakeClient) -> None:
    import trio

    client, sink = make_client(flush_interval=60, batch_size=1000)  # nothing leaves on its own
    seen_at_shutdown: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = apiusage.ASGIMiddleware(app, client=client)

    async def serve() -> None:
        await wrapped(_GET_ROOT, _no_body, _ignore)
        lifespan = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> Any:
            return next(lifespan)

        async def send(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                seen_at_shutdown.append(len(sink.events))

        await wrapped({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    trio.run(serve)
    assert seen_at_shutdown == [1]  # flushed before the server heard "shutdown complete"
    assert client.stats.snapshot()["internal_errors"] == 0


def test_end_of_request_waits_for_delivery_under_trio(make_client: MakeClient) -> None:
    """Under trio there is no asyncio future to await: a thread waits instead, and the
    request's event is delivered before the request ends all the same."""
    import trio

    client, sink = make_client(delivery="end_of_request", flush_interval=60, batch_size=1000)
    delivered_when_done: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = apiusage.ASGIMiddleware(app, client=client)

    async def serve() -> None:
        for _ in range(3):
            await wrapped(_GET_ROOT, _no_body, _ignore)
            delivered_when_done.append(len(sink.events))

    trio.run(serve)
    assert delivered_when_done == [1, 2, 3]
    assert client.stats.snapshot()["internal_errors"] == 0
