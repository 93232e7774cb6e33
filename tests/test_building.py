"""Building is total: every recorded request comes out as an event, whatever went wrong."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from werkzeug.test import Client

import apiusage
from apiusage.detect.versions import VersionDetector
from tests.conftest import MakeClient
from tests.support.apps import plain_wsgi_app
from tests.support.hostile import asgi_scope, hostile_requests, wsgi_environ


class _BrokenVersionDetector(VersionDetector):
    """A version detector with a bug: building every request fails."""

    def detect(self, *args: Any) -> Any:
        raise RuntimeError("a detector bug")


def test_an_event_comes_out_when_building_fails(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sink = make_client()
    monkeypatch.setattr(client.builder, "versions", _BrokenVersionDetector())
    http = Client(apiusage.WSGIMiddleware(plain_wsgi_app, client=client))
    with http.get("/teapot", headers={"User-Agent": "curl/8.1"}) as response:
        assert response.status_code == 418
    assert client.flush(10)
    [event] = sink.named("api_request")
    properties = event.properties
    # What could be read is kept; what failed is named, so it can be counted and fixed.
    assert properties["build_error"] == "RuntimeError"
    assert properties["status_code"] == 418
    assert properties["method"] == "GET"
    assert properties["duration_ms"] >= 0
    assert properties["request_id"] == event.uuid
    assert properties["api_version"] is None  # the failed detector's: null, not missing
    assert properties["auth_method"] is None
    stats = client.stats.snapshot()
    assert stats["internal_errors"] == 1
    assert stats["events_built_partially"] == 1
    assert stats["dropped"] == 0


def test_a_journey_event_survives_its_request_failing_to_build(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sink = make_client()
    monkeypatch.setattr(client.builder, "versions", _BrokenVersionDetector())

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        apiusage.identify("user-1", organisation="acme")
        apiusage.track("widget_created", {"size": 3})
        start_response("201 Created", [])
        return [b""]

    with Client(apiusage.WSGIMiddleware(app, client=client)).post("/v1/widgets"):
        pass
    assert client.flush(10)
    [request] = sink.named("api_request")
    [widget] = sink.named("widget_created")
    assert request.distinct_id == widget.distinct_id == "user-1"
    assert request.groups == widget.groups == {"organisation": "acme"}
    assert widget.properties["size"] == 3
    assert widget.properties["request_id"] == request.uuid
    assert client.stats.snapshot()["dropped"] == 0


# ---------------------------------------------------------------- hostile requests
HOSTILE_COUNT = 600
#: The longest string property value apiusage sends (user-supplied values are cut and
#: marked; detected values are short by construction).
MAX_STRING_PROPERTY = 1024


async def _echo_asgi(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in _strings(item)]
    return []


def _assert_total_and_bounded(client: apiusage.UsageClient, sink: Any, count: int) -> None:
    assert client.flush(30)
    stats = client.stats.snapshot()
    assert stats["requests_recorded"] == count
    assert (stats["internal_errors"], stats["resolver_errors"], stats["dropped"]) == (0, 0, 0)
    events = sink.named("api_request")
    assert len(events) == count  # every hostile request came out as an event
    for event in events:
        longest = max(map(len, _strings(event.properties)))
        assert longest <= MAX_STRING_PROPERTY, (event.properties, longest)
        assert len(event.distinct_id) <= 200
        for text in _strings(event.properties):  # encodable as PostHog's JSON requires
            text.encode("utf-8")


def test_every_hostile_asgi_request_comes_out_as_a_bounded_event(
    make_client: MakeClient,
) -> None:
    client, sink = make_client(caller_header="x-caller")
    app = apiusage.ASGIMiddleware(_echo_asgi, client=client)

    async def drive() -> None:
        async def send(message: dict[str, Any]) -> None:
            pass

        for request in hostile_requests(HOSTILE_COUNT):
            messages = [{"type": "http.request", "body": request.body, "more_body": False}]

            async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
                return messages.pop() if messages else {"type": "http.disconnect"}

            await app(asgi_scope(request), receive, send)

    asyncio.run(drive())
    _assert_total_and_bounded(client, sink, HOSTILE_COUNT)


def test_every_hostile_wsgi_request_comes_out_as_a_bounded_event(
    make_client: MakeClient,
) -> None:
    client, sink = make_client(caller_header="x-caller")
    app = apiusage.WSGIMiddleware(_echo_wsgi, client=client)
    for request in hostile_requests(HOSTILE_COUNT, seed=7):
        response = app(wsgi_environ(request), lambda status, headers, exc_info=None: None)
        b"".join(response)
        response.close()  # type: ignore[attr-defined]
    _assert_total_and_bounded(client, sink, HOSTILE_COUNT)


def test_user_supplied_properties_are_cut_and_marked(make_client: MakeClient) -> None:
    client, sink = make_client()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        apiusage.identify("user-1", bio="x" * 100_000, organisation="o" * 5000)
        apiusage.track("upload", {"name": "n" * 5000, "nested": {"blob": "b" * 100_000}})
        start_response("200 OK", [])
        return [b""]

    with Client(apiusage.WSGIMiddleware(app, client=client)).get("/v1/upload"):
        pass
    assert client.flush(10)
    [upload] = sink.named("upload")
    assert len(upload.properties["name"]) <= MAX_STRING_PROPERTY
    assert upload.properties["name"].endswith("…[truncated]")
    assert upload.properties["nested"] == "…[truncated: 100011 bytes of JSON]"
    assert len(upload.groups["organisation"]) <= 200


def test_a_joined_recording_leaves_measuring_to_the_outer_one(make_client: MakeClient) -> None:
    client, sink = make_client()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        inner = client.begin("wsgi", "GET", "/inner", "", environ, environ)
        assert not inner.measures  # the outer middleware records this request
        inner.response_started(599)
        inner.sent(1000)
        body = list(inner.counted([b"ab", b"cd"]))
        inner.finish_when_closed(object())
        inner.finish_blocking()
        start_response("200 OK", [])
        return body

    with Client(apiusage.WSGIMiddleware(app, client=client)).get("/outer") as response:
        assert response.get_data() == b"abcd"
    assert client.flush(10)
    [event] = sink.named("api_request")
    assert (event.properties["status_code"], event.properties["response_bytes"]) == (200, 4)
