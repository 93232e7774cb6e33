"""The apiusage demo: a small project-management API, real traffic, and the usage report.

It starts the sample API under uvicorn on a free local port, sends traffic from a few
callers (different organisations, API versions, auth methods and client libraries, some
dropping off half-way through the sign-up journey, one still calling a deprecated
endpoint), shuts the server down (which flushes apiusage), prints the usage report from
the embedded local store (the sign-up funnel, the endpoints nobody called, who still
calls the deprecated one), and writes the same report as an HTML page with charts.

Run it with ``nox -s demo`` or ``python docs/examples/demo.py [--store PATH]``.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

import apiusage
from apiusage.report import format_summary, summarise
from apiusage.report.html import render_html
from starlette_apiusage import ApiUsage

# --------------------------------------------------------------------------- the sample API


@dataclass
class User:
    id: str
    organisation_id: str
    plan: str


USERS_BY_KEY: dict[str, User] = {}
USERS_BY_TOKEN: dict[str, User] = {}
_ids = itertools.count(1)


def _jwt_for(user_id: str) -> str:
    """A JWT-shaped token (unsigned: the demo only needs something that looks like one)."""

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': user_id})}.c2lnbmF0dXJl"


def authenticate(request: Request) -> User | None:
    """The app's own auth: API key header, bearer token, or basic auth with the key as user."""
    key = request.headers.get("x-api-key")
    if key:
        return USERS_BY_KEY.get(key)
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return USERS_BY_TOKEN.get(credential)
    if scheme.lower() == "basic":
        user, _, _ = base64.b64decode(credential).decode().partition(":")
        return USERS_BY_KEY.get(user)
    return None


def authenticated(handler):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        user = authenticate(request)
        if user is None:
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        request.state.user = user  # apiusage reads the caller as it is attached here
        return await handler(request, user)

    return endpoint


async def signup(request: Request) -> Response:
    body = await request.json()
    user = User(f"user-{next(_ids)}", body["organisation"], body.get("plan", "free"))
    key = f"sk_live_{user.id}_{body['organisation']}"
    USERS_BY_KEY[key] = user
    USERS_BY_TOKEN[_jwt_for(user.id)] = user
    apiusage.identify(
        user.id,
        organisation=user.organisation_id,
        organisation_properties={"plan": user.plan},
        signup_source=body.get("source", "api"),
    )
    apiusage.track("signup", plan=user.plan)
    return JSONResponse({"api_key": key, "token": _jwt_for(user.id)}, status_code=201)


@authenticated
async def login(request: Request, user: User) -> Response:
    apiusage.track("login")
    return JSONResponse({"ok": True})


@authenticated
async def create_project(request: Request, user: User) -> Response:
    project_id = next(_ids)
    apiusage.track("project_create", project_id=project_id)
    return JSONResponse({"id": project_id}, status_code=201)


@authenticated
async def get_project(request: Request, user: User) -> Response:
    project = {"id": int(request.path_params["project_id"]), "name": "demo"}
    # An experiment on API behaviour: half of the organisations get compact projects.
    if apiusage.flag("compact-projects"):
        return JSONResponse([project["id"], project["name"]])
    return JSONResponse(project)


@authenticated
async def create_widget(request: Request, user: User) -> Response:
    apiusage.track("widget_create", project_id=int(request.path_params["project_id"]))
    return JSONResponse({"id": next(_ids)}, status_code=201)


@apiusage.deprecated  # outermost: the route inventory and every request to it say so
@authenticated
async def export_legacy(request: Request, user: User) -> Response:
    return JSONResponse({"rows": []})


