"""A credential the app refused (401, 403) names no caller: the request is anonymous and
says ``auth_failed``, so wrong passwords and random tokens do not become callers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from werkzeug.test import Client

import apiusage
from apiusage.report import summarise
from apiusage.sinks.memory import MemorySink
from tests.adapters.drivers import IDENTITY_SECRET

GOOD = {"key-good", "Bearer tok-good", "Basic " + base64.b64encode(b"alice:right").decode()}


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Accepts the good API key, bearer token and password; refuses the rest."""
    credential = environ.get("HTTP_X_API_KEY") or environ.get("HTTP_AUTHORIZATION")
    forbidden = environ["PATH_INFO"] == "/admin"
    if credential in GOOD and not forbidden:
        status = "200 OK"
    else:
        status = "403 Forbidden" if forbidden else "401 Unauthorized"
    apiusage.annotate(route=environ["PATH_INFO"])
    start_response(status, [("content-type", "text/plain")])
    return [b"."]


def test_refused_credentials_name_no_caller(tmp_path: Path) -> None:
    sink = MemorySink()
    wrapped = apiusage.WSGIMiddleware(app, sink=sink, identity_secret=IDENTITY_SECRET)
    stored = apiusage.WSGIMiddleware(
        app, store=tmp_path / "events.sqlite3", identity_secret=IDENTITY_SECRET
    )
    http = Client(wrapped)
    wrong_basic = "Basic " + base64.b64encode(b"alice:wrong").decode()
    sent = [
        ("/items", {"X-Api-Key": "key-good"}, 200),
        ("/items", {"X-Api-Key": "key-random-1"}, 401),
        ("/items", {"X-Api-Key": "key-random-2"}, 401),
        ("/items", {"Authorization": "Bearer not.a.jwt"}, 401),
        ("/items", {"Authorization": wrong_basic}, 401),
        ("/items", {"Authorization": "Bearer tok-good"}, 200),
        ("/admin", {"X-Api-Key": "key-good"}, 403),  # a good key, refused here
        ("/items", {}, 401),  # no credential at all
        ("/items?access_token=tok-random", {}, 401),  # a token in the query string
    ]
    for path, headers, status in sent:
        assert http.get(path, headers=headers, buffered=True).status_code == status, path
        assert Client(stored).get(path, headers=headers, buffered=True).status_code == status
    assert wrapped.client.flush(10)
    assert stored.client.flush(10)
    events = sink.named("api_request")
    assert [event.properties["status_code"] for event in events] == [s for *_, s in sent]
    identified = [event for event in events if not event.personless]
    assert [event.properties["status_code"] for event in identified] == [200, 200]
    for event in events:
        refused = event.properties["status_code"] in (401, 403)
        presented = event.properties["auth_method"] != "none"
        assert event.properties["auth_failed"] is (refused and presented)
        if refused:
            assert event.personless
            assert event.distinct_id == event.uuid  # keyed by the request, not the key
    methods = [e.properties["auth_method"] for e in events if e.properties["auth_failed"]]
    assert methods == ["api_key", "api_key", "bearer", "basic", "api_key", "bearer"]
    # The good key's one caller, whichever request came first in the batch.
    good_key = events[0].distinct_id
    assert events[6].distinct_id != good_key

    # The report counts the refusals per auth method, and only real callers.
    report = summarise(tmp_path / "events.sqlite3")
    failed = {entry.auth_method: entry.failed for entry in report.auth_methods}
    assert failed == {"api_key": 3, "bearer": 2, "basic": 1, "none": 0}
    assert report.identified_callers == 2  # the good key and the good token
