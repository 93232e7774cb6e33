"""``deprecation_headers``: deprecated routes answer with ``Deprecation`` (RFC 9745) and
``Sunset`` (RFC 8594), in every framework with an adapter; other routes, and apps that
did not ask, are untouched."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

import apiusage
from apiusage import ConfigurationError, UsageClient
from apiusage.sinks.memory import MemorySink
from tests.adapters.drivers import IDENTITY_SECRET, load_example

pytestmark = pytest.mark.anyio

DEPRECATED_AT = 1_782_777_600  # 2026-06-30T00:00:00Z
SUNSET = "Sun, 31 Jan 2027 00:00:00 GMT"
OPTIONS: dict[str, Any] = {
    "identity_secret": IDENTITY_SECRET,
    "deprecation_headers": True,
    "deprecation_dates": {"GET /v1/old": "2026-06-30"},
    "sunset_dates": {"/v1/old": "2027-01-31"},
}


async def test_fastapi_routes_deprecated_by_the_framework_and_the_settings() -> None:
    from fastapi import FastAPI

    from fastapi_apiusage import ApiUsage

    app = FastAPI()

    @app.get("/v1/old")
    def old() -> dict[str, str]:
        return {}

    @app.get("/v1/flagged/{item_id}", deprecated=True)
    def flagged(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/v1/new")
    def new() -> dict[str, str]:
        return {}

    usage = ApiUsage(app, sink=MemorySink(), deprecated_routes=["GET /v1/old"], **OPTIONS)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        old_response = await http.get("/v1/old")  # configured: known from the start
        assert old_response.headers["deprecation"] == f"@{DEPRECATED_AT}"
        assert old_response.headers["sunset"] == SUNSET
        assert email.utils.parsedate_to_datetime(old_response.headers["sunset"]).year == 2027
        assert "deprecation" not in (await http.get("/v1/new")).headers
        assert usage.client.flush(10)  # the worker has listed the routes: FastAPI's flag
        flagged_response = await http.get("/v1/flagged/3")
        assert flagged_response.headers["deprecation"].startswith("@")
        assert "sunset" not in flagged_response.headers
        assert flagged_response.json() == {"id": 3}  # the response itself is untouched


def test_flask_routes_marked_deprecated() -> None:
    from flask import Flask

    from flask_apiusage import ApiUsage

    app = Flask(__name__)

    @app.get("/v1/old")
    @apiusage.deprecated
    def old() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_url_rule("/v1/new", "new", lambda: "new")
    ApiUsage(app, sink=MemorySink(), **OPTIONS)
    http = Client(app)
    assert "Deprecation" not in http.get("/v1/old", buffered=True).headers  # not known yet
    assert ApiUsage.client_for(app).flush(10)
    response = http.get("/v1/old", buffered=True)
    assert response.headers["Deprecation"] == f"@{DEPRECATED_AT}"
    assert response.headers["Sunset"] == SUNSET
    assert response.json == {"ok": "yes"}
    assert "Deprecation" not in http.get("/v1/new", buffered=True).headers


def test_django_routes_named_in_the_settings() -> None:
    load_example("django_app")
    from django.test import Client as DjangoClient
    from django.test import override_settings

    settings = {
        "IDENTITY_SECRET": IDENTITY_SECRET,
        "SINK": MemorySink(),
        "DEPRECATION_HEADERS": True,
        "DEPRECATED_ROUTES": ["/v1/items/{item_id}"],
        "SUNSET_DATES": {"/v1/items/<int:item_id>": "2027-01-31"},
    }
    with override_settings(APIUSAGE=settings):
        http = DjangoClient()
        response = http.get("/v1/items/1", HTTP_X_API_KEY="key-alice")
        assert response["Deprecation"].startswith("@")
        assert response["Sunset"] == SUNSET
        assert not http.get("/v2/items/1", HTTP_X_API_KEY="key-alice").has_header("Deprecation")


def test_off_by_default() -> None:
    from flask import Flask

    from flask_apiusage import ApiUsage

    app = Flask(__name__)
    app.add_url_rule("/v1/old", "old", lambda: "old")
    ApiUsage(app, sink=MemorySink(), identity_secret=IDENTITY_SECRET, deprecated_routes=["/v1/old"])
    assert "Deprecation" not in Client(app).get("/v1/old", buffered=True).headers


def test_a_date_that_is_not_one_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="sunset_dates"):
        UsageClient(sink=MemorySink(), identity_secret=IDENTITY_SECRET, sunset_dates={"/x": "soon"})
