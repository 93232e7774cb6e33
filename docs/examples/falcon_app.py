"""A complete small Falcon API instrumented with apiusage's generic WSGI middleware.

Callers authenticate with an ``X-API-Key`` header; a Falcon middleware puts the user on
``req.context.user``, and the ``user_required`` hook names the caller (its ``id``) and
organisation (its ``organisation_id``) to apiusage with ``apiusage.identify()``.

Falcon keeps its route template (``req.uri_template``) and its unhandled errors (turned
into 500 responses) to itself, so ``RouteTemplate`` and ``internal_error`` hand both to
the request's apiusage record; everything else comes from the middleware.

Run it with ``python docs/examples/falcon_app.py`` (wsgiref on port 8000), or with
``gunicorn --chdir docs/examples 'falcon_app:create_app()'``, then::

    curl -H 'X-API-Key: key-alice' localhost:8000/v1/items/42

``create_app(**apiusage_options)`` builds a fresh, instrumented WSGI app; the options go to
``apiusage.WSGIMiddleware`` (e.g. ``sink=MemorySink()`` in tests).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import falcon

import apiusage

STREAM_PAUSE = 0.05  # seconds between the chunks of /v1/stream


@dataclass(frozen=True)
class User:
    id: str
    organisation_id: str


USERS_BY_KEY = {
    "key-alice": User("usr_alice", "org_acme"),
    "key-bob": User("usr_bob", "org_globex"),
}


class ApiKeyAuthentication:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.user = USERS_BY_KEY.get(req.get_header("X-API-Key") or "")


class RouteTemplate:
    """Falcon middleware: the matched route template (``/v1/items/{item_id:int}``)."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, *_: Any) -> None:
        apiusage.annotate(route=req.uri_template)


def internal_error(req: falcon.Request, resp: falcon.Response, exc: Exception, _: Any) -> None:
    """Falcon's default for unhandled errors (a 500), noting the error class first."""
    apiusage.annotate(exception=exc)
    raise falcon.HTTPInternalServerError()


def user_required(req: falcon.Request, resp: falcon.Response, *_: Any) -> None:
    """A ``falcon.before`` hook: a known caller, named to apiusage, or 401."""
    user = req.context.user
    if user is None:
        raise falcon.HTTPUnauthorized(description="a valid X-API-Key header is required")
    apiusage.identify(user.id, organisation=user.organisation_id)


class Item:
    @falcon.before(user_required)
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        resp.media = {"id": item_id, "name": f"Item {item_id}", "owner": req.context.user.id}


class ItemV2:
    @falcon.before(user_required)
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        item = {"id": item_id, "name": f"Item {item_id}"}
        resp.media = {"item": item, "owner": {"id": req.context.user.id}}


class Projects:
    @falcon.before(user_required)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        project_id = f"prj_{secrets.token_hex(4)}"
        apiusage.track("project_create", project_id=project_id)
        organisation_id = req.context.user.organisation_id
        resp.media = {"id": project_id, "name": body["name"], "organisation_id": organisation_id}
        resp.status = falcon.HTTP_201


class Signup:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        plan = body.get("plan", "free")
        user = User(f"usr_{secrets.token_hex(4)}", body["organisation"])
        api_key = f"key-{secrets.token_urlsafe(12)}"
        USERS_BY_KEY[api_key] = user
        apiusage.identify(
            user.id, organisation=user.organisation_id, organisation_properties={"plan": plan}
        )
        apiusage.track("signup", plan=plan)
        resp.media = {"id": user.id, "organisation_id": user.organisation_id, "api_key": api_key}
        resp.status = falcon.HTTP_201


class Stream:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        def chunks() -> Iterator[bytes]:
            for number in range(3):
                if number:
                    time.sleep(STREAM_PAUSE)
                yield f"chunk {number}\n".encode()

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = chunks()


class Boom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("something broke")


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}  # not recorded: /health is excluded by default


def create_app(**apiusage_options: Any) -> apiusage.WSGIMiddleware:
    app = falcon.App(middleware=[ApiKeyAuthentication(), RouteTemplate()])
    app.add_error_handler(Exception, internal_error)
    for version, item in (("v1", Item()), ("v2", ItemV2())):
        app.add_route(f"/{version}/items/{{item_id:int}}", item)
    app.add_route("/v1/projects", Projects())
    app.add_route("/v1/signup", Signup())
    app.add_route("/v1/stream", Stream())
    app.add_route("/v1/boom", Boom())
    app.add_route("/health", Health())
    return apiusage.WSGIMiddleware(app, framework="falcon", **apiusage_options)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("", 8000, create_app()) as server:
        server.serve_forever()