@authenticated
async def archive_project(request: Request, user: User) -> Response:
    return Response(status_code=204)  # no caller uses it: the report lists it as never called


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _versioned_routes() -> list[Route]:
    return [
        Route("/signup", signup, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/projects", create_project, methods=["POST"]),
        Route("/projects/{project_id:int}", get_project),
        Route("/projects/{project_id:int}", archive_project, methods=["DELETE"]),
        Route("/projects/{project_id:int}/widgets", create_widget, methods=["POST"]),
        Route("/export", export_legacy),
    ]


#: The sign-up journey, as the report shows it: callers reaching each step, in order.
JOURNEYS = {"onboarding": ["signup", "login", "project_create", "widget_create"]}
#: A feature flag defined offline: rolled out to half of the organisations.
FLAGS = {"compact-projects": {"rollout": 50, "by": "organisation"}}


def build_app(store: Path) -> tuple[Starlette, apiusage.UsageClient]:
    app = Starlette(
        routes=[
            Route("/health", health),
            Mount("/v1", routes=_versioned_routes()),
            Mount("/v2", routes=_versioned_routes()),
        ]
    )
    usage = ApiUsage(  # the Starlette adapter: also lists the app's routes (the inventory)
        app,
        store=store,
        journeys=JOURNEYS,
        flags=FLAGS,
        identity_secret="demo-identity-secret-not-for-production",
    )
    return app, usage.client


# --------------------------------------------------------------------------------- traffic


@dataclass
class Caller:
    organisation: str
    plan: str
    version: str
    auth: str  # "key", "jwt" or "basic"
    user_agent: str
    journey_length: int  # how far through signup → login → project → widget they get
    reads: int


CALLERS = [
    Caller("acme", "enterprise", "v1", "key", "python-requests/2.32.3", 4, 12),
    Caller("acme", "enterprise", "v2", "key", "acme-sdk-python/3.1.0", 4, 8),
    Caller("globex", "pro", "v2", "jwt", "axios/1.7.2", 4, 6),
    Caller("initech", "free", "v1", "basic", "curl/8.5.0", 2, 3),
    Caller("umbrella", "free", "v2", "key", "Go-http-client/1.1", 3, 2),
    Caller("hooli", "pro", "v2", "jwt", "python-httpx/0.27.0", 1, 0),
]


def _auth_headers(caller: Caller, credentials: dict[str, str]) -> dict[str, str]:
    if caller.auth == "jwt":
        return {"authorization": f"Bearer {credentials['token']}"}
    if caller.auth == "basic":
        encoded = base64.b64encode(f"{credentials['api_key']}:".encode()).decode()
        return {"authorization": f"Basic {encoded}"}
    return {"x-api-key": credentials["api_key"]}


def send_traffic(base_url: str) -> int:
    sent = 0
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for caller in CALLERS:
            http.headers["user-agent"] = caller.user_agent
            prefix = f"/{caller.version}"
            response = http.post(
                f"{prefix}/signup", json={"organisation": caller.organisation, "plan": caller.plan}
            )
            response.raise_for_status()
            sent += 1
            headers = _auth_headers(caller, response.json())
            project_id = None
            if caller.journey_length >= 2:
                http.post(f"{prefix}/login", headers=headers).raise_for_status()
                sent += 1
            if caller.journey_length >= 3:
                project_id = http.post(f"{prefix}/projects", headers=headers).json()["id"]
                sent += 1
            if caller.journey_length >= 4:
                http.post(f"{prefix}/projects/{project_id}/widgets", headers=headers)
                sent += 1
            for _ in range(caller.reads):
                http.get(f"{prefix}/projects/{project_id or 1}", headers=headers)
                sent += 1
        # acme still calls a legacy endpoint once, from its old integration.
        http.headers["user-agent"] = "python-requests/2.18.0"
        http.get("/v1/export", headers={"x-api-key": next(iter(USERS_BY_KEY))})
        # An anonymous caller probing, an unauthorised call, and health checks (not recorded).
        http.headers["user-agent"] = "curl/7.88.1"
        http.get("/v1/projects/1")
        http.get("/wp-login.php")
        http.get("/health")
        sent += 4
    return sent


# ------------------------------------------------------------------------------------ main


def serve(app: Starlette) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo server did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=Path(".apiusage/demo.sqlite3"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{args.store}{suffix}").unlink(missing_ok=True)

    app, client = build_app(args.store)
    server, thread, base_url = serve(app)
    print(f"sample API listening on {base_url}, instrumented with apiusage {apiusage.__version__}")
    sent = send_traffic(base_url)
    print(f"sent {sent} requests from {len(CALLERS)} callers; shutting the server down …")
    server.should_exit = True  # lifespan shutdown flushes apiusage's queue into the store
    thread.join(timeout=30)

    client.close()  # saves its final counters in the store (the report's Delivery section)
    stats = client.stats.snapshot()
    print(
        f"apiusage recorded {stats['requests_recorded']} requests, built {stats['events_built']} "
        f"events, delivered {stats['events_delivered']}, dropped {stats['dropped']}\n"
    )
    summary = summarise(args.store, journeys=JOURNEYS, over_time=True)
    print(format_summary(summary))
    page = args.store.with_name("demo-report.html")
    page.write_text(render_html(summary, title="apiusage demo: API usage report"))
    print(f"\nstore: {args.store.resolve()}")
    print(f"the same report with charts: {page.resolve()}")
    print(
        f"again, or as JSON / CSV / HTML: apiusage report --store {args.store} "
        "--journey signup,login,project_create,widget_create [--json | --csv deprecated | "
        "--html FILE]"
    )
    answered = (
        summary.never_called  # the route inventory arrived
        and any(entry.requests for entry in summary.deprecated)
        and summary.funnels[0].steps[-1].callers > 0
    )
    return 0 if stats["dropped"] == 0 and stats["events_delivered"] > 0 and answered else 1


if __name__ == "__main__":
    sys.exit(main())
