"""Each framework's example app (docs/examples/) under a real server, end to end.

One test, run once per server configuration: the server (uvicorn or gunicorn, this
interpreter) serves the example module as its docstring says to, configured only through
the environment and pointed at a local PostHog capture endpoint, with a flush interval of
a minute. The test sends real HTTP requests (known callers on v1 and v2, a project that
``track()``s, a sign-up that ``identify()``s a new organisation, a streamed response, an
anonymous caller, a 404, the health check), sends SIGTERM, waits for the exit, and then
compares what PostHog received with what was sent: every ``api_request`` (by method, route
template, status and caller), the journey events, the ``$groupidentify`` calls — nothing
missing, nothing extra. Nothing can arrive before SIGTERM, so this is also the shutdown
path of each server: ASGI lifespan shutdown (or, for an app without lifespan, apiusage's
SIGTERM handler) under uvicorn, ``atexit`` in each gunicorn worker.
"""

from __future__ import annotations

import secrets
import signal
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.capture_server import CaptureServer
from tests.support.servers import REPO_ROOT, Server, free_port, server_environment

pytestmark = pytest.mark.process

EXAMPLES = REPO_ROOT / "docs" / "examples"
API_KEY = "phc_e2e_test"
USER_AGENT = "acme-sdk/2.1.0"
STREAM_BODY = b"chunk 0\nchunk 1\nchunk 2\n"
STREAM_PAUSES_MS = 2 * 50  # the examples pause STREAM_PAUSE (0.05 s) between the 3 chunks

ALICE = ("usr_alice", "org_acme")
BOB = ("usr_bob", "org_globex")
KEYS = {ALICE: "key-alice", BOB: "key-bob"}  # the X-API-Keys the examples know

# The expected ``route``: every framework's template in OpenAPI's syntax (the framework's
# own, ``<int:item_id>`` or ``{item_id:int}``, is in ``route_template``); the other routes
# have no parameters.
BRACES = {"item_v1": "/v1/items/{item_id}", "item_v2": "/v2/items/{item_id}"}


@dataclass(frozen=True)
class Setup:
    """One server configuration: which server runs which example entry point."""

    framework: str
    transport: str  # "asgi" (uvicorn) or "wsgi" (gunicorn)
    target: str  # module:attribute, or module:factory (uvicorn --factory) / module:factory()
    templates: Mapping[str, str]
    factory: bool = False
    workers: int = 1

    def command(self, port: int) -> list[str]:
        if self.transport == "asgi":
            return [
                *(sys.executable, "-m", "uvicorn", self.target),
                *(["--factory"] if self.factory else []),
                *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
            ]
        return [
            *(sys.executable, "-m", "gunicorn", "--worker-class", "sync"),
            *("--workers", str(self.workers), "--bind", f"127.0.0.1:{port}"),
            *("--graceful-timeout", "10", self.target),
        ]

    def template(self, route: str | None) -> str | None:
        return None if route is None else self.templates.get(route, route)


SETUPS = {
    "fastapi-uvicorn": Setup("fastapi", "asgi", "fastapi_app:create_app", BRACES, factory=True),
    "starlette-uvicorn": Setup(
        "starlette", "asgi", "starlette_app:create_app", BRACES, factory=True
    ),
    "flask-gunicorn": Setup("flask", "wsgi", "flask_app:create_app()", BRACES, workers=2),
    "django-gunicorn": Setup("django", "wsgi", "django_app:application", BRACES, workers=2),
    "django-uvicorn": Setup("django", "asgi", "django_app:asgi_application", BRACES),
    # Django's own ASGI handler, as startproject's asgi.py makes it: no lifespan, so only
    # apiusage's SIGTERM handler can deliver before uvicorn ends the process.
    "django-uvicorn-stock": Setup("django", "asgi", "django_app:stock_asgi_application", BRACES),
    "litestar-uvicorn": Setup("litestar", "asgi", "litestar_app:create_app", BRACES, factory=True),
    "falcon-gunicorn": Setup("falcon", "wsgi", "falcon_app:create_app()", BRACES, workers=2),
}


@dataclass
class Sent:
    """One request the test sent, and the ``api_request`` it must produce."""

    method: str
    route: str | None  # a key of Setup.templates, a literal template, or None (no route)
    status: int
    caller: tuple[str, str] | None  # (distinct id, organisation); None: anonymous
    body: bytes = b""  # as the client received it

    def key(self, setup: Setup) -> tuple[str, str | None, int, tuple[str, str] | None]:
        return (self.method, setup.template(self.route), self.status, self.caller)


