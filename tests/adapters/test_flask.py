"""What only the Flask extension does: per-app configuration, Flask-Login, a threaded server."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify
from flask_login import LoginManager, UserMixin, login_required
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import Client

from apiusage import Event, UsageClient
from apiusage.sinks.memory import MemorySink
from flask_apiusage import ApiUsage
from tests.adapters.drivers import IDENTITY_SECRET, counting_resolvers, load_example

ALICE = {"x-api-key": "key-alice"}
BOB = {"x-api-key": "key-bob"}


def get(app: Flask, path: str, **kwargs: Any) -> tuple[int, Any]:
    response = Client(app).get(path, **kwargs)
    try:
        return response.status_code, response.get_json()
    finally:
        response.close()


def delivered(app: Flask, sink: MemorySink) -> list[Event]:
    """What the app's requests made (the route inventory, checked on its own, left out)."""
    client: UsageClient = ApiUsage.client_for(app)
    assert client.flush(timeout=10)
    return [event for event in sink.events if event.name != "api_route_inventory"]


def test_two_apps_in_one_process_keep_their_own_configuration() -> None:
    flask_app = load_example("flask_app")
    sink_a, sink_b = MemorySink(), MemorySink()
    app_a = flask_app.create_app(
        {"APIUSAGE_EVENT_NAME": "call_a", "APIUSAGE_ORGANISATION_GROUP": "company"},
        sink=sink_a,
        identity_secret=IDENTITY_SECRET,
    )
    app_b = flask_app.create_app({"APIUSAGE_EVENT_NAME": "call_b"}, sink=sink_b)

    assert get(app_a, "/v1/items/1", headers=ALICE)[0] == 200
    assert get(app_b, "/v2/items/2", headers=BOB)[0] == 200
    assert get(app_a, "/v1/items/3", headers=BOB)[0] == 200

    events_a, events_b = delivered(app_a, sink_a), delivered(app_b, sink_b)
    assert [(event.name, event.distinct_id) for event in events_a] == [
        ("call_a", "usr_alice"),
        ("call_a", "usr_bob"),
    ]
    assert [event.groups for event in events_a] == [
        {"company": "org_acme"},
        {"company": "org_globex"},
    ]
    assert [(event.name, event.distinct_id, event.groups) for event in events_b] == [
        ("call_b", "usr_bob", {"organisation": "org_globex"})
    ]
    client_a, client_b = ApiUsage.client_for(app_a), ApiUsage.client_for(app_b)
    assert client_a is not client_b
    assert client_a.settings.event_name == "call_a"
    assert client_b.settings.event_name == "call_b"


@dataclass
class Member(UserMixin):  # type: ignore[misc]
    id: str
    organisation_id: str


MEMBERS = {"key-carol": Member("usr_carol", "org_initech")}


def test_flask_login_current_user_is_the_caller() -> None:
    app = Flask(__name__)
    login = LoginManager(app)

    @login.request_loader
    def load_from_api_key(request: Any) -> Member | None:
        return MEMBERS.get(request.headers.get("X-API-Key", ""))

    @app.get("/v1/reports/<int:report_id>")
    @login_required
    def report(report_id: int) -> Any:
        return jsonify(id=report_id)

    sink = MemorySink()
    ApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)

    assert get(app, "/v1/reports/4", headers={"x-api-key": "key-carol"}) == (200, {"id": 4})
    assert get(app, "/v1/reports/5")[0] == 401
    carol, anonymous = delivered(app, sink)
    assert carol.distinct_id == "usr_carol"
    assert carol.groups == {"organisation": "org_initech"}
    assert carol.properties["route"] == "/v1/reports/{report_id}"
    assert carol.properties["route_template"] == "/v1/reports/<int:report_id>"
    assert anonymous.personless
    assert anonymous.properties["status_code"] == 401


class DevServer:
    """The Flask example on werkzeug's threaded development server, in a thread."""

    def __init__(self) -> None:
        self.sink = MemorySink()
        self.app = load_example("flask_app").create_app(
            sink=self.sink, identity_secret=IDENTITY_SECRET
        )
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def stop(self) -> None:
        """Stop serving; returns once every request thread is done (response closed)."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=10)
            self.server.server_close()  # joins the request threads


@pytest.fixture
def dev_server() -> Iterator[DevServer]:
    server = DevServer()
    try:
        yield server
    finally:
        server.stop()


def test_concurrent_requests_on_the_threaded_dev_server(dev_server: DevServer) -> None:
    users = {"usr_alice": ALICE, "usr_bob": BOB}
    organisations = {"usr_alice": "org_acme", "usr_bob": "org_globex"}
    kinds = ["item", "project", "item", "project", "stream"]
    plan = [(("usr_alice", "usr_bob")[n % 2], kinds[n // 2 % 5]) for n in range(24)]

    def call(step: tuple[str, str]) -> int:
        user, kind = step
        with httpx.Client(base_url=dev_server.url, headers=users[user], timeout=10) as http:
            if kind == "stream":
                response = http.get("/v1/stream")
                assert response.content == b"chunk 0\nchunk 1\nchunk 2\n"
            elif kind == "project":
                response = http.post("/v1/projects", json={"name": "Apollo"})
            else:
                response = http.get("/v1/items/1")
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(call, plan))

    projects = sum(kind == "project" for _, kind in plan)
    assert Counter(statuses) == {200: len(plan) - projects, 201: projects}
    # A response is complete for the client before the server closes it (which finishes
    # the record): stop the server, which waits for its request threads.
    dev_server.stop()
    events = delivered(dev_server.app, dev_server.sink)
    requests = [event for event in events if event.name == "api_request"]
    assert len({event.uuid for event in requests}) == len(requests) == len(plan)
    routes = {"item": "/v1/items/{item_id}", "project": "/v1/projects", "stream": "/v1/stream"}
    seen = Counter(
        (event.properties["route"], event.distinct_id)
        for event in requests
        if event.properties["route"] != "/v1/stream"  # public: callers are keyed hashes there
    )
    expected = Counter((routes[kind], user) for user, kind in plan if kind != "stream")
    # No request borrowed another one's caller, however the threads interleaved.
    assert seen == expected
    for event in requests:
        if event.properties["route"] == "/v1/stream":
            assert event.distinct_id.startswith("key_")
            assert event.properties["duration_ms"] >= 90
        else:
            assert event.groups == {"organisation": organisations[event.distinct_id]}
    request_by_id = {event.uuid: event for event in requests}
    journeys = [event for event in events if event.name == "project_create"]
    assert len(journeys) == projects
    for journey in journeys:
        request = request_by_id[journey.properties["request_id"]]
        assert request.properties["route"] == "/v1/projects"
        assert journey.distinct_id == request.distinct_id


def test_async_and_sync_resolvers_each_run_once_and_are_awaited(
    recwarn: pytest.WarningsRecorder,
) -> None:
    import gc

    calls, resolvers = counting_resolvers()

    sink = MemorySink()
    app = Flask(__name__)
    app.get("/v1/ping")(lambda: jsonify(ok=True))
    ApiUsage(
        app,
        identify=resolvers,
        sink=sink,
        identity_secret=IDENTITY_SECRET,
    )
    for _ in range(3):
        assert get(app, "/v1/ping")[0] == 200
    assert [event.distinct_id for event in delivered(app, sink)] == ["usr_from_db"] * 3
    gc.collect()
    assert calls == {"sync": 3, "async": 3}
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
    assert ApiUsage.client_for(app).stats.snapshot()["internal_errors"] == 0
