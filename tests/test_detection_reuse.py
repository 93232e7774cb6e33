"""Requests that read the same to the detectors share one detection.

Detection (version, auth method, client library) and the built-in resolvers are pure
functions of a request's route, path, query string and a few headers; the worker works
them out once per distinct combination, and keeps them from one batch to the next (a
bounded memory). These tests pin that nothing that
differs in those inputs is ever shared, and that what does not matter is.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from werkzeug.test import Client

import apiusage
from apiusage.builder import EventBuilder
from tests.conftest import MakeClient

pytestmark = pytest.mark.anyio

ONE_BATCH = {"batch_size": 10_000, "flush_interval": 3600}


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _count_detections(client: apiusage.UsageClient, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    detect = EventBuilder.detect

    def counting(self: EventBuilder, view: Any) -> Any:
        calls[0] += 1
        return detect(self, view)

    monkeypatch.setattr(client.builder, "detect", counting.__get__(client.builder))
    return calls


def test_requests_that_differ_in_what_detection_reads_are_detected_apart(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sink = make_client(**ONE_BATCH)
    calls = _count_detections(client, monkeypatch)
    http = Client(apiusage.WSGIMiddleware(_wsgi_app, client=client))
    requests: list[tuple[str, dict[str, str]]] = [
        ("/v1/items", {"X-API-Key": "key-a", "User-Agent": "python-requests/2.32"}),
        ("/v1/items", {"X-API-Key": "key-b", "User-Agent": "python-requests/2.32"}),
        ("/v1/items", {"X-API-Key": "key-a", "User-Agent": "curl/8.1"}),
        ("/v2/items", {"X-API-Key": "key-a", "User-Agent": "curl/8.1"}),
        ("/items?api-version=3", {"User-Agent": "curl/8.1"}),
        ("/items", {"Authorization": "Basic dXNlcjpwYXNz", "User-Agent": "curl/8.1"}),
        ("/items", {"Accept": "application/vnd.acme.v4+json", "User-Agent": "curl/8.1"}),
        # the first request again: its detection is the first one's
        ("/v1/items", {"X-API-Key": "key-a", "User-Agent": "python-requests/2.32"}),
    ]
    for path, headers in requests:
        http.get(path, headers=headers).close()
    assert client.flush(10)
    events = sink.named("api_request")
    assert len(events) == len(requests)
    seen = [
        (
            event.distinct_id if not event.personless else None,
            event.properties["client_library"],
            event.properties["api_version"],
            event.properties["auth_method"],
        )
        for event in events
    ]
    key_a, key_b = seen[0][0], seen[1][0]
    assert key_a
    assert key_b
    assert key_a != key_b
    assert seen == [
        (key_a, "python-requests", "v1", "api_key"),
        (key_b, "python-requests", "v1", "api_key"),
        (key_a, "curl", "v1", "api_key"),
        (key_a, "curl", "v2", "api_key"),
        (None, "curl", "v3", "none"),
        (seen[5][0], "curl", None, "basic"),
        (None, "curl", "v4", "none"),
        (key_a, "python-requests", "v1", "api_key"),
    ]
    assert seen[5][0] not in (None, key_a, key_b)
    assert calls[0] == len(requests) - 1


def test_paths_share_a_detection_only_when_the_route_names_the_version(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sink = make_client(**ONE_BATCH)
    calls = _count_detections(client, monkeypatch)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        apiusage.annotate(route="/v1/items/{id}" if path.startswith("/v1/") else "/items/{id}")
        return _wsgi_app(environ, start_response)

    http = Client(apiusage.WSGIMiddleware(app, client=client))
    for path in ("/v1/items/1", "/v1/items/2", "/items/v7", "/items/v8"):
        http.get(path).close()
    assert client.flush(10)
    versions = [event.properties["api_version"] for event in sink.named("api_request")]
    # The versioned route's ids do not matter; an unversioned route's path is read.
    assert versions == ["v1", "v1", "v7", "v8"]
    assert calls[0] == 3


def test_a_detection_is_kept_from_one_batch_to_the_next(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one request (end_of_request, a quiet server) is not detected afresh; a
    request that reads differently still is, and its caller is its own."""
    from apiusage import pipeline

    client, sink = make_client()
    calls = _count_detections(client, monkeypatch)
    http = Client(apiusage.WSGIMiddleware(_wsgi_app, client=client))
    for key in ("key-a", "key-a", "key-b", "key-a"):
        http.get("/v1/items", headers={"X-API-Key": key}).close()
        assert client.flush(10)  # each request is a batch of its own
    callers = [event.distinct_id for event in sink.named("api_request")]
    assert callers[0] == callers[1] == callers[3] != callers[2]
    assert calls[0] == 2
    # The memory is bounded: once full it starts afresh.
    monkeypatch.setattr(pipeline, "_DETECTIONS_KEPT", 2)
    http.get("/v1/items", headers={"X-API-Key": "key-c"}).close()
    assert client.flush(10)
    assert len(client.pipeline._detected) == 1
    assert calls[0] == 3