@dataclass
class Exchange:
    """Everything the test sent, with what the app answered that the events must echo."""

    sent: list[Sent] = field(default_factory=list)
    project_id: str = ""
    signup: tuple[str, str] = ("", "")  # the new caller (distinct id, organisation)
    plan: str = "team"


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _exercise(url: str) -> Exchange:
    """The requests of the test, each checked as the app answers it."""
    exchange = Exchange()
    # A fresh connection per request: closed connections let the server shut down at once.
    headers = {"connection": "close", "user-agent": USER_AGENT}
    with httpx.Client(base_url=url, headers=headers, timeout=10.0) as http:

        def send(
            method: str,
            path: str,
            route: str | None,
            status: int,
            caller: tuple[str, str] | None = None,
            *,
            json: Any = None,
        ) -> httpx.Response:
            request_headers = {"x-api-key": KEYS[caller]} if caller else {}
            response = http.request(method, path, headers=request_headers, json=json)
            assert response.status_code == status, (method, path, response.text)
            exchange.sent.append(Sent(method, route, status, caller, response.content))
            return response

        for index, (version, caller) in enumerate(
            [("v1", ALICE), ("v2", ALICE), ("v1", BOB), ("v2", BOB)], start=1
        ):
            reply = send("GET", f"/{version}/items/{index}", f"item_{version}", 200, caller)
            assert caller[0] in reply.text

        project = send("POST", "/v1/projects", "/v1/projects", 201, ALICE, json={"name": "Launch"})
        exchange.project_id = project.json()["id"]

        organisation = f"org_e2e_{secrets.token_hex(4)}"
        signup = send(
            "POST",
            "/v1/signup",
            "/v1/signup",
            201,
            json={"email": "carol@example.com", "organisation": organisation, "plan": "team"},
        )
        assert signup.json()["organisation_id"] == organisation
        exchange.signup = (signup.json()["id"], organisation)
        exchange.sent[-1].caller = exchange.signup  # identify() named the caller

        with http.stream("GET", "/v1/stream") as streamed:
            assert streamed.status_code == 200
            chunks = list(streamed.iter_bytes())
        assert b"".join(chunks) == STREAM_BODY
        exchange.sent.append(Sent("GET", "/v1/stream", 200, None, STREAM_BODY))

        send("GET", "/v1/items/5", "item_v1", 401)  # anonymous: no credentials
        send("GET", "/v1/no-such-route", None, 404)
        assert http.get("/health").status_code == 200  # excluded: never recorded
    return exchange


def _caller(event: dict[str, Any]) -> tuple[str, str] | None:
    """(distinct id, organisation) of an identified event; None for an anonymous one."""
    properties = event["properties"]
    if properties.get("$process_person_profile") is False:
        # Personless: keyed by the request, with no person, organisation or group.
        assert event["distinct_id"] == properties["request_id"], event
        assert properties["organisation"] is None, event
        assert not properties.get("$groups"), event
        return None
    organisation = properties["organisation"]
    assert properties["$groups"] == {"organisation": organisation}, event
    return (event["distinct_id"], organisation)


