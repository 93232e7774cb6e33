"""Building is total: every recorded request comes out as an event, whatever went wrong."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

import apiusage
from tests.conftest import MakeClient
from tests.support.apps import plain_wsgi_app


class _BrokenVersionDetector:
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
