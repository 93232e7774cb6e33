"""The ASGI middleware around real Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import apiusage
import apiusage.registry
from apiusage import ASGIMiddleware, Identity, RequestView, ResolverChain
from apiusage.events import Event
from apiusage.sinks.memory import MemorySink
from tests.conftest import MakeClient
from tests.support.apps import (
    BASIC,
    JWT,
    STREAM_CHUNKS,
    STREAM_PAUSE,
    AppError,
    asgi_client,
    fastapi_app,
    starlette_app,
)

pytestmark = pytest.mark.anyio


def requests_of(client: apiusage.UsageClient, sink: MemorySink) -> list[Event]:
    assert client.flush(timeout=10)
    return sink.named("api_request")


def mounted_fastapi() -> Starlette:
    return Starlette(routes=[Mount("/api", app=fastapi_app())])


APPS: dict[str, Callable[[], Any]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "mounted-fastapi": mounted_fastapi,
}

REQUEST_CASES = [
    # (app, method, path, headers, route, status, api_version, auth_method)
    ("starlette", "GET", "/", {}, "/", 200, None, "none"),
    ("starlette", "GET", "/v1/items/42", {}, "/v1/items/{item_id}", 200, "v1", "none"),
    (
        "starlette",
        "GET",
        "/api/v2/users/7",
        {"Authorization": f"Bearer {JWT}"},
        "/api/v2/users/{user_id}",
        200,
        "v2",
        "jwt",
    ),
    (
        "starlette",
        "GET",
        "/2024-06-01/orders",
        {"X-API-Key": "k-1"},
        "/2024-06-01/orders",
        200,
        "2024-06-01",
        "api_key",
    ),
    (
        "starlette",
        "GET",
        "/things",
        {"API-Version": "3", "Authorization": BASIC},
        "/things",
        200,
        "v3",
        "basic",
    ),
    (
        "starlette",
        "GET",
        "/things",
        {"Accept": "application/vnd.acme.v2+json", "Authorization": "Token t"},
        "/things",
        200,
        "v2",
        "api_key",
    ),
    (
        "starlette",
        "GET",
        "/things?api-version=2024-01-01",
        {"Cookie": "sessionid=s"},
        "/things",
        200,
        "2024-01-01",
        "session",
    ),
    (
        "starlette",
        "GET",
        "/things",
        {"X-API-Version": "soon"},
        "/things",
        200,
        "unparseable",
        "none",
    ),
    (
        "starlette",
        "GET",
        "/things",
        {"Authorization": "Bearer opaque"},
        "/things",
        200,
        None,
        "bearer",
    ),
    ("starlette", "GET", "/admin/users/5", {}, "/admin/users/{user_id}", 200, None, "none"),
    (
        "starlette",
        "GET",
        "/admin/teams/1/members/2",
        {},
        "/admin/teams/{team_id}/members/{member_id}",
        200,
        None,
        "none",
    ),
    ("starlette", "POST", "/v1/items/3", {}, "/v1/items/{item_id}", 405, "v1", "none"),
    ("starlette", "GET", "/nope/secret-token-123", {}, None, 404, None, "none"),
    ("starlette", "GET", "/admin/nope/secret-token-123", {}, None, 404, None, "none"),
    ("fastapi", "GET", "/v2/widgets/9", {}, "/v2/widgets/{widget_id}", 200, "v2", "none"),
    (
        "fastapi",
        "GET",
        "/v2/widgets/not-a-number",
        {},
        "/v2/widgets/{widget_id}",
        422,
        "v2",
        "none",
    ),
    ("fastapi", "GET", "/users/abc", {"X-API-Key": "k"}, "/users/{user_id}", 200, None, "api_key"),
    ("fastapi", "GET", "/missing/secret-token-123", {}, None, 404, None, "none"),
    (
        "mounted-fastapi",
        "GET",
        "/api/v2/widgets/5",
        {},
        "/api/v2/widgets/{widget_id}",
        200,
        "v2",
        "none",
    ),
    ("mounted-fastapi", "GET", "/api/users/x", {}, "/api/users/{user_id}", 200, None, "none"),
    ("mounted-fastapi", "GET", "/api/missing/secret-token-123", {}, None, 404, None, "none"),
]


@pytest.mark.parametrize(
    ("app_name", "method", "path", "headers", "route", "status", "api_version", "auth_method"),
    REQUEST_CASES,
    ids=[f"{case[0]}:{case[1]} {case[2]}" for case in REQUEST_CASES],
)
async def test_request_is_recorded(
    recording: tuple[apiusage.UsageClient, MemorySink],
    app_name: str,
    method: str,
    path: str,
    headers: dict[str, str],
    route: str | None,
    status: int,
    api_version: str | None,
    auth_method: str,
) -> None:
    client, sink = recording
    async with asgi_client(ASGIMiddleware(APPS[app_name](), client=client)) as http:
        response = await http.request(method, path, headers=headers)
    assert response.status_code == status

    [event] = requests_of(client, sink)
    properties = event.properties
    assert properties["method"] == method
    assert properties["route"] == route
    assert properties["status_code"] == status
    assert properties["status_class"] == f"{status // 100}xx"
    assert properties["api_version"] == api_version
    assert properties["auth_method"] == auth_method
    assert properties["transport"] == "asgi"
    assert properties["response_bytes"] == len(response.content)
    assert properties["exception"] is None
    assert properties["duration_ms"] > 0
    assert properties["request_id"] == event.uuid
    assert properties["client_library"] == "python-httpx"
    # The raw path (ids, secrets) never reaches the event, for matched or unmatched routes.
    assert "secret-token-123" not in json.dumps(properties)


async def test_streaming_response_is_timed_to_its_last_chunk_and_untouched(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    async with asgi_client(starlette_app()) as http:
        bare = await http.get("/stream")
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        wrapped = await http.get("/stream")

    expected = b"".join(STREAM_CHUNKS)
    assert bare.content == expected
    assert wrapped.content == bare.content
    assert wrapped.status_code == bare.status_code == 200
    assert wrapped.headers.multi_items() == bare.headers.multi_items()

    [event] = requests_of(client, sink)
    assert event.properties["response_bytes"] == len(expected)
    pauses_ms = (len(STREAM_CHUNKS) - 1) * STREAM_PAUSE * 1000
    assert event.properties["duration_ms"] >= pauses_ms - 5


async def test_timing_stops_at_the_last_body_message(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    """Duration covers every chunk, but not work the app does after the last byte."""
    client, sink = recording
    sent: list[tuple[float, dict[str, Any]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a" * 10, b"b" * 20):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(STREAM_PAUSE)
        await send({"type": "http.response.body", "body": b"c" * 30, "more_body": False})
        await asyncio.sleep(0.2)  # background work after the response is complete

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append((time.perf_counter(), message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/raw",
        "raw_path": b"/raw",
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    started = time.perf_counter()
    await ASGIMiddleware(app, client=client)(scope, receive, send)

    assert [message["type"] for _, message in sent] == ["http.response.start"] + [
        "http.response.body"
    ] * 3
    last_byte_ms = (sent[-1][0] - started) * 1000
    [event] = requests_of(client, sink)
    assert event.properties["response_bytes"] == 60
    assert event.properties["status_code"] == 200
    assert event.properties["route"] is None
    assert 2 * STREAM_PAUSE * 1000 - 5 <= event.properties["duration_ms"] <= last_byte_ms + 50
    assert event.properties["duration_ms"] < 200


@pytest.mark.parametrize(
    ("app_name", "path", "route"), [("starlette", "/boom", "/boom"), ("fastapi", "/fail", "/fail")]
)
async def test_app_exception_propagates_unchanged_and_500_is_recorded(
    recording: tuple[apiusage.UsageClient, MemorySink], app_name: str, path: str, route: str
) -> None:
    client, sink = recording
    async with asgi_client(APPS[app_name]()) as http:
        with pytest.raises(AppError) as bare:
            await http.get(path)
    async with asgi_client(ASGIMiddleware(APPS[app_name](), client=client)) as http:
        with pytest.raises(AppError) as wrapped:
            await http.get(path)
    assert type(wrapped.value) is type(bare.value) is AppError
    assert str(wrapped.value) == str(bare.value)

    [event] = requests_of(client, sink)
    assert event.properties["status_code"] == 500
    assert event.properties["exception"] == "tests.support.apps.AppError"
    assert event.properties["route"] == route


async def test_exception_without_any_response_records_500(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise KeyError("no response at all")

    async with asgi_client(ASGIMiddleware(app, client=client)) as http:
        with pytest.raises(KeyError, match="no response at all"):
            await http.get("/anything")
    [event] = requests_of(client, sink)
    assert (event.properties["status_code"], event.properties["exception"]) == (500, "KeyError")


async def test_exception_after_the_response_started(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        with pytest.raises(Exception) as raised:  # noqa: PT011 - checked below
            await http.get("/boom-after-start")
    # Starlette < 0.37 raises it inside an anyio exception group, with or without apiusage.
    error = raised.value
    while isinstance(getattr(error, "exceptions", None), tuple):  # an exception group
        (error,) = error.exceptions  # type: ignore[attr-defined]
    assert isinstance(error, AppError)
    assert str(error) == "failed while streaming"
    [event] = requests_of(client, sink)
    # The status line already went out as 200; the failure is recorded beside it.
    assert event.properties["status_code"] == 200
    assert event.properties["exception"] == "tests.support.apps.AppError"
    assert event.properties["response_bytes"] == len(b"first chunk")
    assert event.properties["route"] == "/boom-after-start"


# -------------------------------------------------------------------------- identity
async def test_failing_resolver_never_fails_the_request(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(view: RequestView) -> Identity | None:
        raise RuntimeError("resolver exploded")

    client, sink = make_client(identify=[broken, lambda view: "fallback-user"])
    caplog.set_level(logging.ERROR, logger="apiusage")
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        responses = [await http.get(f"/v1/items/{n}") for n in range(5)]
    assert [response.status_code for response in responses] == [200] * 5

    events = requests_of(client, sink)
    assert [event.distinct_id for event in events] == ["fallback-user"] * 5
    assert client.stats.snapshot()["resolver_errors"] == 5
    logged = [record for record in caplog.records if "resolver exploded" in record.getMessage()]
    assert len(logged) == 1
    assert "identity resolver" in logged[0].getMessage()


async def test_async_resolver(make_client: MakeClient) -> None:
    seen: list[tuple[str | None, int | None]] = []

    async def resolve(view: RequestView) -> Identity:
        await asyncio.sleep(0)
        seen.append((view.route, view.status))  # runs after the response
        return Identity(f"async-{view.headers['x-user']}", organisation="acme")

    client, sink = make_client(identify=resolve)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/v1/items/1", headers={"X-User": "ann"})
    [event] = requests_of(client, sink)
    assert event.distinct_id == "async-ann"
    assert event.groups == {"organisation": "acme"}
    assert event.properties["organisation"] == "acme"
    assert seen == [("/v1/items/{item_id}", 200)]


async def test_resolver_chain_first_identity_wins(make_client: MakeClient) -> None:
    calls: list[str] = []

    def nothing(view: RequestView) -> None:
        calls.append("nothing")

    async def second(view: RequestView) -> str:
        calls.append("second")
        return "second-user"

    def third(view: RequestView) -> str:
        calls.append("third")
        return "third-user"

    client, sink = make_client(identify=[nothing, second, third])
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/things")
    [event] = requests_of(client, sink)
    assert event.distinct_id == "second-user"
    assert calls == ["nothing", "second"]

    chain = ResolverChain([lambda view: None, lambda view: Identity("chained", organisation="o")])
    client2, sink2 = make_client(identify=chain)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client2)) as http:
        await http.get("/things")
    [event] = requests_of(client2, sink2)
    assert (event.distinct_id, event.groups) == ("chained", {"organisation": "o"})


async def test_state_user_is_used_when_resolvers_find_nothing(make_client: MakeClient) -> None:
    client, sink = make_client(identify=lambda view: None)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/login?user=u-7&org=org-3")
        await http.get("/login")
    events = requests_of(client, sink)
    assert (events[0].distinct_id, events[0].groups) == ("u-7", {"organisation": "org-3"})
    assert events[0].personless is False
    # No user: an anonymous, personless event keyed by the request.
    assert events[1].personless is True
    assert events[1].distinct_id == events[1].uuid


async def test_identify_in_handler_overrides_resolvers(make_client: MakeClient) -> None:
    calls: list[str] = []

    def resolver(view: RequestView) -> str:
        calls.append(view.path)
        return "resolver-user"

    client, sink = make_client(identify=resolver)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/identify?user=alice&org=acme&plan=pro")
        await http.get("/things")
    assert client.flush()
    api_requests = sink.named("api_request")
    assert [event.distinct_id for event in api_requests] == ["alice", "resolver-user"]
    assert api_requests[0].groups == {"organisation": "acme"}
    assert api_requests[0].person_properties == {"email": "alice@example.com"}
    [signed_in] = sink.named("signed_in")
    assert signed_in.distinct_id == "alice"
    assert signed_in.properties["request_id"] == api_requests[0].uuid
    assert calls == ["/things"]  # never called for the identified request


# ----------------------------------------------------------------------------- track
async def test_track_in_async_endpoint_inherits_caller_and_request(make_client: MakeClient) -> None:
    client, sink = make_client(caller_header="X-Caller")
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/track?n=1", headers={"X-Caller": "carol", "API-Version": "2"})
    assert client.flush()
    [request] = sink.named("api_request")
    [tracked] = sink.named("report_viewed")
    assert request.distinct_id == tracked.distinct_id == "carol"
    assert tracked.properties["request_id"] == request.uuid == request.properties["request_id"]
    assert tracked.properties["route"] == "/track"
    assert tracked.properties["api_version"] == "v2"
    assert tracked.properties["n"] == "1"
    assert tracked.uuid != request.uuid
    assert client.stats.snapshot()["journey_events_recorded"] == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_track_in_fastapi_endpoint_inherits_caller(
    make_client: MakeClient, kind: str
) -> None:
    client, sink = make_client(caller_header="X-Caller")
    async with asgi_client(ASGIMiddleware(fastapi_app(), client=client)) as http:
        response = await http.post(f"/v2/widgets/5/{kind}-track", headers={"X-Caller": "dave"})
    assert response.status_code == 200
    assert client.flush()
    [request] = sink.named("api_request")
    [built] = sink.named("widget_built")
    assert request.distinct_id == built.distinct_id == "dave"
    assert response.json()["request_id"] == request.uuid == built.properties["request_id"]
    assert built.properties["route"] == f"/v2/widgets/{{widget_id}}/{kind}-track"
    assert built.properties["widget_id"] == 5


async def test_track_outside_a_request(
    recording: tuple[apiusage.UsageClient, MemorySink],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, sink = recording
    monkeypatch.setattr(apiusage.registry, "default_client", lambda: client)
    # No caller: never raised into the app, but said clearly and counted.
    apiusage.track("nightly_export")
    apiusage.track("nightly_export")
    [warning] = [r for r in caplog.records if "nightly_export" in r.getMessage()]
    assert "outside a request" in warning.getMessage()
    assert "distinct_id=" in warning.getMessage()
    assert client.stats.snapshot()["calls_rejected"] == 2

    apiusage.track("nightly_export", {"rows": 10}, distinct_id="user-9", organisation="acme")
    assert client.flush()
    [event] = sink.events
    assert (event.name, event.distinct_id, event.groups) == (
        "nightly_export",
        "user-9",
        {"organisation": "acme"},
    )
    assert event.properties["rows"] == 10
    assert event.properties["organisation"] == "acme"


async def test_concurrent_requests_never_cross_talk(make_client: MakeClient) -> None:
    async def resolve(view: RequestView) -> Identity:
        caller = view.headers["x-caller"]
        await asyncio.sleep(0)
        return Identity(caller, organisation="org-" + caller.rsplit("-", 1)[1])

    client, sink = make_client(identify=resolve)
    count = 300
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        responses = await asyncio.gather(
            *(http.get(f"/track?n={n}", headers={"X-Caller": f"caller-{n}"}) for n in range(count))
        )
    assert all(response.status_code == 200 for response in responses)
    assert client.flush(timeout=20)

    requests = {event.uuid: event for event in sink.named("api_request")}
    tracked = sink.named("report_viewed")
    assert len(requests) == len(tracked) == count
    assert {event.distinct_id for event in requests.values()} == {
        f"caller-{n}" for n in range(count)
    }
    for event in tracked:
        n = event.properties["n"]
        assert event.distinct_id == f"caller-{n}"
        assert event.groups == {"organisation": f"org-{n}"}
        parent = requests[event.properties["request_id"]]
        assert parent.distinct_id == f"caller-{n}"
    assert len({event.properties["request_id"] for event in tracked}) == count


# -------------------------------------------------------------- other scopes, wrapping
async def test_websocket_and_lifespan_pass_through(make_client: MakeClient) -> None:
    # A long flush interval: only the lifespan shutdown's flush can deliver in time.
    client, sink = make_client(flush_interval=600)
    lifespan_log: list[str] = []
    app = ASGIMiddleware(starlette_app(lifespan_log), client=client)
    with warnings.catch_warnings():
        # Starlette 1.x prefers httpx2 for its TestClient and warns on import with httpx.
        warnings.simplefilter("ignore", UserWarning)  # Starlette 1.x wants httpx2
        from starlette.testclient import TestClient
    with TestClient(app) as test_client:
        assert lifespan_log == ["startup"]
        with test_client.websocket_connect("/ws") as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "echo:hello"
            websocket.send_text("again")
            assert websocket.receive_text() == "echo:again"
            websocket.send_text("bye")
        assert test_client.get("/v1/items/1").status_code == 200
        assert sink.events == []  # nothing delivered yet
    assert lifespan_log == ["startup", "shutdown"]
    # Delivered by the lifespan shutdown's flush; the websocket was not recorded.
    assert [event.properties["route"] for event in sink.events] == ["/v1/items/{item_id}"]


async def test_double_instrumentation_records_once(make_client: MakeClient) -> None:
    client, sink = make_client()
    other, other_sink = make_client()
    same = ASGIMiddleware(ASGIMiddleware(starlette_app(), client=client), client=client)
    nested = ASGIMiddleware(ASGIMiddleware(starlette_app(), client=other), client=client)
    for app in (same, nested):
        async with asgi_client(app) as http:
            assert (await http.get("/v1/items/1")).status_code == 200
            assert (await http.get("/track?n=1", headers={"X-Caller": "c"})).status_code == 200
    assert client.flush()
    assert other.flush()
    assert len(sink.named("api_request")) == 4
    assert len(sink.named("report_viewed")) == 2
    assert other_sink.events == []
    assert client.stats.snapshot()["requests_recorded"] == 4


@pytest.mark.parametrize(
    ("settings", "excluded", "recorded"),
    [
        ({}, ["/health", "/health/", "/metrics"], ["/internal/status", "/things"]),
        (
            {"exclude_paths": ["/internal/", "/things"]},
            ["/internal/status", "/things", "/health"],  # names still apply
            ["/metrics"],
        ),
        (
            {"exclude_paths": ["/internal/", "/things"], "exclude_path_names": []},
            ["/internal/status", "/things"],
            ["/health", "/metrics"],
        ),
    ],
)
async def test_excluded_paths_record_nothing(
    make_client: MakeClient, settings: dict[str, Any], excluded: list[str], recorded: list[str]
) -> None:
    client, sink = make_client(**settings)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        for path in excluded + recorded:
            response = await http.get(path, follow_redirects=True)
            assert response.status_code == 200, path
    events = requests_of(client, sink)
    assert sorted(event.properties["route"] for event in events) == sorted(recorded)
    assert client.stats.snapshot()["requests_recorded"] == len(recorded)


async def test_sample_rate_zero_keeps_journey_events(make_client: MakeClient) -> None:
    client, sink = make_client(sample_rate=0, caller_header="x-caller")
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        for n in range(5):
            await http.get(f"/track?n={n}", headers={"X-Caller": "erin"})
    assert client.flush()
    assert sink.named("api_request") == []
    tracked = sink.named("report_viewed")
    assert [event.properties["n"] for event in tracked] == ["0", "1", "2", "3", "4"]
    assert {event.distinct_id for event in tracked} == {"erin"}
    assert all(event.properties["route"] == "/track" for event in tracked)
    stats = client.stats.snapshot()
    assert (stats["sampled_out"], stats["dropped"]) == (5, 0)


async def test_route_sample_rates(make_client: MakeClient) -> None:
    client, sink = make_client(route_sample_rates={"/v1/items/{item_id}": 0.0})
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        for n in range(3):
            await http.get(f"/v1/items/{n}")
            await http.get("/things")
    assert [event.properties["route"] for event in requests_of(client, sink)] == ["/things"] * 3

    client2, sink2 = make_client(sample_rate=0.0, route_sample_rates={"/things": 1.0})
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client2)) as http:
        await http.get("/v1/items/1")
        await http.get("/things")
    assert [event.properties["route"] for event in requests_of(client2, sink2)] == ["/things"]


async def test_disabled_passes_through(make_client: MakeClient) -> None:
    client, sink = make_client(enabled=False)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        response = await http.get("/v1/items/1")
        with pytest.raises(AppError):
            await http.get("/boom")
    assert response.json() == {"params": {"item_id": "1"}}
    assert requests_of(client, sink) == []
    assert client.stats.snapshot()["requests_recorded"] == 0


async def test_request_bytes_of_a_post_body(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording

    async def chunked_body() -> Any:
        for _ in range(4):
            yield b"x" * 1000

    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        plain = await http.post("/echo", content=b"y" * 1234)
        chunked = await http.post("/echo", content=chunked_body())
    assert plain.json() == {"received": 1234}
    assert chunked.json() == {"received": 4000}
    events = requests_of(client, sink)
    assert [event.properties["request_bytes"] for event in events] == [1234, 4000]
    assert [event.properties["status_code"] for event in events] == [201, 201]
    assert [event.properties["response_bytes"] for event in events] == [
        len(plain.content),
        len(chunked.content),
    ]


@pytest.mark.parametrize("settings", [{"enabled": False}, {"exclude_paths": ["/track"]}])
async def test_track_and_identify_are_ignored_where_nothing_is_recorded(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """Excluded paths and the kill switch: handlers calling track()/identify() still work."""
    client, sink = make_client(**settings)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        response = await http.get("/track?n=1", headers={"X-Caller": "caller-1"})
    assert response.status_code == 200
    assert client.flush()
    assert sink.events == []
    assert client.stats.snapshot()["calls_rejected"] == 0


async def test_annotate_hands_over_what_only_the_framework_knows(make_client: MakeClient) -> None:
    """apiusage.annotate(): the glue for frameworks without an adapter."""

    class FrameworkError(Exception):
        pass

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        apiusage.annotate(route="/v1/orders/{order_id}")
        try:
            raise FrameworkError("turned into a 500 by the framework")
        except FrameworkError as exc:
            apiusage.annotate(exception=exc)
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"oops"})

    client, sink = make_client()
    async with asgi_client(ASGIMiddleware(app, client=client)) as http:
        assert (await http.get("/v1/orders/7")).status_code == 500
    apiusage.annotate(route="/ignored")  # outside a request: nothing happens
    [event] = requests_of(client, sink)
    assert event.properties["route"] == "/v1/orders/{order_id}"
    assert event.properties["exception"].endswith(
        "test_annotate_hands_over_what_only_the_framework_knows.<locals>.FrameworkError"
    )
    assert event.properties["status_code"] == 500
