"""The wire contract: what actually reaches PostHog's capture endpoint.

Real apps (Starlette, Flask), the real ``posthog`` client, no mocks: requests go through
apiusage's middleware, the client flushes, and the tests read the JSON that arrived at a
local stand-in for ``POST /batch/`` (:mod:`tests.support.capture_server`).
"""

from __future__ import annotations

import base64
import json
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import flask
import httpx
import posthog
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import apiusage
import apiusage.registry
from tests.support.capture_server import CaptureServer

API_KEY = "phc_test"
IDENTITY_SECRET = "x" * 32
FLUSH_INTERVAL = 60.0

Event = dict[str, Any]


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as capture:
        yield capture


@pytest.fixture
def make_client(server: CaptureServer) -> Iterator[Callable[..., apiusage.UsageClient]]:
    """UsageClients delivering to the capture server; closed (before it stops) after the test."""
    clients: list[apiusage.UsageClient] = []

    def make(**settings: Any) -> apiusage.UsageClient:
        if "posthog_client" not in settings:
            settings.setdefault("posthog_api_key", API_KEY)
            settings.setdefault("posthog_host", server.url)
        settings.setdefault("identity_secret", IDENTITY_SECRET)
        # No timer-driven sends: each flush() delivers everything in one batch.
        settings.setdefault("flush_interval", FLUSH_INTERVAL)
        client = apiusage.UsageClient(**settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=5)


# --------------------------------------------------------------------------- the apps
async def _user(request: Request) -> JSONResponse:
    """Names the caller from query parameters, as a login handler would."""
    query = request.query_params
    person = {"email": query["email"]} if "email" in query else {}
    organisation_properties = {"plan": query["plan"]} if "plan" in query else None
    apiusage.identify(
        query["user"],
        organisation=query.get("org"),
        organisation_properties=organisation_properties,
        **person,
    )
    if "journey" in query:
        apiusage.track(query["journey"], {"source": "wire-test"}, step=2)
    return JSONResponse({"user_id": request.path_params["user_id"]})


async def _plain(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _boom(request: Request) -> JSONResponse:
    raise RuntimeError("handler failed")


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/users/{user_id}", _user),
            Route("/v1/items/{item_id:int}", _plain, methods=["GET", "POST"]),
            Route("/plain", _plain),
            Route("/boom", _boom),
        ]
    )