async def test_asgi_requests_share_a_detection_whatever_headers_detection_ignores(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sink = make_client(**ONE_BATCH)
    calls = _count_detections(client, monkeypatch)
    transport = httpx.ASGITransport(app=apiusage.ASGIMiddleware(_asgi_app, client=client))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        for number in range(5):
            headers = {"X-API-Key": "key-a", "X-Request-Id": f"request-{number}"}
            await http.get("/v1/items", headers=headers)
        await http.get("/v1/items", headers={"X-API-Key": "key-b"})
    assert client.flush(10)
    events = sink.named("api_request")
    assert len(events) == 6
    assert len({event.distinct_id for event in events[:5]}) == 1
    assert events[5].distinct_id != events[0].distinct_id
    assert calls[0] == 2


async def test_header_pairs_given_as_lists_share_detections_too(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lists are allowed by ASGI, and what Mangum (AWS Lambda) passes."""
    client, sink = make_client(**ONE_BATCH)
    calls = _count_detections(client, monkeypatch)
    middleware = apiusage.ASGIMiddleware(_asgi_app, client=client)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    for key in (b"key-a", b"key-b", b"key-a"):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/items",
            "query_string": b"",
            "headers": [[b"x-api-key", key], [b"user-agent", b"curl/8.1"]],  # lists: allowed
        }
        await middleware(scope, receive, send)
    assert client.flush(10)
    first, second, third = sink.named("api_request")
    assert first.distinct_id == third.distinct_id != second.distinct_id
    assert first.properties["client_library"] == second.properties["client_library"] == "curl"
    assert calls[0] == 2


async def test_queued_asgi_records_keep_only_the_headers_the_worker_reads(
    make_client: MakeClient,
) -> None:
    """The server's header list and the pairs no one reads die with the request; what a
    queued record holds is a tuple (the garbage collector stops tracking it)."""

    def caller_from_tenant_header(view: Any) -> apiusage.Identity | None:
        tenant = view.header("x-tenant")  # a user resolver runs while the request is live
        return apiusage.Identity(distinct_id=f"tenant-{tenant}") if tenant else None

    client, sink = make_client(identify=caller_from_tenant_header, **ONE_BATCH)
    queued: list[Any] = []
    submit = client.delivery.submit

    def keep(item: Any) -> bool:
        queued.append(item)
        return submit(item)

    client.delivery.submit = keep  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=apiusage.ASGIMiddleware(_asgi_app, client=client))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        await http.get(
            "/v1/items",
            headers={"X-Tenant": "t1", "X-API-Key": "key-a", "X-Request-Id": "r-1"},
        )
    [record] = queued
    assert isinstance(record.raw_headers, tuple)
    assert {name for name, _ in record.raw_headers} == {
        b"x-api-key",
        b"user-agent",
        b"accept",
    }
    assert client.flush(10)
    [event] = sink.named("api_request")
    assert event.distinct_id == "tenant-t1"
    assert event.properties["auth_method"] == "api_key"
    assert event.properties["client_library"] == "python-httpx"
