"""A complete small Flask API instrumented with apiusage.

Callers authenticate with an ``X-API-Key`` header; the app puts the user on ``g.user``,
where apiusage finds the caller (its ``id``) and organisation (its ``organisation_id``)
before the request context is torn down. (With Flask-Login, ``current_user`` is read
the same way, with nothing to configure.)

Run it with ``python docs/examples/flask_app.py`` (Flask's server on port 8000), or
with ``gunicorn --chdir docs/examples 'flask_app:create_app()'``, then::

    curl -H 'X-API-Key: key-alice' localhost:8000/v1/items/42

``create_app(config=None, **apiusage_options)`` builds a fresh app: ``config`` goes to
``app.config`` (``APIUSAGE_*`` keys configure apiusage), keyword options to ``ApiUsage``
(e.g. ``sink=MemorySink()`` in tests).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, Response, abort, g, jsonify, request

import apiusage
from flask_apiusage import ApiUsage

STREAM_PAUSE = 0.05  # seconds between the chunks of /v1/stream


@dataclass(frozen=True)
class User:
    id: str
    organisation_id: str


USERS_BY_KEY = {
    "key-alice": User("usr_alice", "org_acme"),
    "key-bob": User("usr_bob", "org_globex"),
}


def api_key_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def authenticated_view(**kwargs: Any) -> Any:
        g.user = USERS_BY_KEY.get(request.headers.get("X-API-Key", ""))
        if g.user is None:
            abort(401, "a valid X-API-Key header is required")
        return view(**kwargs)

    return authenticated_view


v1 = Blueprint("v1", __name__, url_prefix="/v1")
v2 = Blueprint("v2", __name__, url_prefix="/v2")


@v1.get("/items/<int:item_id>")
@api_key_required
def get_item(item_id: int) -> Response:
    return jsonify(id=item_id, name=f"Item {item_id}", owner=g.user.id)


@v2.get("/items/<int:item_id>")
@api_key_required
def get_item_v2(item_id: int) -> Response:
    return jsonify(item={"id": item_id, "name": f"Item {item_id}"}, owner={"id": g.user.id})


@v1.post("/projects")
@api_key_required
def create_project() -> tuple[Response, int]:
    project_id = f"prj_{secrets.token_hex(4)}"
    apiusage.track("project_create", project_id=project_id)
    body = request.get_json()
    return jsonify(id=project_id, name=body["name"], organisation_id=g.user.organisation_id), 201


@v1.post("/signup")
def signup() -> tuple[Response, int]:
    body = request.get_json()
    plan = body.get("plan", "free")
    user = User(f"usr_{secrets.token_hex(4)}", body["organisation"])
    api_key = f"key-{secrets.token_urlsafe(12)}"
    USERS_BY_KEY[api_key] = user
    apiusage.identify(
        user.id, organisation=user.organisation_id, organisation_properties={"plan": plan}
    )
    apiusage.track("signup", plan=plan)
    return jsonify(id=user.id, organisation_id=user.organisation_id, api_key=api_key), 201


@v1.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[bytes]:
        for number in range(3):
            if number:
                time.sleep(STREAM_PAUSE)
            yield f"chunk {number}\n".encode()

    return Response(chunks(), mimetype="text/plain")


@v1.get("/boom")
def boom() -> Response:
    raise RuntimeError("something broke")


def create_app(config: Mapping[str, Any] | None = None, **apiusage_options: Any) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(config or {})
    app.register_blueprint(v1)
    app.register_blueprint(v2)

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")  # not recorded: /health is excluded by default

    ApiUsage(app, **apiusage_options)
    return app


if __name__ == "__main__":
    create_app().run(port=8000)
