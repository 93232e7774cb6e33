"""The WSGI middleware around a real Flask app and plain WSGI callables."""

from __future__ import annotations

import asyncio
import threading
import time
import wsgiref.simple_server
import wsgiref.util
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import send_file
from werkzeug.test import Client, EnvironBuilder

import apiusage
from apiusage import Identity, RequestView, WSGIMiddleware
from apiusage.context import current_record
from apiusage.events import Event
from apiusage.sinks.memory import MemorySink
from tests.conftest import MakeClient
from tests.support.apps import (
    STREAM_CHUNKS,
    STREAM_PAUSE,
    AppError,
    ClosingBody,
    flask_app,
    plain_wsgi_app,
)


@pytest.fixture(autouse=True)
def no_leaked_request() -> Iterator[None]:
    """Every response is closed, so no request record may outlive its test."""
    yield
    assert current_record() is None


def requests_of(client: apiusage.UsageClient, sink: MemorySink) -> list[Event]:
    assert client.flush(timeout=10)
    return sink.named("api_request")


def call(app: Any, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    """One request through werkzeug's test client; the response is closed afterwards."""
    with Client(app).open(path, method=method, **kwargs) as response:
        return response.status_code, response.get_data()


class StartResponse:
    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return lambda data: None


def environ_for(path: str, **kwargs: Any) -> dict[str, Any]:
    return EnvironBuilder(path=path, **kwargs).get_environ()


REQUEST_CASES = [
    # (app, method, path, kwargs, status, route, api_version, auth_method)
    ("flask", "GET", "/v1/items/3", {}, 200, None, "v1", "none"),
    ("flask", "GET", "/v1/items/3", {"headers": {"X-API-Key": "k"}}, 200, None, "v1", "api_key"),
    ("flask", "GET", "/nope/secret-token-1", {}, 404, None, None, "none"),
    ("flask", "POST", "/v1/items/3", {}, 405, None, "v1", "none"),
    ("plain", "GET", "/teapot", {"headers": {"API-Version": "2"}}, 418, None, "v2", "none"),
    (
        "plain",
        "GET",
        "/orders/77",
        {"query_string": "token=abc"},
        200,
        "/orders/{order_id}",
        None,
        "bearer",
    ),
    (
        "plain",
        "GET",
        "/hello",
        {"headers": {"Authorization": "Basic Ym9iOnB3"}},
        200,
        None,
        None,
        "basic",
    ),
]


@pytest.mark.parametrize(
    ("app_name", "method", "path", "kwargs", "status", "route", "api_version", "auth_method"),
    REQUEST_CASES,
    ids=[f"{case[0]}:{case[1]} {case[2]}" for case in REQUEST_CASES],
)
def test_request_is_recorded(
    recording: tuple[apiusage.UsageClient, MemorySink],
    app_name: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    route: str | None,
    api_version: str | None,
    auth_method: str,
) -> None:
    client, sink = recording
    app = flask_app() if app_name == "flask" else plain_wsgi_app
    got_status, body = call(WSGIMiddleware(app, client=client), method, path, **kwargs)
    assert got_status == status
    [event] = requests_of(client, sink)
    properties = event.properties
    assert properties["status_code"] == status
    assert properties["route"] == route  # WSGI knows no template unless the app sets one
    assert properties["api_version"] == api_version
    assert properties["auth_method"] == auth_method
    assert properties["method"] == method
    assert properties["transport"] == "wsgi"
    assert properties["response_bytes"] == len(body)
    assert properties["duration_ms"] > 0
    assert "secret-token-1" not in str(properties)


def test_request_bytes(recording: tuple[apiusage.UsageClient, MemorySink]) -> None:
    client, sink = recording
    status, body = call(
        WSGIMiddleware(flask_app(), client=client), "POST", "/v1/items", data=b"z" * 2048
    )
    assert (status, body) == (201, b'{"received":2048}\n')
    [event] = requests_of(client, sink)
    assert event.properties["request_bytes"] == 2048


def test_streaming_response_is_timed_to_its_end(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    _, bare = call(flask_app(), "GET", "/stream")
    status, body = call(WSGIMiddleware(flask_app(), client=client), "GET", "/stream")
    assert status == 200
    assert body == bare == b"".join(STREAM_CHUNKS)
    [event] = requests_of(client, sink)
    assert event.properties["response_bytes"] == len(body)
    assert event.properties["duration_ms"] >= (len(STREAM_CHUNKS) - 1) * STREAM_PAUSE * 1000 - 5


@pytest.mark.parametrize("app_name", ["plain", "flask"])
def test_exception_is_reraised_unchanged_and_500_recorded(
    recording: tuple[apiusage.UsageClient, MemorySink], app_name: str
) -> None:
    client, sink = recording
    app = flask_app() if app_name == "flask" else plain_wsgi_app
    with pytest.raises(AppError) as bare:
        call(app, "GET", "/boom")
    with pytest.raises(AppError) as wrapped:
        call(WSGIMiddleware(app, client=client), "GET", "/boom")
    assert type(wrapped.value) is AppError
    assert str(wrapped.value) == str(bare.value)
    [event] = requests_of(client, sink)
    assert event.properties["status_code"] == 500
    assert event.properties["exception"] == "tests.support.apps.AppError"


def test_flask_handled_error_is_a_500_without_exception(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    status, _ = call(
        WSGIMiddleware(flask_app(propagate_exceptions=False), client=client), "GET", "/boom"
    )
    assert status == 500
    [event] = requests_of(client, sink)
    assert (event.properties["status_code"], event.properties["exception"]) == (500, None)


def test_close_is_called_and_finishes_the_record(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    bodies: list[ClosingBody] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        body = ClosingBody([b"one", b"two"])
        bodies.append(body)
        return body

    start_response = StartResponse()
    result = WSGIMiddleware(app, client=client)(environ_for("/closing"), start_response)
    assert b"".join(result) == b"onetwo"
    assert start_response.status == "200 OK"
    assert requests_of(client, sink) == []  # not finished before close()
    assert not bodies[0].closed
    result.close()  # type: ignore[attr-defined]
    assert bodies[0].closed
    [event] = requests_of(client, sink)
    assert event.properties["response_bytes"] == 6
    result.close()  # type: ignore[attr-defined]  # a second close records nothing more
    assert len(requests_of(client, sink)) == 1


def test_exception_while_iterating_is_recorded_and_closes(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    closed: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def chunks() -> Iterator[bytes]:
            try:
                yield b"partial"
                raise AppError("mid-stream")
            finally:
                closed.append(True)

        return chunks()

    result = WSGIMiddleware(app, client=client)(environ_for("/partial"), StartResponse())
    iterator = iter(result)
    assert next(iterator) == b"partial"
    with pytest.raises(AppError, match="mid-stream"):
        next(iterator)
    result.close()  # type: ignore[attr-defined]
    assert closed == [True]
    [event] = requests_of(client, sink)
    assert event.properties["status_code"] == 200
    assert event.properties["exception"] == "tests.support.apps.AppError"
    assert event.properties["response_bytes"] == len(b"partial")


def test_len_of_a_one_item_list_still_works(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    result = WSGIMiddleware(plain_wsgi_app, client=client)(environ_for("/hello"), StartResponse())
    assert len(result) == 1  # type: ignore[arg-type]
    assert list(result) == [b"hello"]
    result.close()  # type: ignore[attr-defined]
    [event] = requests_of(client, sink)
    assert event.properties["response_bytes"] == 5


def test_file_wrapper_is_returned_unwrapped_and_recorded_on_close(
    recording: tuple[apiusage.UsageClient, MemorySink], tmp_path: Path
) -> None:
    client, sink = recording
    data = b"0123456789" * 1000
    (tmp_path / "payload.bin").write_bytes(data)
    returned: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))],
        )
        handle = (tmp_path / "payload.bin").open("rb")
        wrapper = environ["wsgi.file_wrapper"](handle, 4096)
        returned.append((wrapper, handle))
        return wrapper

    environ = environ_for("/download")
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    result = WSGIMiddleware(app, client=client)(environ, StartResponse())
    wrapper, handle = returned[0]
    assert result is wrapper
    assert type(result) is wsgiref.util.FileWrapper
    assert b"".join(result) == data
    assert requests_of(client, sink) == []
    result.close()
    assert handle.closed
    [event] = requests_of(client, sink)
    assert event.properties["response_bytes"] == len(data)
    assert event.properties["status_code"] == 200


def test_track_inside_handler_and_streaming_generator(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    app = WSGIMiddleware(flask_app(), client=client)
    assert call(app, "GET", "/track") == (200, b'{"ok":true}\n')
    assert call(app, "GET", "/stream-track", headers={"X-API-Key": "stream-key"}) == (
        200,
        b"onetwo",
    )
    assert client.flush()

    first, second = sink.named("api_request")
    [tracked] = sink.named("flask_tracked")
    assert (first.distinct_id, first.groups) == ("flask-user", {"organisation": "flask-org"})
    assert (tracked.distinct_id, tracked.groups) == ("flask-user", {"organisation": "flask-org"})
    assert tracked.properties["request_id"] == first.uuid
    assert tracked.properties["where"] == "handler"

    [streamed] = sink.named("streamed")
    assert streamed.properties["request_id"] == second.uuid
    assert streamed.distinct_id == second.distinct_id
    assert second.distinct_id.startswith("key_")  # from the API key, hashed
    assert "stream-key" not in str(second) + str(streamed)


def test_async_resolver_under_wsgi(make_client: MakeClient) -> None:
    async def resolve(view: RequestView) -> Identity:
        await asyncio.sleep(0)
        return Identity(view.headers["x-user"], organisation="wsgi-org")

    client, sink = make_client(identify=resolve)
    call(WSGIMiddleware(plain_wsgi_app, client=client), "GET", "/hello", headers={"X-User": "walt"})
    [event] = requests_of(client, sink)
    assert (event.distinct_id, event.groups) == ("walt", {"organisation": "wsgi-org"})


def test_excluded_double_and_disabled(make_client: MakeClient) -> None:
    client, sink = make_client()
    assert call(WSGIMiddleware(plain_wsgi_app, client=client), "GET", "/health") == (200, b"hello")
    twice = WSGIMiddleware(WSGIMiddleware(plain_wsgi_app, client=client), client=client)
    assert call(twice, "GET", "/hello") == (200, b"hello")
    disabled, disabled_sink = make_client(enabled=False)
    assert call(WSGIMiddleware(plain_wsgi_app, client=disabled), "GET", "/hello") == (200, b"hello")
    assert len(requests_of(client, sink)) == 1
    assert requests_of(disabled, disabled_sink) == []


# ------------------------------------------------------------ a real server (wsgiref)
class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class OneShotServer:
    """A wsgiref server handling one request per `get()`; `get()` returns after the server
    finished the request (including the iterable's close())."""

    def __init__(self, app: Any) -> None:
        self.server = wsgiref.simple_server.make_server(
            "127.0.0.1", 0, app, handler_class=_QuietHandler
        )
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def get(self, path: str) -> httpx.Response:
        thread = threading.Thread(target=self.server.handle_request)
        thread.start()
        try:
            return httpx.get(self.base_url + path, timeout=10)
        finally:
            thread.join(10)
            assert not thread.is_alive()

    def close(self) -> None:
        self.server.server_close()


def test_real_server_streaming_and_file_wrapper(
    recording: tuple[apiusage.UsageClient, MemorySink], tmp_path: Path
) -> None:
    client, sink = recording
    data = bytes(range(256)) * 64
    (tmp_path / "file.bin").write_bytes(data)
    app = flask_app()

    @app.get("/file")
    def file() -> Any:
        return send_file(tmp_path / "file.bin", mimetype="application/octet-stream")

    middleware = WSGIMiddleware(app, client=client)
    results: list[Any] = []

    def outer(environ: dict[str, Any], start_response: Any) -> Any:
        result = middleware(environ, start_response)
        results.append(result)
        return result

    server = OneShotServer(outer)
    try:
        started = time.perf_counter()
        streamed = server.get("/stream")
        elapsed_ms = (time.perf_counter() - started) * 1000
        downloaded = server.get("/file")
    finally:
        server.close()

    assert streamed.content == b"".join(STREAM_CHUNKS)
    assert downloaded.content == data
    assert type(results[1]) is wsgiref.util.FileWrapper  # left for the server to offload
    stream_event, file_event = requests_of(client, sink)
    assert stream_event.properties["response_bytes"] == len(streamed.content)
    pauses_ms = (len(STREAM_CHUNKS) - 1) * STREAM_PAUSE * 1000
    assert pauses_ms - 5 <= stream_event.properties["duration_ms"] <= elapsed_ms
    assert (file_event.properties["status_code"], file_event.properties["response_bytes"]) == (
        200,
        len(data),
    )