async def _send(app: Any, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    responses = []
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        for request in requests:
            request = dict(request)
            responses.append(await http.request(request.pop("method", "GET"), **request))
    return responses


async def _flush(client: apiusage.UsageClient) -> None:
    # flush() blocks: never on the event loop thread.
    assert await anyio.to_thread.run_sync(client.flush, 10.0)


def _named(events: list[Event], name: str) -> list[Event]:
    return [event for event in events if event["event"] == name]


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _timestamp(event: Event) -> datetime:
    parsed = datetime.fromisoformat(event["timestamp"])
    assert parsed.utcoffset() == timedelta(0), event["timestamp"]
    return parsed


# ------------------------------------------------------------------------------ tests
@pytest.mark.anyio
async def test_api_request_and_journey_event_reach_posthog(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    app = apiusage.ASGIMiddleware(starlette_app(), client=client)
    before = datetime.now(timezone.utc)
    [response] = await _send(
        app,
        [
            {
                "url": "/v1/users/42",
                "params": {
                    "user": "user-1",
                    "org": "acme",
                    "plan": "pro",
                    "email": "ada@acme.test",
                    "journey": "project_created",
                },
                "headers": {"user-agent": "python-requests/2.32.3"},
            }
        ],
    )
    after = datetime.now(timezone.utc)
    assert response.status_code == 200
    await _flush(client)
    events = server.wait_for(3)

    assert [event["event"] for event in events] == [
        "$groupidentify",
        "api_request",
        "project_created",
    ]
    [request_event] = _named(events, "api_request")
    properties = request_event["properties"]
    assert request_event["distinct_id"] == "user-1"
    assert {
        key: properties[key]
        for key in (
            "method",
            "route",
            "route_template",
            "status_code",
            "status_class",
            "api_version",
            "api_version_source",
            "auth_method",
            "auth_location",
            "client_library",
            "client_library_version",
            "exception",
            "client_disconnected",
            "transport",
            "schema_version",
            "apiusage_version",
            "organisation",
            "response_bytes",
        )
    } == {
        "method": "GET",
        "route": "/v1/users/{user_id}",
        "route_template": "/v1/users/{user_id}",
        "status_code": 200,
        "status_class": "2xx",
        "api_version": "v1",
        "api_version_source": "path",
        "auth_method": "none",
        "auth_location": None,
        "client_library": "python-requests",
        "client_library_version": "2.32",
        "exception": None,
        "client_disconnected": False,
        "transport": "asgi",
        "schema_version": apiusage.SCHEMA_VERSION,
        "apiusage_version": apiusage.__version__,
        "organisation": "acme",
        "response_bytes": len(response.content),
    }
    assert isinstance(properties["duration_ms"], (int, float))
    assert 0 < properties["duration_ms"] < 5_000
    # The event's uuid is the request id: PostHog de-duplicates a replayed event on it.
    assert request_event["uuid"] == properties["request_id"]
    assert str(uuid.UUID(request_event["uuid"])) == request_event["uuid"]
    assert properties["$groups"] == {"organisation": "acme"}
    assert properties["$set"] == {"email": "ada@acme.test"}
    assert "$process_person_profile" not in properties
    assert properties["$lib"] == "apiusage-python"
    assert properties["$lib_version"] == apiusage.__version__
    # What capture() adds for a server-side SDK: no geolocation of our server, the runtime.
    assert properties["$geoip_disable"] is True
    assert properties["$python_version"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert properties["$python_runtime"] == platform.python_implementation()
    # The OS named as the posthog SDK names it, so both kinds of event group together.
    os_info = posthog.utils.get_os_info()  # type: ignore[no-untyped-call]
    assert {key: properties.get(key) for key in ("$os", "$os_version", "$os_distro")} == {
        key: os_info.get(key) or None for key in ("$os", "$os_version", "$os_distro")
    }
    # Timestamps are the request's start, in UTC, in ISO form.
    started = _timestamp(request_event)
    assert before - timedelta(milliseconds=1) <= started <= after + timedelta(milliseconds=1)

    [journey] = _named(events, "project_created")
    journey_properties = journey["properties"]
    assert journey["distinct_id"] == "user-1"
    assert journey_properties["source"] == "wire-test"
    assert journey_properties["step"] == 2
    assert journey_properties["request_id"] == properties["request_id"]
    assert journey_properties["route"] == "/v1/users/{user_id}"
    assert journey_properties["method"] == "GET"
    assert journey_properties["api_version"] == "v1"
    assert journey_properties["$groups"] == {"organisation": "acme"}
    assert journey["uuid"] != request_event["uuid"]
    uuid.UUID(journey["uuid"])
    assert started <= _timestamp(journey) <= after + timedelta(milliseconds=1)

    [group] = _named(events, "$groupidentify")
    assert group["properties"]["$group_type"] == "organisation"
    assert group["properties"]["$group_key"] == "acme"
    assert group["properties"]["$group_set"] == {"plan": "pro"}
    # Attributed to the caller who brought it, so PostHog creates no throwaway person.
    assert group["distinct_id"] == request_event["distinct_id"]
    uuid.UUID(group["uuid"])

    # The envelope: PostHog's v0 batch protocol, gzip-compressed, with our project key.
    [batch] = server.batches()
    assert batch.method == "POST"
    assert batch.headers["content-encoding"] == "gzip"
    assert batch.raw_body[:2] == b"\x1f\x8b"
    assert batch.headers["content-type"] == "application/json"
    assert batch.headers["user-agent"] == f"apiusage-python/{apiusage.__version__}"
    assert batch.payload["api_key"] == API_KEY
    assert batch.payload["historical_migration"] is False
    sent_at = datetime.fromisoformat(batch.payload["sent_at"])
    assert sent_at.utcoffset() == timedelta(0)
    assert sent_at >= started
    assert client.stats.snapshot()["dropped"] == 0


@pytest.mark.anyio
async def test_anonymous_callers_are_personless(server: CaptureServer) -> None:
    app = apiusage.ASGIMiddleware(
        starlette_app(),
        posthog_api_key=API_KEY,
        posthog_host=server.url,
        identity_secret="y" * 32,
        flush_interval=FLUSH_INTERVAL,
    )
    try:
        await _send(
            app,
            [
                {"url": "/plain"},
                {"url": "/plain", "headers": {"cookie": "sessionid=abc"}},
                {"url": "/does-not-exist"},
            ],
        )
        await _flush(app.client)
    finally:
        await anyio.to_thread.run_sync(app.client.close, 5.0)
    events = server.wait_for(3)
    assert [event["event"] for event in events] == ["api_request"] * 3
    for event in events:
        properties = event["properties"]
        assert properties["$process_person_profile"] is False
        assert "$groups" not in properties
        assert "$set" not in properties
        assert properties["organisation"] is None
        # Keyed by the request: no person is ever created for an anonymous caller.
        assert event["distinct_id"] == properties["request_id"] == event["uuid"]
    assert [event["properties"]["auth_method"] for event in events] == ["none", "session", "none"]
    assert [event["properties"]["route"] for event in events] == ["/plain", "/plain", None]
    assert [event["properties"]["status_code"] for event in events] == [200, 200, 404]
    assert len({event["distinct_id"] for event in events}) == 3


@pytest.mark.anyio
async def test_unhandled_exception_is_recorded_as_500(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    [response] = await _send(
        apiusage.ASGIMiddleware(starlette_app(), client=client), [{"url": "/boom"}]
    )
    assert response.status_code == 500
    await _flush(client)
    [event] = server.wait_for(1)
    assert event["properties"]["status_code"] == 500
    assert event["properties"]["status_class"] == "5xx"
    assert event["properties"]["exception"] == "RuntimeError"
    assert event["properties"]["route"] == "/boom"
    assert "handler failed" not in server.batches()[0].text


@pytest.mark.anyio
async def test_group_identify_once_per_organisation_and_person_properties_on_change(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    app = apiusage.ASGIMiddleware(starlette_app(), client=client)
    calls = [
        {"user": "u1", "org": "acme", "plan": "pro", "email": "a@acme.test"},
        {"user": "u1", "org": "acme", "plan": "pro", "email": "a@acme.test"},  # nothing new
        {"user": "u2", "org": "acme", "plan": "enterprise"},  # the organisation changed
        {"user": "u3", "org": "globex"},  # a new organisation, no properties
        {"user": "u1", "org": "acme", "email": "b@acme.test"},  # the person changed
        {"user": "u4"},  # no organisation
    ]
    await _send(app, [{"url": "/v1/users/1", "params": params} for params in calls])
    await _flush(client)
    events = server.wait_for(len(calls) + 3)

    groups = [
        (event["properties"]["$group_key"], event["properties"]["$group_set"])
        for event in _named(events, "$groupidentify")
    ]
    assert groups == [("acme", {"plan": "pro"}), ("acme", {"plan": "enterprise"}), ("globex", {})]

    requests = _named(events, "api_request")
    assert [event["distinct_id"] for event in requests] == ["u1", "u1", "u2", "u3", "u1", "u4"]
    assert [event["properties"].get("$groups") for event in requests] == [
        {"organisation": "acme"},
        {"organisation": "acme"},
        {"organisation": "acme"},
        {"organisation": "globex"},
        {"organisation": "acme"},
        None,
    ]
    assert [event["properties"]["organisation"] for event in requests] == [
        "acme",
        "acme",
        "acme",
        "globex",
        "acme",
        None,
    ]
    assert [event["properties"].get("$set") for event in requests] == [
        {"email": "a@acme.test"},
        None,
        None,
        None,
        {"email": "b@acme.test"},
        None,
    ]
    # Identified callers have person profiles.
    assert all("$process_person_profile" not in event["properties"] for event in requests)
    assert len(events) == len(calls) + 3


@pytest.mark.anyio
async def test_credentials_never_leave_the_process(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    app = apiusage.ASGIMiddleware(starlette_app(), client=client)
    api_key = "xkey-SECRET-1111"
    bearer = "opaque-bearer-SECRET-2222"
    basic_user, basic_password = "alice-SECRET-user", "basic-SECRET-pass-3333"
    basic = base64.b64encode(f"{basic_user}:{basic_password}".encode()).decode()
    cookie = "cookie-SECRET-4444"
    query_key = "query-SECRET-5555"
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    claims = base64.urlsafe_b64encode(b'{"sub":"jwt-SECRET-sub"}').decode().rstrip("=")
    jwt = f"{header}.{claims}.jwt-SECRET-signature-6666"
    path_value = "path-SECRET-7777"
    secrets = [
        api_key,
        bearer,
        basic_user,
        basic_password,
        basic,
        cookie,
        query_key,
        jwt,
        claims,
        "jwt-SECRET",
        path_value,
    ]
    await _send(
        app,
        [
            {"url": "/v1/items/1", "headers": {"x-api-key": api_key}},
            {"url": "/v1/items/1", "headers": {"authorization": f"Bearer {bearer}"}},
            {"url": "/v1/items/1", "headers": {"authorization": f"Basic {basic}"}},
            {"url": "/v1/items/1", "headers": {"cookie": f"sessionid={cookie}; theme=dark"}},
            {"url": "/v1/items/1", "params": {"api_key": query_key}},
            {"url": "/v1/items/1", "params": {"access_token": jwt}},
            {"url": f"/v1/items/{path_value}"},  # no route matches: a 404
            {"method": "POST", "url": "/v1/items/1", "headers": {"x-api-key": api_key}},
        ],
    )
    await _flush(client)
    events = server.wait_for(8)
    requests = _named(events, "api_request")
    assert [
        (event["properties"]["auth_method"], event["properties"]["auth_location"])
        for event in requests
    ] == [
        ("api_key", "header"),
        ("bearer", "header"),
        ("basic", "header"),
        ("session", "cookie"),
        ("api_key", "query"),
        ("jwt", "query"),
        ("none", None),
        ("api_key", "header"),
    ]
    # Stable credentials become a keyed hash: the same key, the same caller.
    ids = [event["distinct_id"] for event in requests]
    assert all(distinct_id.startswith("key_") for distinct_id in ids[:3] + ids[4:5])
    assert ids[0] == ids[7]
    assert len(set(ids[:3] + ids[4:5])) == 4
    # Rotating credentials (sessions, JWTs) give no identity: those events are personless.
    for index in (3, 5, 6):
        assert requests[index]["properties"]["$process_person_profile"] is False
    assert requests[6]["properties"]["route"] is None

    bodies = [request.text for request in server.requests]
    assert bodies
    for secret in secrets:
        for body in bodies:
            assert secret not in body, f"{secret!r} leaked to PostHog"
    assert all(
        secret.encode() not in request.raw_body for request in server.requests for secret in secrets
    )


@pytest.mark.parametrize("install", ["wsgi_middleware", "flask_extension"])
def test_flask_app(server: CaptureServer, install: str) -> None:
    flask_app = flask.Flask("wire_contract")

    @flask_app.post("/orders/<int:order_id>")
    def create_order(order_id: int) -> dict[str, Any]:
        apiusage.identify("buyer-7", organisation="acme", organisation_properties={"plan": "pro"})
        apiusage.track("order_placed", order_id=order_id)
        return {"order_id": order_id}

    settings = {
        "posthog_api_key": API_KEY,
        "posthog_host": server.url,
        "identity_secret": IDENTITY_SECRET,
        "flush_interval": FLUSH_INTERVAL,
    }
    if install == "wsgi_middleware":
        middleware = apiusage.WSGIMiddleware(flask_app.wsgi_app, **settings)
        flask_app.wsgi_app = middleware  # type: ignore[method-assign]
        client = middleware.client
    else:
        from flask_apiusage import ApiUsage

        ApiUsage(flask_app, **settings)
        client = ApiUsage.client_for(flask_app)
    try:
        before = datetime.now(timezone.utc)
        http = flask_app.test_client()
        body = json.dumps({"items": [1, 2, 3]})
        # A real server closes each response; the test client leaves that to the caller,
        # and the middleware finishes a request when its response is closed.
        with http.post(
            "/orders/12",
            data=body,
            headers={"content-type": "application/json", "api-version": "2024-06-01"},
        ) as created:
            created_bytes = len(created.data)
            assert created.status_code == 200
        with http.get("/nothing-here", headers={"x-api-key": "flask-SECRET-key"}) as missing:
            assert missing.status_code == 404
        after = datetime.now(timezone.utc)
        assert client.flush(10)
    finally:
        client.close(timeout=5)
    events = server.wait_for(5 if install == "flask_extension" else 4)
    inventories = _named(events, "api_route_inventory")
    events = [event for event in events if event["event"] != "api_route_inventory"]
    assert [event["event"] for event in events] == [
        "$groupidentify",
        "api_request",
        "order_placed",
        "api_request",
    ]
    if install == "flask_extension":  # the extension lists the app's routes
        [inventory] = inventories
        assert inventory["distinct_id"] == "apiusage-route-inventory"
        assert uuid.UUID(inventory["uuid"]).version == 5  # from the content: sent once
        assert inventory["properties"]["$process_person_profile"] is False
        assert inventory["properties"]["routes"] == [
            {
                "method": "POST",
                "route": "/orders/{order_id}",
                "route_template": "/orders/<int:order_id>",
                "deprecated": False,
                "operation_id": None,
            }
        ]
        assert inventory["properties"]["route_count"] == 1
        assert inventory["properties"]["schema_version"] == apiusage.SCHEMA_VERSION
    else:  # plain WSGI middleware cannot see Flask's routes
        assert inventories == []
    first, second = _named(events, "api_request")
    assert first["distinct_id"] == "buyer-7"
    assert first["uuid"] == first["properties"]["request_id"]
    assert first["properties"]["$groups"] == {"organisation": "acme"}
    assert {
        key: first["properties"][key]
        for key in (
            "method",
            "status_code",
            "transport",
            "request_bytes",
            "response_bytes",
            "api_version",
            "api_version_source",
            "organisation",
        )
    } == {
        "method": "POST",
        "status_code": 200,
        "transport": "wsgi",
        "request_bytes": len(body),
        "response_bytes": created_bytes,
        # Flask's path has no version segment: the header names it.
        "api_version": "2024-06-01",
        "api_version_source": "header:api-version",
        "organisation": "acme",
    }
    if install == "flask_extension":
        assert first["properties"]["route"] == "/orders/{order_id}"
        assert first["properties"]["route_template"] == "/orders/<int:order_id>"
        assert first["properties"]["framework"] == "flask"
    else:
        # Plain WSGI middleware cannot see Flask's rule, and never reports the raw path.
        assert first["properties"]["route"] is None
    assert before <= _timestamp(first) <= after
    [journey] = _named(events, "order_placed")
    assert journey["properties"]["order_id"] == 12
    assert journey["properties"]["request_id"] == first["uuid"]
    assert journey["distinct_id"] == "buyer-7"
    [group] = _named(events, "$groupidentify")
    assert group["properties"]["$group_set"] == {"plan": "pro"}

    assert second["properties"]["status_code"] == 404
    assert second["properties"]["route"] is None
    assert second["properties"]["auth_method"] == "api_key"
    assert second["distinct_id"].startswith("key_")
    [batch] = server.batches()
    assert batch.headers["content-encoding"] == "gzip"
    assert batch.payload["api_key"] == API_KEY
    assert "flask-SECRET-key" not in batch.text
    assert "nothing-here" not in batch.text


def test_unclosed_test_client_response_does_not_disable_later_requests(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    """A response nobody closes (a test client's habit) must not make later requests in the
    same thread look nested, which would leave them unrecorded."""
    client = make_client()
    flask_app = flask.Flask("unclosed")
    flask_app.add_url_rule("/ping-me", "ping", lambda: "pong")
    flask_app.wsgi_app = apiusage.WSGIMiddleware(flask_app.wsgi_app, client=client)  # type: ignore[method-assign]
    http = flask_app.test_client()
    leaked = http.get("/ping-me")  # never closed: it cannot be recorded
    assert apiusage.context.current_record() is None
    for _ in range(3):
        with http.get("/ping-me") as response:
            assert response.data == b"pong"
    assert client.flush(10)
    events = server.wait_for(3)
    assert [event["event"] for event in events] == ["api_request"] * 3
    leaked.close()


@pytest.mark.anyio
async def test_server_errors_are_retried_until_delivered(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    app = apiusage.ASGIMiddleware(starlette_app(), client=client)
    server.fail_next(1, status=500)
    await _send(app, [{"url": "/plain"}, {"url": "/v1/items/3"}])
    await _flush(client)
    events = server.wait_for(2)
    attempts = server.batches(accepted_only=False)
    assert [attempt.status for attempt in attempts] == [500, 200]
    # The retry replays the same events with the same uuids (PostHog de-duplicates on them).
    assert [item["uuid"] for item in attempts[0].batch] == [event["uuid"] for event in events]
    assert [event["properties"]["route"] for event in events] == ["/plain", "/v1/items/{item_id}"]
    stats = client.stats.snapshot()
    assert stats["dropped"] == 0
    assert stats["events_delivered"] == 2


@pytest.mark.anyio
async def test_rejected_batches_are_dropped_and_counted(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    app = apiusage.ASGIMiddleware(starlette_app(), client=client)
    server.fail_next(1, status=400)
    await _send(app, [{"url": "/plain"}, {"url": "/plain"}, {"url": "/plain"}])
    await _flush(client)
    [rejected] = server.batches(accepted_only=False)
    assert rejected.status == 400
    assert len(rejected.batch) == 3
    # 400 is not retried: the events are gone, and counted as such.
    _wait_until(lambda: client.stats.snapshot()["dropped_delivery_failed"] == 3)
    assert client.stats.snapshot()["dropped"] == 3
    assert server.events() == []

    # Delivery goes on afterwards.
    await _send(app, [{"url": "/v1/items/9"}])
    await _flush(client)
    [event] = server.wait_for(1)
    assert event["properties"]["route"] == "/v1/items/{item_id}"
    assert len(server.batches(accepted_only=False)) == 2
    assert client.stats.snapshot()["dropped_delivery_failed"] == 3


@pytest.mark.anyio
async def test_user_supplied_posthog_client_is_used_and_left_open(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    own = posthog.Posthog(
        "phc_users_own_client", host=server.url, flush_at=50, flush_interval=FLUSH_INTERVAL
    )
    try:
        client = make_client(posthog_client=own)
        await _send(apiusage.ASGIMiddleware(starlette_app(), client=client), [{"url": "/plain"}])
        await _flush(client)
        [event] = server.wait_for(1)
        assert event["event"] == "api_request"
        assert server.batches()[0].payload["api_key"] == "phc_users_own_client"

        # Closing apiusage's client flushes but does not shut down the user's client.
        await anyio.to_thread.run_sync(client.close, 5.0)
        own.capture("still_open", distinct_id="someone")
        await anyio.to_thread.run_sync(own.flush)
        events = server.wait_for(2)
        assert [event["event"] for event in events] == ["api_request", "still_open"]
    finally:
        own.shutdown()


def test_track_and_identify_outside_a_request(
    server: CaptureServer, make_client: Callable[..., apiusage.UsageClient]
) -> None:
    client = make_client()
    # Calls outside a request go to the process's default client: make it this one (an
    # earlier test may have left another as the default), and restore what was there.
    previous = apiusage.registry.default_client
    apiusage.registry.default_client = lambda: client
    try:
        assert apiusage.get_client() is client
        apiusage.track(
            "nightly_export", {"rows": 10}, distinct_id="worker-user", organisation="acme"
        )
        apiusage.identify(
            "worker-user",
            organisation="acme",
            organisation_properties={"plan": "team"},
            name="Worker",
        )
        assert client.flush(10)
    finally:
        apiusage.registry.default_client = previous
    events = server.wait_for(3)
    [journey] = _named(events, "nightly_export")
    assert journey["distinct_id"] == "worker-user"
    assert journey["properties"]["rows"] == 10
    assert journey["properties"]["$groups"] == {"organisation": "acme"}
    assert journey["properties"]["organisation"] == "acme"
    assert "request_id" not in journey["properties"]
    [group] = _named(events, "$groupidentify")
    assert group["properties"]["$group_key"] == "acme"
    assert group["properties"]["$group_set"] == {"plan": "team"}
    [person] = _named(events, "$set")
    assert person["distinct_id"] == "worker-user"
    assert person["properties"]["$set"] == {"name": "Worker"}
    assert person["properties"]["$groups"] == {"organisation": "acme"}