def _assert_received(setup: Setup, exchange: Exchange, capture: CaptureServer) -> None:
    events = capture.events()
    assert {batch.payload["api_key"] for batch in capture.batches()} == {API_KEY}
    assert not [request for request in capture.requests if request.status != 200]

    # Every request but /health, exactly once: by method, route template, status, caller.
    api_requests = [event for event in events if event["event"] == "api_request"]
    keys = [
        (p["method"], p["route"], p["status_code"], _caller(event))
        for event in api_requests
        for p in [event["properties"]]
    ]
    expected = {sent.key(setup): sent for sent in exchange.sent}
    assert len(expected) == len(exchange.sent)  # no two requests alike
    assert Counter(keys) == Counter(list(expected))  # each exactly once
    assert len({event["uuid"] for event in api_requests}) == len(exchange.sent)
    for key, event in zip(keys, api_requests, strict=True):
        assert event["properties"]["response_bytes"] == len(expected[key].body), key
    by_route: dict[tuple[str, str | None], dict[str, Any]] = {}
    for event in api_requests:
        properties = event["properties"]
        assert properties["request_id"] == event["uuid"]
        assert properties["framework"] == setup.framework
        assert properties["transport"] == setup.transport
        assert properties["client_library"] == "acme-sdk"
        assert properties["duration_ms"] > 0
        by_route[properties["method"], properties["route"]] = properties
        route = properties["route"] or ""
        if "/items/" in route:
            assert properties["api_version"] == route[1:3]
            has_key = properties["status_code"] == 200
            assert properties["auth_method"] == ("api_key" if has_key else "none")
    # The streamed response: every byte counted, and its duration covers the streaming.
    streamed = by_route["GET", "/v1/stream"]
    assert streamed["response_bytes"] == len(STREAM_BODY)
    assert streamed["duration_ms"] >= STREAM_PAUSES_MS * 0.9

    # The route inventory: one per worker, all the same event (PostHog keeps one), listing
    # every route the app serves, the ones no request called among them.
    # (Litestar and Falcon have no adapter to list their routes.)
    inventories = [event for event in events if event["event"] == "api_route_inventory"]
    if setup.framework in ("fastapi", "starlette", "flask", "django"):
        assert 1 <= len(inventories) <= setup.workers
        assert len({event["uuid"] for event in inventories}) == 1
        routes = inventories[0]["properties"]["routes"]
        listed = {(route["method"], route["route"]) for route in routes}
        any_method = {route["route"] for route in routes if route["method"] == "*"}  # Django
        called = {(method, route) for method, route in by_route if route is not None}
        assert {entry for entry in called if entry[1] not in any_method} <= listed, called
        assert ("GET", "/v1/items/{item_id}") in listed or "/v1/items/{item_id}" in any_method
        assert not {entry for entry in listed if entry[1] == "/health"}  # never recorded
    else:
        assert inventories == []

    # Journey events: one per track(), attributed like the request that made it; no others.
    journeys = [
        event
        for event in events
        if event["event"] not in ("api_request", "$groupidentify", "api_route_inventory")
    ]
    assert sorted(event["event"] for event in journeys) == ["project_create", "signup"]
    for journey in journeys:
        properties = journey["properties"]
        route = f"/v1/{'projects' if journey['event'] == 'project_create' else 'signup'}"
        assert properties["route"] == route
        assert properties["request_id"] == by_route["POST", route]["request_id"]
        if journey["event"] == "project_create":
            assert _caller(journey) == ALICE
            assert properties["project_id"] == exchange.project_id
        else:
            assert _caller(journey) == exchange.signup
            assert properties["plan"] == exchange.plan

    # Organisations: the new one with its plan, once; the others once per worker at most.
    groups = [event for event in events if event["event"] == "$groupidentify"]
    by_key = Counter(event["properties"]["$group_key"] for event in groups)
    new_organisation = exchange.signup[1]
    assert set(by_key) == {ALICE[1], BOB[1], new_organisation}
    for event in groups:
        properties = event["properties"]
        assert properties["$group_type"] == "organisation"
        if properties["$group_key"] == new_organisation:
            assert properties["$group_set"] == {"plan": exchange.plan}
            assert event["distinct_id"] == exchange.signup[0]
        else:
            assert not properties.get("$group_set")
    assert by_key[new_organisation] == 1
    assert 1 <= by_key[ALICE[1]] <= setup.workers
    assert 1 <= by_key[BOB[1]] <= setup.workers


@pytest.mark.parametrize("setup", list(SETUPS.values()), ids=list(SETUPS))
def test_example_app_under_a_real_server(
    setup: Setup, capture: CaptureServer, tmp_path: Path
) -> None:
    port = free_port()
    server = Server(
        setup.command(port),
        server_environment(capture, API_KEY, pythonpath=[EXAMPLES]),
        port,
        tmp_path / "server.log",
        cwd=tmp_path,  # no .env or local store of the checkout
    )
    try:
        server.wait_ready()
        exchange = _exercise(server.url)
        # The flush interval is a minute: nothing has been sent yet.
        assert capture.events() == []
        returncode = server.terminate()
        # uvicorn re-raises the SIGTERM it caught once it has shut down: -15 is a clean exit.
        clean = (0, -signal.SIGTERM) if setup.transport == "asgi" else (0,)
        assert returncode in clean, server.output()
        output = server.output()
        assert "Traceback" not in output, output
        assert "were dropped" not in output, output  # apiusage's own count, logged at close
        if setup.transport == "asgi":
            # uvicorn's re-raised SIGTERM skips atexit: delivered by the lifespan shutdown,
            # or by apiusage's SIGTERM handler where the app has no lifespan.
            lifespan = "lifespan' protocol appears unsupported" not in output
            assert lifespan == ("stock" not in setup.target), output
            if lifespan:
                assert "Application shutdown complete." in output, output
        else:
            # Every worker exited gracefully, running apiusage's atexit flush.
            assert output.count("Worker exiting") == setup.workers, output
        _assert_received(setup, exchange, capture)
    finally:
        server.kill()
