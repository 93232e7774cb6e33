"""One client per configuration per process, released when no app uses it any more."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import apiusage
import apiusage.registry
from apiusage.sinks.memory import MemorySink
from flask_apiusage import ApiUsage
from tests.support.apps import asgi_client

SECRET = "lifetime-tests-identity-secret"


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _apiusage_threads() -> int:
    return sum(thread.name.startswith("apiusage") for thread in threading.enumerate())


def _settle() -> None:
    """Let clients that earlier tests dropped finish releasing (threads, descriptors)."""
    gc.collect()
    for thread in list(threading.enumerate()):
        if thread.name == "apiusage-release":
            thread.join(10)


def _get(app: Any, path: str = "/") -> str:
    async def get() -> str:
        async with asgi_client(app) as http:
            return (await http.get(path)).text

    return asyncio.run(get())


def _hello_app() -> Starlette:
    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("hello"))])


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
def test_fifty_apps_with_one_configuration_share_one_client(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    first = apiusage.ASGIMiddleware(_hello_app(), store=store, identity_secret=SECRET)
    _get(first)
    _settle()
    descriptors, threads = _open_descriptors(), _apiusage_threads()

    apps = [
        apiusage.ASGIMiddleware(_hello_app(), store=store, identity_secret=SECRET)
        for _ in range(50)
    ]
    for app in apps:
        assert _get(app) == "hello"

    assert {id(app.client) for app in apps} == {id(first.client)}
    assert _open_descriptors() <= descriptors + 2  # no store connection, no thread per app
    assert _apiusage_threads() <= threads
    assert first.client.flush(10)
    rows = sqlite3.connect(store).execute("SELECT count(*) FROM events").fetchone()[0]
    assert rows == 51


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
def test_a_dropped_app_releases_its_client_and_still_delivers(tmp_path: Path) -> None:
    _settle()
    descriptors, threads = _open_descriptors(), _apiusage_threads()
    stores = [tmp_path / f"events-{n}.sqlite3" for n in range(20)]
    for store in stores:  # a configuration each: a client each, dropped with its app
        app = apiusage.ASGIMiddleware(_hello_app(), store=store, identity_secret=SECRET)
        client_ref = weakref.ref(app.client)
        _get(app)
        del app
        assert client_ref() is None, "nothing may keep a client alive but its apps"
    _settle()
    # Every event recorded before its app was dropped reached its store ...
    for store in stores:
        assert sqlite3.connect(store).execute("SELECT count(*) FROM events").fetchone()[0] == 1
    gc.collect()
    # ... and no client left a connection or a thread behind.
    assert _open_descriptors() <= descriptors + 2
    deadline = threading.Event()
    for _ in range(100):
        if _apiusage_threads() <= threads:
            break
        deadline.wait(0.05)
    assert _apiusage_threads() <= threads


def test_a_closed_client_is_not_shared_again(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    first = apiusage.ASGIMiddleware(_hello_app(), store=store, identity_secret=SECRET)
    first.client.close(timeout=5)
    second = apiusage.ASGIMiddleware(_hello_app(), store=store, identity_secret=SECRET)
    assert second.client is not first.client
    _get(second)
    assert second.client.flush(10)
    assert second.client.stats.snapshot()["dropped"] == 0
    second.client.close(timeout=5)


def test_settings_resolvers_and_sinks_make_a_configuration() -> None:
    def caller(view: Any) -> None:
        return None

    sink = MemorySink()
    a = apiusage.ASGIMiddleware(_hello_app(), sink=sink, identify=caller, event_name="call")
    b = apiusage.ASGIMiddleware(_hello_app(), sink=sink, identify=[caller], event_name="call")
    c = apiusage.ASGIMiddleware(_hello_app(), sink=sink, identify=caller, event_name="other")
    d = apiusage.ASGIMiddleware(_hello_app(), sink=MemorySink(), identify=caller, event_name="call")
    assert a.client is b.client
    assert c.client is not a.client
    assert d.client is not a.client
    for app in (a, c, d):
        app.client.close(timeout=5)


def test_the_default_client_is_the_first_live_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apiusage.registry, "_serving", [])
    with pytest.raises(RuntimeError, match="not set up"):
        apiusage.get_client()
    first = apiusage.ASGIMiddleware(_hello_app(), sink=MemorySink())
    second = apiusage.ASGIMiddleware(_hello_app(), sink=MemorySink())
    assert apiusage.get_client() is first.client
    first.client.close(timeout=5)
    assert apiusage.get_client() is second.client
    second_client = second.client
    del first, second
    second_client.close(timeout=5)
    with pytest.raises(RuntimeError, match="not set up"):
        apiusage.get_client()


def test_a_client_built_directly_is_not_the_default_until_it_serves_an_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apiusage.registry, "_serving", [])
    client = apiusage.UsageClient(sink=MemorySink())
    assert apiusage.registry.default_client() is None
    app = apiusage.ASGIMiddleware(_hello_app(), client=client)
    assert apiusage.get_client() is app.client is client
    client.close(timeout=5)


def test_a_dropped_flask_app_is_freed_at_once() -> None:
    sink = MemorySink()
    gc.disable()  # freed by reference counting, not by the cycle collector
    try:
        app = Flask("dropped")
        app.route("/")(lambda: "hello")
        ApiUsage(app, sink=sink)
        assert app.test_client().get("/").text == "hello"
        app_ref = weakref.ref(app)
        del app
        assert app_ref() is None
    finally:
        gc.enable()


def test_flask_app_wsgi_app_kept_without_the_app_fails_clearly() -> None:
    app = Flask("kept-wsgi-app")
    ApiUsage(app, sink=MemorySink())
    wsgi_app = app.wsgi_app
    del app
    gc.collect()
    with pytest.raises(RuntimeError, match="keep a reference to the app itself"):
        wsgi_app({"PATH_INFO": "/", "REQUEST_METHOD": "GET"}, lambda *args: None)


def test_each_lifespan_of_an_app_gets_its_own_shutdown_budget(tmp_path: Path) -> None:
    """A stop shares one ``shutdown_timeout`` across its steps, but an app that starts
    again in the same process (test clients run a lifespan per test) starts afresh."""
    import warnings

    from apiusage import lifetime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Starlette 1.x wants httpx2
        from starlette.testclient import TestClient

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    lifetime.stop_deadline(0.0)  # an earlier stop in this process used its budget up
    sink = MemorySink()
    client = apiusage.UsageClient(sink=sink, flush_interval=3600, identity_secret="x" * 32)
    app = apiusage.ASGIMiddleware(Starlette(routes=[Route("/hello", hello)]), client=client)
    try:
        for _ in range(2):
            with TestClient(app) as http:  # lifespan startup … shutdown
                assert http.get("/hello").status_code == 200
        assert len(sink.named("api_request")) == 2  # each delivered at its shutdown
        assert client.stats.snapshot()["dropped"] == 0
    finally:
        client.close(timeout=5)
        lifetime.started()
